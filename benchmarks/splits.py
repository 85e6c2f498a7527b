"""Write the benchmark protocol's split catalogs from the shared data (issue 20).

The reference split is ``../shared/data/README.md``'s: sort by GalaxyID, the last 500 of
the 5,000 are the validation split, the first 4,500 the training split; the development
split is the last 500 of the training split (ranks 4,001-4,500).  Designs and
hyperparameters are chosen on the development split (training on the first 4,000), the
final configuration is trained on all 4,500, and the validation split is scored once.

The files are built with the trainer's own rule (:func:`gzmorph.data.catalog.train_val_split`,
the last fraction by id), so training on ``train4500.csv`` with ``--val-fraction 0.1111111``
(1/9 of 4,500 = 500) validates on exactly ``dev500.csv``.

Usage::

    python benchmarks/splits.py --data ../shared/data/gz2-kaggle-5k-141px --out runs/splits

writes ``train4500.csv``, ``train4000.csv``, ``dev500.csv`` and ``val500.csv`` (id, the
labelled answer columns, absolute image ``path``) and prints their sizes and id ranges.
They are derived from the shared data: keep them out of the repository.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.data.catalog import open_catalog, train_val_split

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gz2-kaggle-5k-141px"
#: 1/9 of the 4,500 training galaxies: the development split when training on train4500.csv.
DEV_FRACTION = 1 / 9


def protocol_splits(catalog):
    """``{"train4500", "train4000", "dev500", "val500"}`` catalogs of the shared 5k catalog (any size: 10% and 1/9)."""
    train, val = train_val_split(catalog, 0.1)
    train4000, dev = train_val_split(train, DEV_FRACTION)
    return {"train4500": train, "train4000": train4000, "dev500": dev, "val500": val}


def to_frame(catalog) -> pd.DataFrame:
    """The catalog as a table: id, the answer columns that have a label, absolute image paths."""
    labelled = ~np.isnan(catalog.labels).all(axis=0)
    cols = {c: catalog.labels[:, j] for j, c in enumerate(catalog.tree.columns) if labelled[j]}
    paths = [str(Path(p).resolve()) for p in catalog.paths]
    return pd.DataFrame({catalog.id_column: catalog.ids, **cols, "path": paths})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared Kaggle-layout folder")
    p.add_argument("--out", type=Path, default=Path("runs/splits"))
    args = p.parse_args()
    splits = protocol_splits(open_catalog(args.data))
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name, cat in splits.items():
        to_frame(cat).to_csv(args.out / f"{name}.csv", index=False)
        summary[name] = {"n": len(cat), "first_id": int(cat.ids[0]), "last_id": int(cat.ids[-1])}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
