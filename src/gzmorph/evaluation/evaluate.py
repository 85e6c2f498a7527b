"""Evaluation: how good are the predictions, and where can the model be trusted?

:func:`evaluate` joins a prediction file with a labelled catalog on the galaxy ids and
computes, over the answer columns the labels have:

* the Kaggle RMSE (square root of the mean squared error over all images and answer
  columns), overall, per question and per answer;
* per question, the classification accuracy (most likely answer, crowd vs model) on the
  images that at least half of the volunteers reached, and that accuracy in equal bins of
  crowd agreement and of model confidence (the paper's Figure 9);
* precision and recall of every answer (the paper's Table 4);
* triage: the confidence threshold above which the model answers a question alone while
  keeping a target accuracy, and the fraction of images it covers.

Agreement and confidence are both ``a = 1 - H / log n`` of the renormalised answers
(:func:`gzmorph.tree.agreement`), of the crowd's and of the model's answers respectively.
The numbers live in an :class:`~gzmorph.evaluation.results.Evaluation`; :func:`gzmorph.evaluation.report.write_outputs`
saves them as JSON/CSV next to the triage thresholds file that ``gzmorph predict
--triage-thresholds`` reads and the HTML report.  Reading and joining the inputs is
:mod:`gzmorph.evaluation.inputs`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError
from gzmorph.evaluation import calibration as calib
from gzmorph.evaluation.inputs import (bad_prediction_rows, load_labels, load_predictions, match_ids, predicted_columns,
                                       read_table)
from gzmorph.evaluation.results import Evaluation, EvaluationConfig
from gzmorph.metrics import masked_sums, rmse_from_sums
from gzmorph.tree import GZ2, Tree, agreement, get_tree

__all__ = ["EvaluationConfig", "Evaluation", "evaluate", "triage_cut", "UNREACHABLE_THRESHOLD"]

#: Threshold of a question where no confidence level reaches the target accuracy. It is
#: above every possible confidence (a <= 1), so every reached image goes to an expert.
UNREACHABLE_THRESHOLD = 1.01

# Float32 labels of a question reached by exactly half of the volunteers can sum to just
# below 0.5; they must still count as reached.
_REACH_TOL = 1e-6
_CURVE_POINTS = 501
_COLUMNS = {
    "per_question": ["question", "text", "n_answers", "labelled", "rmse", "n_images", "n_reached", "accuracy",
                     "chance", "mean_agreement", "mean_confidence", "threshold", "coverage"],
    "precision_recall": ["question", "answer", "column", "rmse", "n_examples", "n_predicted", "n_correct",
                         "precision", "recall", "never_predicted"],
    "bins": ["question", "ranking", "bin", "n", "low", "high", "mean", "accuracy"],
    "triage": ["question", "n_reached", "target_accuracy", "threshold", "coverage", "to_experts", "accuracy_kept",
               "reached_target"],
    "triage_curves": ["question", "threshold", "fraction_to_experts", "accuracy"],
    **calib.COLUMNS,
}


# --------------------------------------------------------------------------- metrics
def _rmse(sse: np.ndarray, count: np.ndarray) -> float:
    """RMSE of a group of answer columns from their summed squared errors and counts."""
    return rmse_from_sums(np.sum(sse), np.sum(count))


def _bins(values: np.ndarray, correct: np.ndarray, n_bins: int, question: str, ranking: str) -> list[dict]:
    """Accuracy in ``n_bins`` equal-count bins of ``values`` (ranked low to high)."""
    rows = []
    order = np.argsort(values, kind="stable")
    for b, idx in enumerate(np.array_split(order, n_bins)):
        if idx.size == 0:  # fewer images than bins
            continue
        v = values[idx]
        rows.append(dict(question=question, ranking=ranking, bin=b, n=int(idx.size), low=float(v.min()),
                         high=float(v.max()), mean=float(v.mean()), accuracy=float(correct[idx].mean())))
    return rows


def triage_cut(confidence: np.ndarray, correct: np.ndarray, target: float) -> tuple[dict, pd.DataFrame]:
    """Lowest confidence threshold whose kept images (confidence >= threshold) reach ``target``.

    Only cuts between distinct confidences are considered (ties stay together). The
    threshold lies halfway between the lowest kept and the highest rejected confidence,
    so a confidence recomputed with float32 noise falls on the same side; it is 0 when the
    model keeps everything and :data:`UNREACHABLE_THRESHOLD` when no cut reaches the target.
    """
    n = confidence.size
    if n == 0:
        curve = pd.DataFrame(columns=["threshold", "fraction_to_experts", "accuracy"], dtype=float)
        return dict(threshold=UNREACHABLE_THRESHOLD, coverage=0.0, accuracy_kept=float("nan")), curve
    order = np.argsort(-confidence, kind="stable")
    conf, ok = confidence[order], correct[order]
    acc = np.cumsum(ok) / np.arange(1, n + 1)  # accuracy of the k most confident images
    cuts = np.flatnonzero(np.r_[conf[:-1] > conf[1:], True])  # last index of each tie group
    below = np.r_[conf[1:], 0.0]
    thresholds = (conf[cuts] + below[cuts]) / 2
    thresholds[-1] = 0.0
    good = np.flatnonzero(acc[cuts] >= target - 1e-12)  # tolerance: 99/100 must pass a 0.99 target
    # The curve keeps about _CURVE_POINTS cuts (and the chosen one): enough to draw, small on disk.
    keep = np.unique(np.r_[np.searchsorted(cuts, np.linspace(0, n - 1, _CURVE_POINTS)), good[-1:]])
    curve = pd.DataFrame({"threshold": thresholds[keep], "fraction_to_experts": 1.0 - (cuts[keep] + 1) / n,
                          "accuracy": acc[cuts[keep]]})
    if good.size == 0:
        return dict(threshold=UNREACHABLE_THRESHOLD, coverage=0.0, accuracy_kept=float("nan")), curve
    k = good[-1]
    return dict(threshold=float(thresholds[k]), coverage=float((cuts[k] + 1) / n),
                accuracy_kept=float(acc[cuts[k]])), curve


def _precision_recall(q, crowd: np.ndarray, model: np.ndarray, sse: np.ndarray, count: np.ndarray) -> list[dict]:
    """Per answer: RMSE (all matched images) and precision/recall (reached images)."""
    rows = []
    for j, (answer, col) in enumerate(zip(q.answers, q.columns)):
        n_ex, n_pred = int((crowd == j).sum()), int((model == j).sum())
        n_ok = int(((crowd == j) & (model == j)).sum())
        rows.append(dict(question=q.name, answer=answer, column=col, rmse=_rmse(sse[j], count[j]),
                         n_examples=n_ex, n_predicted=n_pred, n_correct=n_ok,
                         precision=n_ok / n_pred if n_pred else float("nan"),
                         recall=n_ok / n_ex if n_ex else float("nan"), never_predicted=n_pred == 0))
    return rows


def _score_question(q, pred_q: np.ndarray, lab_q: np.ndarray, sse: np.ndarray, count: np.ndarray,
                    config: EvaluationConfig, p_correct: np.ndarray | None = None) -> dict:
    """Accuracy, bins, precision/recall, triage and calibration of one question ``(N, n answers)``."""
    reached = lab_q.sum(axis=1) >= config.min_reach - _REACH_TOL  # the crowd reach, = parent value
    use = np.isfinite(lab_q).all(axis=1) & np.isfinite(pred_q).all(axis=1) & reached
    n = int(use.sum())
    crowd, model = lab_q[use].argmax(axis=1), pred_q[use].argmax(axis=1)
    correct = crowd == model
    agree = agreement(lab_q[use]) if n else np.empty(0)
    # A question the model gives zero probability has no distribution: least confident.
    conf = np.nan_to_num(agreement(pred_q[use]), nan=0.0) if n else np.empty(0)

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if n else float("nan")

    triage, curve = triage_cut(conf, correct, config.target_accuracy)
    triage = dict(question=q.name, n_reached=n, target_accuracy=config.target_accuracy, **triage,
                  to_experts=1.0 - triage["coverage"], reached_target=triage["threshold"] <= 1.0)
    curve.insert(0, "question", q.name)
    calibration, reliability = calib.question_calibration(q, pred_q, lab_q, use, p_correct, config.n_bins)
    return dict(calibration=calibration, reliability=reliability,
        row=dict(n_reached=n, accuracy=mean(correct), chance=1.0 / len(q.columns), mean_agreement=mean(agree),
                 mean_confidence=mean(conf), threshold=triage["threshold"], coverage=triage["coverage"]),
        bins=(_bins(agree, correct, config.n_bins, q.name, "agreement")
              + _bins(conf, correct, config.n_bins, q.name, "confidence")),
        pr=_precision_recall(q, crowd, model, sse, count), triage=triage, curve=curve)


def _score(tree: Tree, pred: np.ndarray, lab: np.ndarray, labelled_col: np.ndarray,
           config: EvaluationConfig, extra: dict[str, Any]) -> dict[str, Any]:
    """All per-question tables of the matched images (``extra``: :func:`calib.extra_columns`)."""
    sse, count = masked_sums(pred, lab, axis=0)  # (n_answers,) each
    rows, bins, pr, triage, curves, missing, cal, rel = [], [], [], [], [], [], [], []
    for q, sl in zip(tree.questions, tree.slices):
        row = dict(question=q.name, text=q.text, n_answers=len(q.columns), labelled=bool(labelled_col[sl].all()),
                   rmse=_rmse(sse[sl], count[sl]), n_images=int(np.isfinite(lab[:, sl]).all(axis=1).sum()))
        if not row["labelled"]:
            missing.append(q.name)
            rows.append(row)
            continue
        scored = _score_question(q, pred[:, sl], lab[:, sl], sse[sl], count[sl], config,
                                 extra["p_correct"].get(q.name))
        rows.append({**row, **scored["row"]})
        cal += scored["calibration"]
        rel += scored["reliability"]
        bins += scored["bins"]
        pr += scored["pr"]
        triage.append(scored["triage"])
        curves.append(scored["curve"])
    per_question = pd.DataFrame(rows).reindex(columns=_COLUMNS["per_question"])
    per_question["n_reached"] = per_question["n_reached"].astype("Int64")  # NaN for unscored questions
    coverage = ([] if extra["lo"] is None else
                calib.interval_coverage(tree, np.where(labelled_col, lab, np.nan), extra["lo"], extra["hi"],
                                        extra.get("level")))
    return dict(rmse=_rmse(sse, count), per_question=per_question, missing_questions=missing,
                calibration=pd.DataFrame(cal, columns=_COLUMNS["calibration"]),
                reliability=pd.DataFrame(rel, columns=_COLUMNS["reliability"]),
                coverage_table=pd.DataFrame(coverage, columns=_COLUMNS["coverage"]),
                precision_recall=pd.DataFrame(pr, columns=_COLUMNS["precision_recall"]),
                bins=pd.DataFrame(bins, columns=_COLUMNS["bins"]),
                triage=pd.DataFrame(triage, columns=_COLUMNS["triage"]),
                triage_curves=(pd.concat(curves, ignore_index=True) if curves
                               else pd.DataFrame(columns=_COLUMNS["triage_curves"])))


def _add_before(ev: Evaluation, before: Any, label_keys: np.ndarray, lab_all: np.ndarray,
                labelled_col: np.ndarray) -> None:
    """Calibration rows (source ``uncalibrated``) and RMSE of uncalibrated predictions of the same galaxies."""
    keys, values, src = load_predictions(before, ev.tree, ev.id_column)
    rows, label_rows, _, _ = match_ids(keys, label_keys)
    pred, lab = values[rows], np.where(labelled_col, lab_all[label_rows], np.nan)
    cal, rel = [], []
    for q, sl in zip(ev.tree.questions, ev.tree.slices):
        if q.name not in set(ev.triage["question"]):
            continue
        use = (np.isfinite(lab[:, sl]).all(axis=1) & np.isfinite(pred[:, sl]).all(axis=1)
               & (lab[:, sl].sum(axis=1) >= ev.config.min_reach - 1e-6))
        c, r = calib.question_calibration(q, pred[:, sl], lab[:, sl], use, None, ev.config.n_bins)
        cal += [{**row, "source": "uncalibrated"} for row in c]
        rel += [{**row, "column": "uncalibrated"} for row in r if row["kind"] == "top"]
    ev.calibration = pd.concat([ev.calibration, pd.DataFrame(cal, columns=_COLUMNS["calibration"])], ignore_index=True)
    ev.reliability = pd.concat([ev.reliability, pd.DataFrame(rel, columns=_COLUMNS["reliability"])], ignore_index=True)
    sse, count = masked_sums(pred, lab, axis=0)
    ev.sources["before"] = src
    ev.rmse_before = _rmse(sse, count)


def evaluate(
    predictions: pd.DataFrame | str | Path,
    labels: Any,
    out: str | Path | None = None,
    tree: Tree | str = GZ2,
    id_column: str = "GalaxyID",
    target_accuracy: float = 0.99,
    n_bins: int = 10,
    min_reach: float = 0.5,
    title: str | None = None,
    drop_bad_rows: bool = False,
    before: pd.DataFrame | str | Path | None = None,
) -> Evaluation:
    """Compare predictions with crowd labels; optionally write the files and HTML report.

    Parameters
    ----------
    predictions : DataFrame or path
        Id column + the tree's answer columns (CSV or Parquet; extra columns ignored).
    labels : Catalog, DataFrame or path
        A :class:`gzmorph.data.catalog.Catalog`, anything :func:`gzmorph.data.catalog.open_catalog` reads,
        or a DataFrame with ``id_column`` and any subset of the answer columns.
    out : path, optional
        Folder for ``metrics.json``, the CSV tables, ``triage_thresholds.json``,
        ``unmatched_ids.csv`` and ``report.html``.
    tree : Tree or str
    id_column : str
        Id column of the prediction table (and of a labels DataFrame).
    target_accuracy, n_bins, min_reach
        See :class:`EvaluationConfig`.
    title : str, optional
        Title of the HTML report.
    drop_bad_rows : bool
        Leave out prediction rows that are not probabilities (an empty or non-numeric
        cell in a predicted column, a value outside [0, 1]) instead of refusing the
        file; they are counted (``n_dropped_rows``) and listed in ``dropped_rows.csv``.
    before : DataFrame or path, optional
        Uncalibrated predictions of the same galaxies (``gzmorph predict --calibration
        off``): the calibration table and diagrams show them too (source ``uncalibrated``),
        and ``rmse_before`` their RMSE.

    Returns
    -------
    Evaluation

    Notes
    -----
    Images are joined on their ids; ids on one side only are kept in the result (and
    ``unmatched_ids.csv``), never dropped silently. Only answer columns with at least one
    label are scored; a question is scored when all its columns are labelled. Ties in the
    crowd's answers go to the first answer (tree order).
    """
    tree = get_tree(tree)
    config = EvaluationConfig(target_accuracy, n_bins, min_reach)
    pred_keys, pred_all, pred_src = load_predictions(predictions, tree, id_column, check=not drop_bad_rows)
    dropped = pd.DataFrame({id_column: pred_keys[:0], "reason": []})
    if drop_bad_rows:
        reasons = bad_prediction_rows(pred_all)
        bad = reasons != ""
        dropped = pd.DataFrame({id_column: pred_keys[bad], "reason": reasons[bad]})
        if bad.all():
            raise CatalogError(f"{pred_src}: every prediction row is bad (e.g. {reasons[0]}); nothing to evaluate")
        if bad.any():
            warnings.warn(f"{pred_src}: {int(bad.sum())} prediction rows left out (--drop-bad-rows): "
                          f"e.g. {pred_keys[bad][0]} ({reasons[bad][0]})", stacklevel=2)
        pred_keys, pred_all = pred_keys[~bad], pred_all[~bad]
    label_keys, lab_all, lab_src = load_labels(labels, tree, id_column)
    labelled_col = np.isfinite(lab_all).any(axis=0)
    present = set(predicted_columns(predictions, tree))
    lacking = [c for j, c in enumerate(tree.columns) if labelled_col[j] and np.isnan(pred_all[:, j]).all()]
    absent = [c for c in lacking if c not in present]
    if absent or (lacking and len(lacking) == int(labelled_col.sum())):
        raise CatalogError(f"{pred_src}: no predictions for the labelled answer columns {absent or lacking}")
    if lacking:
        # Empty columns of a Parquet prediction: answers the model was never trained on.
        warnings.warn(f"{pred_src}: no predictions (untrained answers?) for {', '.join(lacking)}: not scored",
                      stacklevel=2)
        labelled_col &= ~np.isnan(pred_all).all(axis=0)
    pred_rows, label_rows, only_in_predictions, only_in_labels = match_ids(pred_keys, label_keys)
    if pred_rows.size == 0:
        raise CatalogError(f"no id in common between {pred_src} (e.g. {pred_keys[:3].tolist()}) and "
                         f"{lab_src} (e.g. {label_keys[:3].tolist()})")
    pred, lab = pred_all[pred_rows], lab_all[label_rows]
    table = predictions if isinstance(predictions, pd.DataFrame) else read_table(predictions, id_column)
    extra = calib.extra_columns(table, tree, pred_rows)
    evaluation = Evaluation(
        tree=tree, config=config, id_column=id_column,
        rmse_columns=[c for j, c in enumerate(tree.columns) if labelled_col[j]],
        n_predictions=len(pred_keys), n_labels=len(label_keys), n_matched=int(pred_rows.size),
        only_in_predictions=only_in_predictions, only_in_labels=only_in_labels,
        sources={"predictions": pred_src, "labels": lab_src}, dropped_rows=dropped,
        **_score(tree, pred, lab, labelled_col, config, extra))
    if before is not None:
        _add_before(evaluation, before, label_keys, lab_all, labelled_col)
    if out is not None:
        from gzmorph.evaluation.report import write_outputs  # matplotlib is only needed for the report

        write_outputs(evaluation, out, title=title)
    return evaluation
