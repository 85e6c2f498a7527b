"""Which galaxies go to the reviewers, in which order.

The queue holds the galaxies that the model flagged (``needs_expert``), most doubtful
first.  **Priority** of a galaxy: the largest, over its flagged questions, of
``reach * (1 - confidence)``; the doubt about a question weighted by the share of
volunteers who would be asked it.  A galaxy whose root question (reach 1) is a coin
toss comes first; a doubtful question deep in the tree that few would reach comes
late.  Ties keep the prediction file's order, so the order is reproducible.

Predictions without the triage columns (a Kaggle-style CSV) get them from
:func:`gzmorph.inference.table.prediction_table` with its default thresholds.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError, ConfigError
from gzmorph.inference.parts import manifest_path
from gzmorph.inference.table import load_thresholds, prediction_table
from gzmorph.tree import Tree

__all__ = ["load_predictions", "build_queue", "model_version"]


def load_predictions(path: str | Path, tree: Tree, id_column: str = "GalaxyID") -> pd.DataFrame:
    """Read a prediction file (CSV or Parquet) and make sure it has the triage columns.

    Returns the table indexed by galaxy id as text (the database's key).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such prediction file")
    frame = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") or path.is_dir() else pd.read_csv(path)
    if id_column not in frame:
        raise CatalogError(f"{path}: no id column {id_column!r} (columns: {list(frame.columns)[:6]}...)")
    missing = [c for c in tree.columns if c not in frame]
    if missing:
        raise CatalogError(f"{path}: predictions lack answer columns of tree {tree.name!r}: {missing[:5]}")
    if "needs_expert" not in frame:
        thresholds, _ = load_thresholds(None, tree)
        probs = frame[tree.columns].to_numpy(np.float32)
        frame = prediction_table(frame[id_column].to_numpy(), probs, tree, thresholds, id_column).to_pandas()
    frame.index = pd.Index(frame[id_column].astype(str), name="galaxy")
    if frame.index.duplicated().any():
        raise CatalogError(f"{path}: duplicate ids, e.g. {frame.index[frame.index.duplicated()][0]!r}")
    return frame


def build_queue(preds: pd.DataFrame, tree: Tree, question: str | None = None) -> pd.DataFrame:
    """The flagged galaxies, most doubtful first.

    Parameters
    ----------
    preds : DataFrame
        From :func:`load_predictions`.
    tree : Tree
    question : str, optional
        Keep only galaxies flagged on this question (e.g. ``"Q3"``).

    Returns
    -------
    DataFrame
        Indexed by galaxy id (text): ``priority`` and ``flagged`` (the flagged
        question names, comma-separated), sorted by decreasing priority.
    """
    names = [q.name for q in tree.questions]
    if question is not None and question not in names:
        raise ConfigError(f"tree {tree.name!r} has no question {question!r}")
    flagged = preds[[f"{n}_needs_expert" for n in names]].fillna(False).to_numpy(bool)  # (N, n_questions)
    doubt = preds[[f"{n}_reach" for n in names]].to_numpy(np.float64) * (
        1 - preds[[f"{n}_confidence" for n in names]].to_numpy(np.float64))
    keep = preds["needs_expert"].fillna(False).to_numpy(bool) & flagged.any(axis=1)
    if question is not None:
        keep &= flagged[:, names.index(question)]
    priority = np.where(flagged, np.nan_to_num(doubt, nan=0.0), -np.inf).max(axis=1)
    out = pd.DataFrame({"priority": priority,
                        "flagged": [",".join(n for n, f in zip(names, row) if f) for row in flagged]},
                       index=preds.index)[keep]
    out["_order"] = np.arange(len(out))  # input order breaks ties (ids are text here)
    return out.sort_values(["priority", "_order"], ascending=[False, True]).drop(columns="_order")


def model_version(path: str | Path) -> str:
    """A short name of the model(s) behind a prediction file, stored with every answer.

    The runs and checkpoint steps from the prediction's manifest when there is one,
    else the file name and a digest of its first megabyte.
    """
    path = Path(path)
    record = manifest_path(path)
    if record.is_file():
        try:
            m = json.loads(record.read_text())
            return "+".join(f"{Path(str(name)).name}@{step}" for name, step in zip(m["models"], m["steps"]))
        except (ValueError, KeyError, TypeError):
            pass
    if path.is_file():
        with open(path, "rb") as fh:
            return f"{path.name}:{hashlib.sha256(fh.read(1 << 20)).hexdigest()[:12]}"
    return path.name
