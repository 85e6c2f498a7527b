"""Paired bootstrap of the RMSE difference between two prediction sets on the same galaxies.

Two models scored on the same 500 galaxies share most of their sampling error: a galaxy
that is hard for one is usually hard for the other.  Resampling the galaxies (with
replacement) and recomputing *both* RMSEs on every resample keeps that pairing, so the
interval of ``RMSE_a - RMSE_b`` is much narrower than the two separate intervals
suggest, and says whether a difference is larger than the choice of galaxies explains
(issue 20: about +-0.0013 on the RMSE of one model over 500 galaxies).

Several training seeds per side (issue 22: three seeds of each preset on the same
galaxies) are compared by the mean of their RMSEs: every resample recomputes each seed's
RMSE on the same galaxies.  The seeds themselves are not resampled, so the interval is
the galaxies' sampling error of these seeds' mean; report the per-seed differences and
their spread beside it.

The RMSE is the masked one of the benchmarks (``RMSE17`` on the shared data): the root of
the mean squared error over every labelled entry, so a galaxy weighs by its number of
labelled answers (:func:`gzmorph.metrics.masked_sums` per galaxy).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gzmorph.errors import CatalogError
from gzmorph.evaluation.inputs import load_labels, load_predictions, match_ids
from gzmorph.metrics import masked_sums
from gzmorph.tree import GZ2, Tree

__all__ = ["PairedBootstrap", "paired_bootstrap", "compare_predictions"]

_CHUNK_CELLS = 4_000_000  # resample indices held at once (32 MB of int64)


@dataclass(frozen=True)
class PairedBootstrap:
    """The two RMSEs, their difference and percentile intervals over resampled galaxies.

    Attributes
    ----------
    rmse_a, rmse_b : float
        Masked RMSE of each prediction set on all the galaxies (the mean over its seeds
        when a side holds several).
    difference : float
        ``rmse_a - rmse_b`` (negative: ``a`` is better).
    interval : (float, float)
        Central ``level`` percentile interval of the difference over the resamples.
    interval_a, interval_b : (float, float)
        The same for each RMSE alone.
    p_value : float
        Two-sided: twice the smaller share of resamples on either side of 0 (at most 1).
    level : float
    n_galaxies, n_boot, seed : int
    n_seeds_a, n_seeds_b : int
        Prediction sets averaged on each side (1 for a single model).
    """

    rmse_a: float
    rmse_b: float
    difference: float
    interval: tuple[float, float]
    interval_a: tuple[float, float]
    interval_b: tuple[float, float]
    p_value: float
    level: float
    n_galaxies: int
    n_boot: int
    seed: int
    n_seeds_a: int = 1
    n_seeds_b: int = 1

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _per_galaxy(pred: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Summed squared error of every galaxy over its labelled entries, ``(N,)``."""
    mask = ~np.isnan(labels)
    bad = np.flatnonzero((mask & ~np.isfinite(pred)).any(axis=1))
    if len(bad):
        raise ValueError(f"predictions {name}: row {int(bad[0])} has no finite value where a label exists "
                         f"({len(bad)} such rows)")
    sse, _ = masked_sums(pred, labels, axis=1)
    return np.asarray(sse, dtype=np.float64)


def _stack(pred: np.ndarray, name: str) -> np.ndarray:
    """One prediction set ``(N, A)`` or several seeds' ``(S, N, A)`` as ``(S, N, A)`` float64."""
    x = np.asarray(pred, dtype=np.float64)
    if x.ndim == 2:
        x = x[None]  # (1, N, A)
    if x.ndim != 3 or not len(x):
        raise ValueError(f"pred_{name} must be an (N, A) array or a non-empty (S, N, A) stack, got {x.shape}")
    return x


def _seed_sse(stack: np.ndarray, labels: np.ndarray, name: str) -> np.ndarray:
    """Summed squared error of every seed and galaxy, ``(S, N)``."""
    return np.stack([_per_galaxy(p, labels, f"{name}[{k}]" if len(stack) > 1 else name)
                     for k, p in enumerate(stack)])


def _mean_rmse(sse: np.ndarray, total: np.ndarray | float) -> np.ndarray:
    """Mean over seeds (axis 0) of each seed's RMSE, the galaxies (last axis) summed and divided by ``total``."""
    return np.sqrt(sse.sum(axis=-1) / total).mean(axis=0)


