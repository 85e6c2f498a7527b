"""What an evaluation computes: its settings and its numbers.

Its own module so that :mod:`gzmorph.evaluation.evaluate` (which computes an
:class:`Evaluation`) and :mod:`gzmorph.evaluation.report` (which writes one) both
depend on it, and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from gzmorph.config import Config
from gzmorph.tree import Tree

__all__ = ["EvaluationConfig", "Evaluation"]


@dataclass(frozen=True)
class EvaluationConfig(Config):
    """Settings of :func:`gzmorph.evaluation.evaluate.evaluate`.

    Parameters
    ----------
    target_accuracy : float
        Accuracy the model must keep on the images it answers alone (triage), in (0, 1].
    n_bins : int
        Number of equal-count bins of agreement / confidence.
    min_reach : float
        A question is scored on the images whose crowd reach (the sum of its answers)
        is at least this; the paper uses 0.5 ("at least half of the participants").
    """

    target_accuracy: float = 0.99
    n_bins: int = 10
    min_reach: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 < float(self.target_accuracy) <= 1.0:
            raise ValueError(f"target_accuracy must be in (0, 1], got {self.target_accuracy}")
        if int(self.n_bins) != self.n_bins or self.n_bins < 1:
            raise ValueError(f"n_bins must be a positive integer, got {self.n_bins}")
        if not 0.0 <= float(self.min_reach) <= 1.0:
            raise ValueError(f"min_reach must be in [0, 1], got {self.min_reach}")


@dataclass
class Evaluation:
    """All numbers of one evaluation (see :func:`gzmorph.evaluation.evaluate.evaluate` for their definitions).

    ``rmse`` is the Kaggle RMSE over the matched images and ``rmse_columns``. The tables
    (columns in ``gzmorph.evaluation.evaluate._COLUMNS``): ``per_question`` has one row per tree question (unscored
    ones NaN), ``precision_recall`` one per answer of a scored question (precision NaN
    where ``never_predicted``), ``bins`` the accuracy per bin of crowd ``agreement`` and
    model ``confidence``, ``triage`` one row per scored question and ``triage_curves``
    the accuracy of the images the model keeps at each confidence cut.
    ``missing_questions`` lack (complete) labels and are not scored.
    """

    tree: Tree
    config: EvaluationConfig
    id_column: str
    rmse: float
    rmse_columns: list[str]
    n_predictions: int
    n_labels: int
    n_matched: int
    only_in_predictions: np.ndarray
    only_in_labels: np.ndarray
    per_question: pd.DataFrame
    precision_recall: pd.DataFrame
    bins: pd.DataFrame
    triage: pd.DataFrame
    triage_curves: pd.DataFrame
    missing_questions: list[str]
    calibration: pd.DataFrame = field(default_factory=pd.DataFrame)  # per question and source: ECE, Brier
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)  # reliability diagram bins
    coverage_table: pd.DataFrame = field(default_factory=pd.DataFrame)  # interval coverage per answer
    rmse_before: float | None = None  # RMSE of the uncalibrated predictions (evaluate(before=...))
    sources: dict[str, str] = field(default_factory=dict)
    #: Prediction rows left out with ``drop_bad_rows`` (id column, ``reason``): counted, never silent.
    dropped_rows: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["id", "reason"]))

    @property
    def thresholds(self) -> dict[str, float]:
        """Confidence threshold per scored question (see ``gzmorph.evaluation.evaluate.triage_cut``)."""
        return {r.question: float(r.threshold) for r in self.triage.itertuples()}

    @property
    def coverage(self) -> dict[str, float]:
        """Fraction of reached images the model answers alone, per scored question."""
        return {r.question: float(r.coverage) for r in self.triage.itertuples()}

    @property
    def evaluated_questions(self) -> list[str]:
        return [q.name for q in self.tree.questions if q.name not in self.missing_questions]

    def thresholds_dict(self) -> dict[str, Any]:
        """Content of ``triage_thresholds.json`` (read by ``gzmorph predict``)."""
        return {"tree": self.tree.name, "target_accuracy": float(self.config.target_accuracy),
                "thresholds": self.thresholds, "coverage": self.coverage}

    def to_metrics(self) -> dict[str, Any]:
        """The summary numbers as plain JSON-able Python objects."""
        per_q = self.per_question.astype(object).where(self.per_question.notna(), None)
        return {
            "tree": self.tree.name,
            "config": self.config.to_dict(),
            "sources": dict(self.sources),
            "id_column": self.id_column,
            "n_predictions": self.n_predictions,
            "n_labels": self.n_labels,
            "n_matched": self.n_matched,
            "n_dropped_rows": int(len(self.dropped_rows)),
            "n_only_in_predictions": int(len(self.only_in_predictions)),
            "n_only_in_labels": int(len(self.only_in_labels)),
            "rmse": None if np.isnan(self.rmse) else float(self.rmse),
            "rmse_columns": list(self.rmse_columns),
            "evaluated_questions": self.evaluated_questions,
            "missing_questions": list(self.missing_questions),
            "per_question": per_q.to_dict(orient="records"),
            "rmse_before": self.rmse_before,
            "calibration": self.calibration.astype(object).where(self.calibration.notna(), None)
            .to_dict(orient="records"),
            "interval_coverage": self.coverage_table.astype(object).where(self.coverage_table.notna(), None)
            .to_dict(orient="records"),
            "triage": self.thresholds_dict(),
        }
