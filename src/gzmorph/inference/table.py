"""The rows of a prediction output: the prediction table, the error rows, triage thresholds.

File names, parts and the resume rule: :mod:`gzmorph.inference.parts`; the job that
computes the rows: :mod:`gzmorph.inference.job`.

Output columns (see CONTRIBUTING.md): the id column and the tree's answer columns in
tree order, clipped to [0, 1] (the Kaggle submission CSV holds only these); Parquet
adds per question ``Qn_answer`` (answer column of the most likely answer, null when
the question's answers are all zero), ``Qn_confidence`` (``1 - H/log n`` of the
renormalised answers, :func:`gzmorph.tree.agreement`), ``Qn_reach`` (the parent
answer's value, 1 for root questions) and ``Qn_needs_expert`` (the question is
reached, ``reach >= 0.5``, and its confidence is below the question's threshold), and
the row-level ``needs_expert`` (any ``Qn_needs_expert``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from gzmorph.errors import ConfigError
from gzmorph.inference.calibrator import Calibration
from gzmorph.inference.uncertainty import uncertainty_arrays, uncertainty_fields
from gzmorph.tree import Tree, agreement

__all__ = [
    "DEFAULT_THRESHOLD",
    "REACH_THRESHOLD",
    "ERROR_COLUMNS",
    "CSV_FLOAT",
    "load_thresholds",
    "output_schema",
    "prediction_table",
    "error_table",
    "id_arrow_type",
]

#: Confidence threshold used for every question that the triage file does not cover
#: (or when no file is given).  ``a = 0.5`` means the answer distribution keeps half
#: of its maximum entropy: a deliberately cautious flag until ``gzmorph evaluate``
#: has fitted per-question thresholds for a target accuracy on labelled data.
DEFAULT_THRESHOLD = 0.5
#: A question counts as reached (and so can need an expert) from this reach probability.
REACH_THRESHOLD = 0.5
#: Columns of the error side file after the id column.
ERROR_COLUMNS = ("path", "reason")
# Nine significant digits write every float32 exactly, so CSV and Parquet agree.
CSV_FLOAT = "%.9g"


def load_thresholds(spec: str | Path | Mapping[str, Any] | None, tree: Tree,
                    default: float = DEFAULT_THRESHOLD) -> tuple[dict[str, float], list[str]]:
    """Per-question confidence thresholds from a triage file written by ``gzmorph evaluate``.

    Parameters
    ----------
    spec : path, dict or None
        JSON file or dict ``{"tree": "gz2", "target_accuracy": 0.99, "thresholds":
        {"Q1": 0.42, ...}}``; ``None`` uses ``default`` for every question.
    tree : Tree
        The tree the predictions follow; the file's ``tree`` (when given) must match.
    default : float
        Threshold of the questions the file does not list (e.g. questions that had
        no labels when the thresholds were fitted).

    Returns
    -------
    thresholds : dict
        Question name -> threshold, for every question of ``tree``.  A threshold
        above 1 sends every reached image to an expert.
    defaulted : list of str
        Questions that got ``default``.
    """
    source = "default thresholds"
    if spec is None:
        given: dict[str, Any] = {}
    else:
        if isinstance(spec, Mapping):
            data, source = dict(spec), "triage thresholds"
        else:
            source = str(spec)
            try:
                data = json.loads(Path(spec).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ConfigError(f"{source}: cannot read triage thresholds: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
            raise ConfigError(f"{source}: expected a JSON object with a 'thresholds' object")
        if data.get("tree") not in (None, tree.name):
            raise ConfigError(f"{source}: thresholds are for tree {data['tree']!r}, "
                             f"the model predicts tree {tree.name!r}")
        given = data["thresholds"]
    names = [q.name for q in tree.questions]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ConfigError(f"{source}: questions {unknown} are not in tree {tree.name!r}")
    out: dict[str, float] = {}
    for name in names:
        value = given.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{source}: threshold of {name} must be a finite number, not {value!r}")
        out[name] = float(value)
    return out, [n for n in names if n not in given]


def output_schema(tree: Tree, id_column: str, id_type: pa.DataType, calibrated: bool = False) -> pa.Schema:
    """Arrow schema of the full prediction table (the Parquet output); ``calibrated`` adds
    the uncertainty columns (:mod:`gzmorph.inference.uncertainty`)."""
    fields = [pa.field(id_column, id_type)]
    fields += [pa.field(c, pa.float32()) for c in tree.columns]
    for q in tree.questions:
        fields += [pa.field(f"{q.name}_answer", pa.string()), pa.field(f"{q.name}_confidence", pa.float32()),
                   pa.field(f"{q.name}_reach", pa.float32()), pa.field(f"{q.name}_needs_expert", pa.bool_())]
    fields.append(pa.field("needs_expert", pa.bool_()))
    return pa.schema(fields + (uncertainty_fields(tree) if calibrated else []))


def id_arrow_type(ids: np.ndarray) -> pa.DataType:
    """int64 for integer ids (the Catalog convention), else string."""
    return pa.int64() if np.asarray(ids).dtype.kind in "iu" else pa.string()


def prediction_table(ids: np.ndarray, probs: np.ndarray, tree: Tree, thresholds: Mapping[str, float],
                     id_column: str, reach_threshold: float = REACH_THRESHOLD,
                     trained: np.ndarray | None = None, calibration: Calibration | None = None,
                     level: float | None = None) -> pa.Table:
    """The full prediction table of a block of rows.

    Parameters
    ----------
    ids : array, shape (N,)
    probs : array, shape (N, tree.n_answers)
        Answer probabilities in tree order; clipped to [0, 1] here.
    tree : Tree
    thresholds : mapping
        Confidence threshold per question name (see :func:`load_thresholds`).
    id_column : str
    reach_threshold : float
        Reach from which a question counts as answered by the volunteers.
    trained : array of bool, shape (tree.n_answers,), optional
        Answers the model was trained on; the others are NaN, and a question with
        an untrained answer gets no answer, NaN confidence and never needs an expert
        (no decision rests on numbers the model never learned).
    calibration : Calibration, optional
        Calibrate the fractions and add the uncertainty columns; a question then needs
        an expert when its ``Qn_p_correct`` (not its confidence) is below its threshold.
    level : float, optional
        Central level of the intervals (default: the calibration's).

    Returns
    -------
    pyarrow.Table
        Columns as described in the module docstring, schema :func:`output_schema`.
    """
    ids = np.asarray(ids)
    probs = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    if probs.shape != (len(ids), tree.n_answers):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(ids)} ids and "
                         f"{tree.n_answers} answers")
    if trained is not None:  # NaN propagates: no reach, confidence or decision from untrained answers
        probs = np.where(np.asarray(trained, dtype=bool)[None, :], probs, np.float32(np.nan))
    if calibration is not None:
        probs = np.clip(calibration.fractions(probs, tree), 0.0, 1.0).astype(np.float32)
    id_type = id_arrow_type(ids)
    schema = output_schema(tree, id_column, id_type, calibration is not None)
    id_values = ids.astype(np.int64) if id_type == pa.int64() else [str(v) for v in ids]
    arrays: list[Any] = [pa.array(id_values, type=id_type)]
    arrays += [pa.array(probs[:, j]) for j in range(tree.n_answers)]
    reach = tree.reach(probs)  # (N, n_questions)
    extra, calibrated_expert = [], {}
    if calibration is not None:
        level = calibration.level if level is None else level
        extra, calibrated_expert = uncertainty_arrays(probs.astype(np.float64), tree, calibration, level, thresholds,
                                                      reach, reach_threshold)
    any_expert = np.zeros(len(ids), dtype=bool)
    for k, (q, sl) in enumerate(zip(tree.questions, tree.slices)):
        p = probs[:, sl]  # (N, n answers of q)
        has_answers = (p.sum(axis=1) > 0) & ~np.isnan(p).any(axis=1)
        columns = np.asarray(q.columns, dtype=object)
        answer = np.where(has_answers, columns[p.argmax(axis=1)], None)
        confidence = agreement(np.nan_to_num(p)).astype(np.float32)
        confidence[np.isnan(p).any(axis=1)] = np.nan
        # NaN confidence (no answers) compares False: never flagged.
        expert = calibrated_expert.get(q.name, (reach[:, k] >= reach_threshold) & (confidence < thresholds[q.name]))
        any_expert |= expert
        arrays += [pa.array(answer.tolist(), type=pa.string()), pa.array(confidence),
                   pa.array(reach[:, k].astype(np.float32)), pa.array(expert)]
    arrays.append(pa.array(any_expert))
    return pa.Table.from_arrays(arrays + extra, schema=schema)


def error_table(ids: np.ndarray, paths: Sequence[Any], reasons: Sequence[Any], id_column: str,
                id_type: pa.DataType) -> pa.Table:
    """The error rows of a chunk: id (the catalog's id type), path, reason on one line."""
    ids = np.asarray(ids)
    values = ids.astype(np.int64) if id_type == pa.int64() else [str(v) for v in ids]
    one_line = [" ".join(str(r).split()) for r in reasons]  # one CSV line per error row
    return pa.table({id_column: pa.array(values, type=id_type),
                     "path": pa.array([None if p is None else str(p) for p in paths], pa.string()),
                     "reason": pa.array(one_line, pa.string())})
