"""A small review setup on mock galaxies: images, predictions that flag some of them.

For tests, the screenshot command and trying ``gzmorph review`` without a trained
model.  The "predictions" are the mock's crowd labels blurred towards uniform answers
(so that a share of the galaxies is doubtful and flagged); they come with the triage
columns of :func:`gzmorph.inference.table.prediction_table`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.inference.table import load_thresholds, prediction_table
from gzmorph.tree import GZ2, TreeConstraint

__all__ = ["write_sample"]


def write_sample(out: str | Path, n: int = 12, seed: int = 0, size: int = 141) -> tuple[Path, Path]:
    """Write mock galaxies and flagging predictions under ``out``.

    Returns
    -------
    (predictions, images) : tuple of Path
        ``out/predictions.parquet`` and the image folder ``out/mock/images_test_rev1``.
    """
    import torch

    from gzmorph.mock import generate

    out = Path(out)
    data = generate(out / "mock", n=0, n_test=n, seed=seed, workers=0, progress=False, size=size)
    labels = pd.read_csv(data / "test_solutions_rev1.csv")
    crowd = labels[GZ2.columns].to_numpy(np.float32)
    rng = np.random.default_rng(seed)
    # Mix the crowd's answers with noise, per galaxy, so that some galaxies are doubtful.
    mix = np.where(np.arange(len(crowd)) % 3 == 0, 0.0, 0.8)[:, None].astype(np.float32)
    raw = (1 - mix) * crowd + mix * rng.uniform(0, 1, size=crowd.shape).astype(np.float32)
    probs = TreeConstraint(GZ2)(torch.from_numpy(raw)).numpy()
    thresholds, _ = load_thresholds(None, GZ2)
    table = prediction_table(labels["GalaxyID"].to_numpy(), probs, GZ2, thresholds, "GalaxyID")
    path = out / "predictions.parquet"
    table.to_pandas().to_parquet(path, index=False)
    return path, data / "images_test_rev1"
