"""Anomaly scores of embedded galaxies: higher is stranger.

* ``"knn"``: the mean distance to the ``k`` nearest *other* galaxies in the
  (prepared) embedding space, found with the faiss index; a galaxy unlike any
  other sits far from all of them (the score used by Astronomaly-style tools).
* ``"iforest"``: scikit-learn's IsolationForest, negated ``score_samples`` (short
  isolation paths: anomalous).
* ``"none"``: NaN (no score).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gzmorph.errors import ConfigError

__all__ = ["anomaly_scores", "knn_scores", "ANOMALY_METHODS"]

ANOMALY_METHODS = ("knn", "iforest", "none")


def knn_scores(x: np.ndarray, k: int, index: Any, batch: int = 8192) -> np.ndarray:
    """Mean Euclidean distance of every row of ``x`` to its ``k`` nearest other rows of ``index``."""
    k = min(k, len(x) - 1)
    out = np.empty(len(x), np.float64)
    for start in range(0, len(x), batch):
        squared, found = index.search(x[start:start + batch], k + 1)
        own = found == np.arange(start, min(start + batch, len(x)))[:, None]  # (B, k+1): the row itself
        d = np.sqrt(np.maximum(squared, 0.0))
        # Drop the row itself (or, for exact duplicates found in its place, the farthest hit).
        keep = np.where(own.any(axis=1, keepdims=True), ~own, np.arange(k + 1) < k)
        out[start:start + batch] = np.where(keep, d, 0.0).sum(axis=1) / k
    return out


def anomaly_scores(x: np.ndarray, method: str = "knn", k: int = 10, *, index: Any = None,
                   seed: int = 0) -> np.ndarray:
    """The anomaly score of every row of ``x`` ``(N, F)``, by ``method``."""
    if method not in ANOMALY_METHODS:
        raise ConfigError(f"anomaly method must be one of {ANOMALY_METHODS}, got {method!r}")
    if method == "none":
        return np.full(len(x), np.nan)
    if method == "iforest":
        from sklearn.ensemble import IsolationForest

        return -IsolationForest(random_state=seed).fit(x).score_samples(x)
    if k < 1:
        raise ConfigError(f"anomaly_k must be at least 1, got {k}")
    return knn_scores(x, k, index)