def paired_bootstrap(pred_a: np.ndarray, pred_b: np.ndarray, labels: np.ndarray, n_boot: int = 10_000,
                     level: float = 0.95, seed: int = 0) -> PairedBootstrap:
    """Bootstrap the masked RMSE difference of two prediction sets on the same galaxies.

    Parameters
    ----------
    pred_a, pred_b : array, shape (N, A) or (S, N, A)
        Predictions for the same N galaxies in the same order; a stack of S sets (training
        seeds) is scored by the mean of its S RMSEs.  The two sides may hold different S.
    labels : array, shape (N, A)
        NaN where there is no label; galaxies without any label are left out.
    n_boot : int
        Resamples of the N galaxies (with replacement, the same resample for every set).
    level : float
        Coverage of the percentile intervals.
    seed : int
        Seed of the resamples (``numpy.random.default_rng``).

    Returns
    -------
    PairedBootstrap
    """
    a, b, y = _stack(pred_a, "a"), _stack(pred_b, "b"), np.asarray(labels, dtype=np.float64)
    if not (a.shape[1:] == b.shape[1:] == y.shape and y.ndim == 2):
        raise ValueError(f"pred_a, pred_b and labels must hold (N, A) arrays of one shape, got {a.shape}, "
                         f"{b.shape}, {y.shape}")
    if n_boot < 1 or not 0 < level < 1:
        raise ValueError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot}, {level}")
    counts = (~np.isnan(y)).sum(axis=1).astype(np.float64)
    keep = counts > 0
    sa, sb, counts = _seed_sse(a, y, "a")[:, keep], _seed_sse(b, y, "b")[:, keep], counts[keep]  # (S, N)
    n = len(counts)
    if n == 0:
        raise ValueError("no galaxy has a label: nothing to compare")
    rng = np.random.default_rng(seed)
    ra, rb = np.empty(n_boot), np.empty(n_boot)
    step = max(1, _CHUNK_CELLS // (n * max(len(a), len(b))))
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - start), n))  # (chunk, N) galaxies of each resample
        total = counts[idx].sum(axis=1)  # (chunk,)
        # sa[:, idx]: (S, chunk, N) -> each seed's RMSE (S, chunk) -> mean over seeds (chunk,)
        ra[start : start + len(idx)] = _mean_rmse(sa[:, idx], total)
        rb[start : start + len(idx)] = _mean_rmse(sb[:, idx], total)
    diff = ra - rb
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]

    def interval(x: np.ndarray) -> tuple[float, float]:
        lo, hi = np.percentile(x, q)
        return float(lo), float(hi)

    p = min(1.0, 2 * min(float(np.mean(diff <= 0)), float(np.mean(diff >= 0))))
    rmse_a, rmse_b = float(_mean_rmse(sa, counts.sum())), float(_mean_rmse(sb, counts.sum()))
    return PairedBootstrap(rmse_a=rmse_a, rmse_b=rmse_b, difference=rmse_a - rmse_b, interval=interval(diff),
                           interval_a=interval(ra), interval_b=interval(rb), p_value=p, level=level,
                           n_galaxies=n, n_boot=n_boot, seed=seed, n_seeds_a=len(a), n_seeds_b=len(b))


def compare_predictions(pred_a: Any, pred_b: Any, labels: Any, tree: Tree = GZ2, id_column: str = "GalaxyID",
                        **options: Any) -> PairedBootstrap:
    """:func:`paired_bootstrap` of two prediction files (or DataFrames) against a labels catalog.

    ``pred_a`` and ``pred_b`` are each one prediction file or DataFrame, or a list or tuple
    of them (one per training seed, compared by the mean of their RMSEs).  The galaxies are
    those of ``labels`` that the first file predicts; every other file must predict exactly
    the same ones (else :class:`~gzmorph.errors.CatalogError` naming the files and an id),
    so the comparison is always on the same galaxies.  ``options`` go to
    :func:`paired_bootstrap` (``n_boot``, ``level``, ``seed``).
    """
    label_keys, label_values, label_source = load_labels(labels, tree, id_column)
    sides = [list(p) if isinstance(p, (list, tuple)) else [p] for p in (pred_a, pred_b)]
    if not all(sides):
        raise ValueError("compare_predictions needs at least one prediction set on each side")
    matched = []
    for pred in sides[0] + sides[1]:
        keys, values, source = load_predictions(pred, tree, id_column)
        rows, label_rows, _, _ = match_ids(keys, label_keys)
        order = np.argsort(label_rows, kind="stable")  # labels' order, so every set lines up
        matched.append((source, label_rows[order], values[rows[order]]))
    src_0, rows_0, _ = matched[0]
    for src, rows, _ in matched[1:]:
        if not np.array_equal(rows_0, rows):
            only = np.setxor1d(rows_0, rows)
            raise CatalogError(f"{src_0} and {src} predict different galaxies of {label_source} "
                               f"({len(only)} in one only, e.g. id {label_keys[only[0]]}): compare on the same "
                               "galaxies")
    if not len(rows_0):
        raise CatalogError(f"{src_0}: none of its ids is in {label_source}")
    values = [v for _, _, v in matched]
    n_a = len(sides[0])
    return paired_bootstrap(np.stack(values[:n_a]), np.stack(values[n_a:]), label_values[rows_0], **options)
