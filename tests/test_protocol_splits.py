"""The benchmark protocol's split catalogs (``benchmarks/splits.py``, issue 20) on a generated catalog."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.data.catalog import Catalog, train_val_split
from gzmorph.tree import GZ2

SPLITS = Path(__file__).resolve().parents[1] / "benchmarks" / "splits.py"


def _splits_module():
    spec = importlib.util.spec_from_file_location("benchmark_splits", SPLITS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_split_is_the_last_500_of_the_training_split_by_id(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(100_000, 105_000) * 3)  # 5,000 ids in no order
    labels = np.full((5000, GZ2.n_answers), np.nan, np.float32)
    labels[:, :3] = rng.dirichlet(np.ones(3), 5000)
    paths = np.array([str(tmp_path / f"{i}.jpg") for i in ids], dtype=object)
    splits = _splits_module().protocol_splits(Catalog(ids=ids, paths=paths, labels=labels))
    ranked = np.sort(ids)
    assert {k: len(v) for k, v in splits.items()} == {"train4500": 4500, "train4000": 4000, "dev500": 500,
                                                     "val500": 500}
    assert np.array_equal(splits["val500"].ids, ranked[4500:])
    assert np.array_equal(splits["dev500"].ids, ranked[4000:4500])  # ranks 4,001-4,500
    assert np.array_equal(splits["train4000"].ids, ranked[:4000])
    # The trainer holding out 1/9 of train4500 validates on exactly the development split.
    assert np.array_equal(train_val_split(splits["train4500"], 0.1111111)[1].ids, splits["dev500"].ids)
    table = _splits_module().to_frame(splits["dev500"])
    assert list(table.columns) == ["GalaxyID", "Class1.1", "Class1.2", "Class1.3", "path"]
    row = table.iloc[0]
    k = int(np.flatnonzero(ids == row["GalaxyID"])[0])
    assert np.allclose(row[["Class1.1", "Class1.2", "Class1.3"]].to_numpy(float), labels[k, :3])
    assert Path(row["path"]).is_absolute() and isinstance(table, pd.DataFrame)


def test_seed_summary_gives_mean_and_sample_sd_at_the_points_every_seed_reached():
    spec = importlib.util.spec_from_file_location("learning_curve", SPLITS.parent / "learning_curve.py")
    curve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(curve)
    rows = {s: [{"minutes": 5, "examples": 100 + s, "rmse17_none": v, "rmse17_rot": v - 0.001}]
            for s, v in ((0, 0.090), (1, 0.092), (2, 0.094))}
    rows[2].append({"minutes": 10, "examples": 200, "rmse17_none": 0.08, "rmse17_rot": 0.079})  # one seed only
    summary = curve.seed_summary(rows)
    assert [r["minutes"] for r in summary] == [5]
    assert summary[0]["rmse17_none"] == {"mean": 0.092, "sd": 0.002, "values": [0.090, 0.092, 0.094]}
    assert summary[0]["rmse17_rot"]["mean"] == 0.091 and summary[0]["examples_mean"] == 101.0
