"""Calibration evidence: do the predicted numbers mean what they say?

Two different promises are checked per question, on the images the crowd reached:

* a **predicted fraction** estimates the crowd's split. Its reliability diagram ranks the
  images by one answer's predicted value, cuts them into equal-count bins and compares
  the mean predicted value with the mean crowd value of each bin (``fraction`` rows);
* the **probability of the most likely answer** (``Qn_p_correct`` when the predictions
  carry it, else the renormalised fraction of the model's top answer) claims how often
  the model's answer is the crowd's. Its diagram compares, per equal-count bin, that
  mean probability with the accuracy (``top`` rows).

The expected calibration error (ECE) is the count-weighted mean gap of the ``top``
diagram, with a bootstrap interval over images; the Brier score is the mean squared gap
between that probability and whether the answer was right. When the predictions carry
intervals (``Class1.1_lo``, ``Class1.1_hi``), their empirical coverage of the crowd
values is counted per answer (every labelled image, reached or not: the interval covers
the column value).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gzmorph.tree import Tree

__all__ = ["ece", "ece_interval", "reliability", "question_calibration", "interval_coverage", "extra_columns",
           "P_CORRECT", "LO", "HI", "LEVEL", "COLUMNS"]

#: Suffixes of the per-answer interval columns and the per-question probability column.
LO, HI, P_CORRECT = "_lo", "_hi", "_p_correct"
#: Column holding the central level of the intervals (the same on every row).
LEVEL = "interval_level"
COLUMNS = {
    "calibration": ["question", "source", "n_reached", "accuracy", "mean_probability", "ece", "ece_low", "ece_high",
                    "brier"],
    "reliability": ["question", "kind", "column", "bin", "n", "predicted", "observed"],
    "coverage": ["question", "column", "n", "level", "coverage", "mean_width"],
}
_BOOTSTRAP = 200
# The crowd value sits on an interval's edge in float32 vs float64 round-off.
_EDGE_TOL = 1e-6


def _equal_count_bins(values: np.ndarray, n_bins: int) -> list[np.ndarray]:
    """Row indices of ``n_bins`` equal-count bins of ``values`` ranked low to high."""
    order = np.argsort(values, kind="stable")
    return [idx for idx in np.array_split(order, min(n_bins, max(values.size, 1))) if idx.size]


def ece(probability: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> float:
    """Expected calibration error in equal-count bins: ``sum_b n_b / n |acc_b - p_b|``."""
    if probability.size == 0:
        return float("nan")
    gaps = [idx.size * abs(correct[idx].mean() - probability[idx].mean())
            for idx in _equal_count_bins(probability, n_bins)]
    return float(np.sum(gaps) / probability.size)


def ece_interval(probability: np.ndarray, correct: np.ndarray, n_bins: int = 10, level: float = 0.95,
                 n_boot: int = _BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`ece` (images resampled with replacement)."""
    n = probability.size
    if n < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))  # (n_boot, n) resampled rows
    values = [ece(probability[d], correct[d], n_bins) for d in draws]
    return float(np.quantile(values, (1 - level) / 2)), float(np.quantile(values, (1 + level) / 2))


def reliability(predicted: np.ndarray, observed: np.ndarray, n_bins: int) -> list[dict[str, Any]]:
    """Mean predicted and observed value per equal-count bin of ``predicted``."""
    return [dict(bin=b, n=int(idx.size), predicted=float(predicted[idx].mean()), observed=float(observed[idx].mean()))
            for b, idx in enumerate(_equal_count_bins(predicted, n_bins))]


def question_calibration(q, pred_q: np.ndarray, lab_q: np.ndarray, use: np.ndarray, p_correct: np.ndarray | None,
                         n_bins: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Calibration rows and reliability rows of one question on the images ``use``.

    ``pred_q`` and ``lab_q`` are ``(N, n answers)`` column values. The most likely answer
    is scored with its renormalised fraction (source ``top fraction``) and, when the
    predictions carry it, with ``Qn_p_correct`` (source ``p_correct``).
    """
    pred, lab = pred_q[use], lab_q[use]
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = pred / pred.sum(axis=1, keepdims=True)  # (n, answers) the model's split of the reached crowd
    cond = np.nan_to_num(cond, nan=1.0 / pred.shape[1])
    correct = (cond.argmax(axis=1) == lab.argmax(axis=1)).astype(np.float64)
    n = int(use.sum())
    sources = {"top fraction": cond.max(axis=1)}
    if p_correct is not None:
        sources["p_correct"] = p_correct[use].astype(np.float64)
    rows, rel = [], []
    for source, prob in sources.items():
        low, high = ece_interval(prob, correct, n_bins)
        rows.append(dict(question=q.name, source=source, n_reached=n,
                         accuracy=float(correct.mean()) if n else np.nan,
                         mean_probability=float(prob.mean()) if n else np.nan, ece=ece(prob, correct, n_bins),
                         ece_low=low, ece_high=high, brier=float(np.mean((prob - correct) ** 2)) if n else np.nan))
        rel += [dict(question=q.name, kind="top", column=source, **r) for r in reliability(prob, correct, n_bins)]
    for j, col in enumerate(q.columns):
        rel += [dict(question=q.name, kind="fraction", column=col, **r)
                for r in reliability(pred[:, j], lab[:, j], n_bins)]
    return rows, rel


def interval_coverage(tree: Tree, lab: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      level: float | None) -> list[dict[str, Any]]:
    """Per answer column: fraction of labelled crowd values inside ``[lo, hi]``.

    Columns whose interval is NaN everywhere (untrained answers) are left out.
    """
    rows = []
    for q, sl in zip(tree.questions, tree.slices):
        for j, col in zip(range(sl.start, sl.stop), q.columns):
            ok = np.isfinite(lab[:, j]) & np.isfinite(lo[:, j]) & np.isfinite(hi[:, j])
            if not ok.any():
                continue
            y = lab[ok, j]
            inside = (y >= lo[ok, j] - _EDGE_TOL) & (y <= hi[ok, j] + _EDGE_TOL)
            rows.append(dict(question=q.name, column=col, n=int(ok.sum()), level=level,
                             coverage=float(inside.mean()), mean_width=float(np.mean(hi[ok, j] - lo[ok, j]))))
    return rows


def extra_columns(table: pd.DataFrame | None, tree: Tree, rows: np.ndarray) -> dict[str, Any]:
    """The prediction table's ``_lo``/``_hi`` matrices and ``Qn_p_correct`` columns at ``rows``.

    Returns ``{"lo": (n, answers) or None, "hi": ..., "p_correct": {question: (n,)}}``.
    """
    out: dict[str, Any] = {"lo": None, "hi": None, "p_correct": {}, "level": None}
    if table is None:
        return out
    if LEVEL in table.columns and len(table):
        out["level"] = float(table[LEVEL].iloc[0])
    if any(c + LO in table.columns for c in tree.columns):
        for key, suffix in (("lo", LO), ("hi", HI)):
            m = np.full((len(rows), tree.n_answers), np.nan)
            for j, c in enumerate(tree.columns):
                if c + suffix in table.columns:
                    m[:, j] = pd.to_numeric(table[c + suffix], errors="coerce").to_numpy(np.float64)[rows]
            out[key] = m
    for q in tree.questions:
        name = q.name + P_CORRECT
        if name in table.columns:
            out["p_correct"][q.name] = pd.to_numeric(table[name], errors="coerce").to_numpy(np.float64)[rows]
    return out
