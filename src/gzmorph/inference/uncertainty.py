"""The uncertainty columns of a calibrated prediction, and why a galaxy needs an expert.

With a calibration (:mod:`gzmorph.inference.calibrator`) a prediction table gets, next to
the calibrated answer fractions:

* ``Class1.1_lo``, ``Class1.1_hi`` per answer: the central interval (``interval_level``,
  default 80%) in which the crowd's fraction for this answer should fall, vote noise
  included; NaN where the answer is untrained;
* ``Q1_p_correct`` per question: the probability that the most likely answer
  (``Q1_answer``) is the crowd's most likely answer. Triage cuts on it;
* ``Q1_width`` per question: the width of the interval of its most likely answer;
* ``uncertain_questions``: the reached questions whose ``p_correct`` is below their
  threshold, most doubtful first (``"Q7,Q1"``; empty when none): the reasons behind
  ``needs_expert``, which keeps its meaning (some reached question is below its threshold).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from gzmorph.inference.calibrator import Calibration
from gzmorph.tree import Tree

__all__ = ["LEVEL_COLUMN", "UNCERTAIN_COLUMN", "uncertainty_fields", "uncertainty_arrays"]

LEVEL_COLUMN = "interval_level"
UNCERTAIN_COLUMN = "uncertain_questions"


def uncertainty_fields(tree: Tree) -> list[pa.Field]:
    """Arrow fields of the uncertainty columns, in table order."""
    fields = []
    for c in tree.columns:
        fields += [pa.field(f"{c}_lo", pa.float32()), pa.field(f"{c}_hi", pa.float32())]
    for q in tree.questions:
        fields += [pa.field(f"{q.name}_p_correct", pa.float32()), pa.field(f"{q.name}_width", pa.float32())]
    return fields + [pa.field(UNCERTAIN_COLUMN, pa.string()), pa.field(LEVEL_COLUMN, pa.float32())]


def uncertainty_arrays(calibrated: np.ndarray, tree: Tree, cal: Calibration, level: float,
                       thresholds: dict[str, float], reach: np.ndarray, reach_threshold: float
                       ) -> tuple[list[Any], dict[str, np.ndarray]]:
    """The uncertainty columns of a block of calibrated fractions ``(N, n_answers)``.

    Returns the arrays in :func:`uncertainty_fields` order and the per-question
    ``needs_expert`` flags (reached and ``p_correct`` below the threshold; NaN never flags).
    """
    n = len(calibrated)
    lo, hi = cal.intervals(calibrated, tree, level)
    p_correct = cal.probability_correct(calibrated, tree)
    arrays: list[Any] = []
    for j in range(tree.n_answers):
        arrays += [pa.array(lo[:, j].astype(np.float32)), pa.array(hi[:, j].astype(np.float32))]
    expert: dict[str, np.ndarray] = {}
    doubt = np.full((n, tree.n_questions), np.nan)  # how far below its threshold each flagged question is
    for k, (q, sl) in enumerate(zip(tree.questions, tree.slices)):
        part = calibrated[:, sl]
        top = np.nan_to_num(part, nan=-1.0).argmax(axis=1)
        width = (hi[:, sl] - lo[:, sl])[np.arange(n), top]
        width[np.isnan(part).any(axis=1)] = np.nan
        prob = p_correct[q.name]
        thr = thresholds.get(q.name, -np.inf)  # a question without a threshold is never flagged
        flag = expert[q.name] = (reach[:, k] >= reach_threshold) & (prob < thr)
        doubt[flag, k] = thr - prob[flag]
        arrays += [pa.array(prob.astype(np.float32)), pa.array(width.astype(np.float32))]
    names = np.array([q.name for q in tree.questions], dtype=object)
    order = np.argsort(-np.nan_to_num(doubt, nan=-np.inf), axis=1, kind="stable")
    uncertain = [",".join(names[o][np.isfinite(doubt[i, o])]) for i, o in enumerate(order)]
    arrays += [pa.array(uncertain, type=pa.string()), pa.array(np.full(n, level, dtype=np.float32))]
    return arrays, expert
