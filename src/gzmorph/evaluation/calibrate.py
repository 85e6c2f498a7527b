"""Fitting a calibration on a calibration split (never on the split that is reported).

:func:`fit_calibration` fits the three parts of a :class:`gzmorph.inference.calibrator.Calibration`
from a model's predictions of labelled galaxies carved from the training data:

* a temperature per question, minimising the crowd-weighted cross-entropy between the
  crowd's split of the question and the model's (a proper scoring rule, so the fractions
  become calibrated estimates of the crowd's split); a temperature that would raise the
  split's RMSE is dropped (1), so the RMSE on the calibration split never gets worse;
* the probability that the most likely answer is the crowd's: scikit-learn's isotonic
  regression of "right" on the calibrated top fraction (monotone: the answer ranking is
  kept), and the triage threshold on it that keeps the target accuracy;
* a beta-binomial concentration per answer for the intervals (vote noise with the
  split's typical number of votes), chosen by bisection so that the intervals cover
  the split's crowd values at their nominal rate.

:func:`calibrate` is the whole step behind ``gzmorph calibrate``: read, match ids, fit,
store ``calibration.json`` in the run directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from sklearn.isotonic import IsotonicRegression

from gzmorph.errors import CatalogError
from gzmorph.evaluation.evaluate import triage_cut
from gzmorph.evaluation.inputs import load_labels, load_predictions, match_ids, read_table
from gzmorph.inference.calibrator import Calibration, conditional, tempered, vote_interval
from gzmorph.tree import GZ2, Tree, get_tree

__all__ = ["fit_calibration", "calibrate", "MIN_GALAXIES", "MIN_REACHED"]

#: Fewer matched, labelled galaxies than this cannot be calibrated at all.
MIN_GALAXIES = 100
#: A question with fewer reached galaxies than this keeps temperature 1 (a recorded skip).
MIN_REACHED = 30
#: Votes per galaxy assumed for the vote-noise term when the split has no counts (GZ2: ~40-45).
DEFAULT_VOTES = 40
_KAPPA_RANGE = (0.3, 3000.0)
_BISECTIONS = 10
_REACH_TOL = 1e-6


def _fit_temperature(cond: np.ndarray, crowd: np.ndarray, weight: np.ndarray) -> float:
    """Temperature minimising the weighted cross-entropy of the crowd split against ``cond``."""
    def loss(log_t: float) -> float:
        c = np.clip(tempered(cond, float(np.exp(log_t))), 1e-12, 1.0)
        return float(-(weight[:, None] * crowd * np.log(c)).sum())

    return float(np.exp(minimize_scalar(loss, bounds=(-2.5, 2.5), method="bounded").x))


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    d = (a - b)[np.isfinite(a - b)]
    return float(np.sqrt(np.mean(d**2))) if d.size else float("nan")


def _temperatures(tree: Tree, pred: np.ndarray, lab: np.ndarray, min_reach: float) -> tuple[dict, dict, dict]:
    """Temperature per question (RMSE-guarded), skips and reached counts."""
    temps, skipped, reached = {}, {}, {}
    for q, sl in zip(tree.questions, tree.slices):
        crowd_reach = lab[:, sl].sum(axis=1)
        use = np.isfinite(lab[:, sl]).all(axis=1) & np.isfinite(pred[:, sl]).all(axis=1) & (crowd_reach > 0)
        reached[q.name] = int((use & (crowd_reach >= min_reach - _REACH_TOL)).sum())
        if reached[q.name] < MIN_REACHED:
            skipped[q.name] = f"{reached[q.name]} reached galaxies, at least {MIN_REACHED} needed"
            continue
        crowd = lab[use, sl] / crowd_reach[use, None]
        temps[q.name] = _fit_temperature(conditional(pred[use], sl), crowd, crowd_reach[use])
    # The RMSE guard, parents first: a temperature stays only if the split's RMSE improves.
    cal = Calibration(tree.name, dict(temps), {}, {}, 1)
    for name in list(temps):
        with_t = _rmse(cal.fractions(pred, tree), lab)
        cal.temperature[name] = 1.0
        if _rmse(cal.fractions(pred, tree), lab) > with_t:
            cal.temperature[name] = temps[name]
    return cal.temperature, skipped, reached


def _p_correct(tree: Tree, calibrated: np.ndarray, lab: np.ndarray, min_reach: float, target: float,
               skipped: dict) -> tuple[dict, dict]:
    """Isotonic knots and triage threshold per question."""
    knots, thresholds = {}, {}
    for q, sl in zip(tree.questions, tree.slices):
        if q.name in skipped:
            continue
        use = (np.isfinite(lab[:, sl]).all(axis=1) & np.isfinite(calibrated[:, sl]).all(axis=1)
               & (lab[:, sl].sum(axis=1) >= min_reach - _REACH_TOL))
        cond = conditional(calibrated[use], sl)
        top = cond.max(axis=1)
        right = (cond.argmax(axis=1) == lab[use, sl].argmax(axis=1)).astype(np.float64)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(top, right)
        knots[q.name] = [iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()]
        thresholds[q.name] = triage_cut(iso.predict(top), right, target)[0]["threshold"]
    return knots, thresholds


def _coverage(p: np.ndarray, y: np.ndarray, kappa: float, votes: int, level: float) -> float:
    lo, hi = vote_interval(p, kappa, votes, level)
    return float(np.mean((y >= lo - 1e-6) & (y <= hi + 1e-6)))


def _floors(tree: Tree, calibrated: np.ndarray, lab: np.ndarray, votes: int) -> dict[str, float]:
    """Per answer: the median crowd value where the model predicts under half a vote (if 30+ such)."""
    out = {}
    for j, col in enumerate(tree.columns):
        low = np.isfinite(lab[:, j]) & (calibrated[:, j] < 0.5 / votes)
        if low.sum() >= MIN_REACHED:
            out[col] = float(np.median(lab[low, j]))
    return out


def _concentrations(tree: Tree, calibrated: np.ndarray, lab: np.ndarray, votes: int,
                    level: float, floor: dict[str, float]) -> dict[str, float]:
    """Per answer: the concentration whose ``level`` intervals cover the crowd values at that rate.

    Coverage falls as the concentration grows (narrower intervals), so a bisection on its
    logarithm finds it; a column covered above the level even at the largest concentration
    (values always 0, say) gets that largest one.
    """
    out = {}
    for j, col in enumerate(tree.columns):
        ok = np.isfinite(lab[:, j]) & np.isfinite(calibrated[:, j])
        if ok.sum() < MIN_REACHED:
            continue
        p, y = np.maximum(calibrated[ok, j], floor.get(col, 0.0)), lab[ok, j]
        lo, hi = np.log(_KAPPA_RANGE[0]), np.log(_KAPPA_RANGE[1])
        best = (np.inf, hi)
        for _ in range(_BISECTIONS):
            mid = (lo + hi) / 2
            cover = _coverage(p, y, float(np.exp(mid)), votes, level)
            best = min(best, (abs(cover - level), mid))
            if cover >= level:
                lo = mid  # still covers: the intervals may narrow
            else:
                hi = mid
        # Coverage moves in steps (whole votes): keep the closest one seen.
        out[col] = float(np.exp(best[1]))
    return out


def fit_calibration(pred: np.ndarray, lab: np.ndarray, tree: Tree = GZ2, votes: np.ndarray | None = None,
                    level: float = 0.8, target_accuracy: float = 0.99, min_reach: float = 0.5,
                    assumed_votes: int | None = None, source: str = "calibration split") -> Calibration:
    """Fit a :class:`Calibration` on predictions ``pred`` of galaxies with crowd labels ``lab``.

    Parameters
    ----------
    pred, lab : ndarray, shape (N, n_answers)
        Uncalibrated predicted fractions and crowd fractions of the same galaxies (NaN masked).
    tree : Tree
    votes : ndarray, optional
        Vote counts of those galaxies (:mod:`gzmorph.data.votes`): the vote-noise term uses
        their median number of volunteers.
    level : float
        Central level of the intervals the concentrations are fitted for (the default
        level of ``predict``).
    target_accuracy : float
        Triage: the accuracy the galaxies the model answers alone must keep.
    min_reach : float
        A question is scored on the galaxies at least this fraction of the crowd reached.
    assumed_votes : int, optional
        Volunteers per galaxy when ``votes`` is None (default 40).
    source : str
        Named in errors and recorded.

    Raises
    ------
    CatalogError
        Fewer than :data:`MIN_GALAXIES` labelled galaxies.
    """
    n_labelled = int(np.isfinite(lab).any(axis=1).sum())
    if n_labelled < MIN_GALAXIES:
        raise CatalogError(f"{source}: calibration split too small: {n_labelled} labelled galaxies with "
                           f"predictions, at least {MIN_GALAXIES} needed (and {MIN_REACHED} per question to fit it)")
    temps, skipped, reached = _temperatures(tree, pred, lab, min_reach)
    cal = Calibration(tree.name, temps, {}, {}, 1, level=level, target_accuracy=target_accuracy, skipped=skipped)
    calibrated = cal.fractions(pred, tree)
    cal.p_correct, cal.thresholds = _p_correct(tree, calibrated, lab, min_reach, target_accuracy, skipped)
    if votes is not None and np.isfinite(votes[:, tree.slices[0]]).all(axis=1).any():
        totals = votes[:, tree.slices[0]].sum(axis=1)
        cal.votes = int(round(float(np.nanmedian(totals))))
    else:
        cal.votes = int(assumed_votes or DEFAULT_VOTES)
    cal.floor = _floors(tree, calibrated, lab, cal.votes)
    cal.concentration = _concentrations(tree, calibrated, lab, cal.votes, level, cal.floor)
    cal.fitted_on = {"source": source, "n_galaxies": n_labelled, "reached": reached, "min_reach": min_reach,
                     "votes_from": "counts" if votes is not None else "assumed"}
    return cal


def calibrate(model: str | Path, predictions: Any, labels: Any, tree: Tree | str | None = None,
              id_column: str = "GalaxyID", level: float = 0.8, target_accuracy: float = 0.99,
              assumed_votes: int | None = None, save: bool = True) -> Calibration:
    """Fit a calibration from uncalibrated predictions of a calibration split; store it in the run.

    ``predictions`` (file or DataFrame) must come from ``gzmorph predict --calibration off``
    with ``model``; ``labels`` is the split's catalog (with vote counts when it has them).
    Writes ``calibration.json`` into ``model`` (a run directory) when ``save``.
    """
    from gzmorph.data.catalog import Catalog, open_catalog
    from gzmorph.models.rundir import run_config

    tree = get_tree(tree if tree is not None else run_config(model).tree)
    table = predictions if isinstance(predictions, pd.DataFrame) else read_table(predictions, id_column)
    if any(c.endswith("_p_correct") for c in table.columns):
        raise CatalogError(f"{predictions if not isinstance(predictions, pd.DataFrame) else 'predictions'}: "
                           "already calibrated (Qn_p_correct columns); fit on the output of "
                           "`gzmorph predict --calibration off`")
    pred_keys, pred, pred_src = load_predictions(predictions, tree, id_column)
    catalog = labels if isinstance(labels, Catalog) else open_catalog(labels, tree=tree, id_column=id_column,
                                                                      path_column=None, require_images=False)
    label_keys, lab, lab_src = load_labels(catalog, tree, id_column)
    pred_rows, label_rows, _, _ = match_ids(pred_keys, label_keys)
    votes = None if catalog.votes is None else catalog.votes[label_rows].astype(np.float64)
    cal = fit_calibration(pred[pred_rows], lab[label_rows], tree, votes, level, target_accuracy,
                          assumed_votes=assumed_votes, source=f"{pred_src} x {lab_src}")
    if save:
        cal.save(model)
    return cal
