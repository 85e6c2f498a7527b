"""Is model A better than model B on these galaxies?  A paired bootstrap of the RMSE difference.

Both prediction files (CSV or Parquet, as written by ``gzmorph predict``) must cover the
same labelled galaxies; the galaxies are resampled with replacement and both RMSEs are
recomputed on every resample (:func:`gzmorph.evaluation.bootstrap.paired_bootstrap`).

Usage::

    gzmorph predict --model runs/p4m-seed0 --catalog runs/splits/dev500.csv --out a.parquet
    gzmorph predict --model runs/p4m-72-seed0 --catalog runs/splits/dev500.csv --out b.parquet
    python benchmarks/compare_runs.py a.parquet b.parquet --labels runs/splits/dev500.csv

Several training seeds per side are compared by the mean of their RMSEs, each seed
rescored on every resample of the galaxies (issue 22)::

    python benchmarks/compare_runs.py robust/seed0.parquet robust/seed1.parquet robust/seed2.parquet \
        --vs p4m/seed0.parquet p4m/seed1.parquet p4m/seed2.parquet --labels runs/val500.csv

Prints one JSON line: both RMSEs with their intervals, the difference ``a - b`` with its
interval and a two-sided bootstrap p-value.  Compare designs on the development split;
the validation split is scored once, for the final choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gzmorph.errors import CatalogError
from gzmorph.evaluation.bootstrap import compare_predictions


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", type=Path, nargs="+",
                   help="A B: the predictions of model A and model B (the same galaxies); with --vs: A's seeds")
    p.add_argument("--vs", type=Path, nargs="+", help="B's seeds: their mean RMSE is compared with A's")
    p.add_argument("--labels", required=True, help="labels: a catalog, a Kaggle folder or a CSV/Parquet table")
    p.add_argument("--id-column", default="GalaxyID")
    p.add_argument("--n-boot", type=int, default=10_000)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.vs is None:
        if len(args.files) != 2:
            p.error(f"give two prediction files A B, or A's seeds and --vs B's seeds (got {len(args.files)} files)")
        a, b = args.files
        names = {"a": str(a), "b": str(b)}
    else:
        a, b = args.files, args.vs
        names = {"a": [str(f) for f in a], "b": [str(f) for f in b]}
    try:
        res = compare_predictions(a, b, args.labels, id_column=args.id_column, n_boot=args.n_boot,
                                  level=args.level, seed=args.seed)
    except (CatalogError, ValueError) as exc:  # a missing file, other galaxies, no labels: one line
        p.error(str(exc))
    print(json.dumps({**names, **res.to_dict()}))


if __name__ == "__main__":
    main()
