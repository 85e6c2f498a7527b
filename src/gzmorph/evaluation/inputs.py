"""The inputs of an evaluation: prediction and label tables, read and joined on their ids.

Bad input raises :class:`~gzmorph.errors.CatalogError` naming the file and the row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gzmorph.data.tables import parse_ids_text
from gzmorph.errors import CatalogError
from gzmorph.tree import Tree

__all__ = ["read_table", "predicted_columns", "load_predictions", "load_labels", "id_keys", "match_ids"]


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV (optionally compressed) or Parquet table, chosen by the file name.

    The CSV ``id_column`` is read as text: a column with an empty cell would
    otherwise turn every integer id into a float (``100023.0``).
    """
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    name = path.name.lower()
    if name.endswith((".parquet", ".pq")):
        return pd.read_parquet(path)
    if any(name.endswith(s) for s in (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst")):
        dtype = {id_column: str} if id_column else None
        return pd.read_csv(path, encoding="utf-8-sig", dtype=dtype)  # with or without a byte-order mark
    raise CatalogError(f"{path}: unknown table format (expected .csv or .parquet)")


def _answer_matrix(table: pd.DataFrame, tree: Tree, source: str, strict: bool = True) -> np.ndarray:
    """``(N, n_answers)`` float64 in tree order; NaN for absent columns and values.

    A cell that is not a number raises, or with ``strict`` off becomes NaN (a bad row).
    """
    out = np.full((len(table), tree.n_answers), np.nan)
    for j, col in enumerate(tree.columns):
        if col not in table.columns:
            continue
        values = pd.to_numeric(table[col], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & table[col].notna().to_numpy())
        if bad.size and strict:
            raise CatalogError(f"{source}: row {int(bad[0])} (file line {int(bad[0]) + 2}), column "
                             f"{col!r}: {table[col].iloc[bad[0]]!r} is not a number")
        out[:, j] = values.to_numpy(dtype=np.float64)
    return out


def id_keys(ids: Any) -> np.ndarray:
    """Ids as int64 when they are all integers, else as strings (for joining)."""
    a = np.asarray(ids)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        return a.astype(np.int64)
    return a.astype(str).astype(object)


def _check_no_empty_ids(ids: pd.Series, source: str, csv: bool) -> None:
    empty = np.flatnonzero(ids.isna().to_numpy() | (ids.astype(str).str.strip() == "").to_numpy())
    if empty.size:
        where = ", ".join(f"row {r}" + (f" (file line {r + 2})" if csv else "") for r in empty[:5].tolist())
        raise CatalogError(f"{source}: {empty.size} empty id(s) in column {ids.name!r}: {where}")


#: Slack on [0, 1] for predicted probabilities (float rounding of clipped values).
PROBABILITY_TOLERANCE = 1e-6


def bad_prediction_rows(values: np.ndarray) -> np.ndarray:
    """Why each row of a prediction matrix cannot be scored (``""``: it can).

    The rules of :func:`_check_probabilities`: an empty (NaN) cell in a predicted
    column, or a value outside [0, 1].
    """
    predicted = ~np.isnan(values).all(axis=0)
    empty = (np.isnan(values) & predicted).any(axis=1)
    outside = ((values < -PROBABILITY_TOLERANCE) | (values > 1 + PROBABILITY_TOLERANCE)).any(axis=1)
    return np.where(empty, "empty or not a number", np.where(outside, "outside [0, 1]", "")).astype(object)


def _check_probabilities(values: np.ndarray, tree: Tree, source: str, csv: bool) -> None:
    """Refuse NaN cells and values outside [0, 1]: they would be scored silently.

    A column that is entirely empty is a column the file does not predict (it is
    left out of the scores like an absent one); one empty cell in a predicted
    column is an error.
    """
    predicted = ~np.isnan(values).all(axis=0)
    bad_nan = np.isnan(values) & predicted
    bad_range = (values < -PROBABILITY_TOLERANCE) | (values > 1 + PROBABILITY_TOLERANCE)
    for bad, what in ((bad_nan, "is empty (NaN)"), (bad_range, "is outside [0, 1]")):
        if bad.any():
            rows, cols = np.nonzero(bad)
            r, c = int(rows[0]), int(cols[0])
            line = f" (file line {r + 2})" if csv else ""
            raise CatalogError(f"{source}: row {r}{line}, column {tree.columns[c]!r}: the prediction "
                               f"{values[r, c]!r} {what}; {int(bad.any(axis=1).sum())} row(s) have such values "
                               "(predictions must be probabilities)")


def _check_unique(keys: np.ndarray, source: str) -> None:
    dup = pd.Index(keys).duplicated()
    if dup.any():
        rows = np.flatnonzero(dup)[:5].tolist()
        raise CatalogError(f"{source}: duplicate ids {keys[rows].tolist()} (rows {rows}); ids must be unique")


def predicted_columns(predictions: Any, tree: Tree) -> list[str]:
    """The answer columns a predictions table has (a column may be present but empty)."""
    table = predictions if isinstance(predictions, pd.DataFrame) else None
    if table is None:
        path = Path(predictions)
        columns = (pq.read_schema(path).names if path.name.lower().endswith((".parquet", ".pq"))
                   else list(pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns))
    else:
        columns = list(table.columns)
    return [c for c in tree.columns if c in columns]


def load_predictions(predictions: Any, tree: Tree, id_column: str, check: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, str]:
    """Ids (join keys), ``(N, n_answers)`` predictions and the source's name.

    With ``check`` off, bad cells are not refused (non-numbers become NaN): the caller
    drops the rows :func:`bad_prediction_rows` names, and says so.
    """
    source = "predictions" if isinstance(predictions, pd.DataFrame) else str(predictions)
    table = predictions if isinstance(predictions, pd.DataFrame) else read_table(predictions, id_column)
    if id_column not in table.columns:
        raise CatalogError(f"{source}: no id column {id_column!r} (columns: {list(table.columns)[:8]}...); "
                         "give the right one with id_column / --id-column")
    _check_no_empty_ids(table[id_column], source, csv=source.lower().endswith(".csv"))
    if not any(c in table.columns for c in tree.columns):
        raise CatalogError(f"{source}: none of the {tree.name!r} answer columns ({tree.columns[0]}, ...) is present")
    ids = table[id_column].to_numpy()
    if not isinstance(predictions, pd.DataFrame) and ids.dtype == object:
        # A CSV id column read as text: integers when all are canonical integers (as catalogs do).
        ids = parse_ids_text([str(v) for v in ids])
    keys = id_keys(ids)
    _check_unique(keys, source)
    values = _answer_matrix(table, tree, source, strict=check)
    if check:
        _check_probabilities(values, tree, source, csv=source.lower().endswith(".csv"))
    return keys, values, source


def load_labels(labels: Any, tree: Tree, id_column: str) -> tuple[np.ndarray, np.ndarray, str]:
    if isinstance(labels, pd.DataFrame):
        source = "labels"
        if id_column not in labels.columns:
            raise CatalogError(f"labels: no id column {id_column!r}")
        ids, values = labels[id_column].to_numpy(), _answer_matrix(labels, tree, source)
    else:
        if isinstance(labels, (str, Path)):
            from gzmorph.data.source import open_source  # pulls in image handling; import on use

            # Labels only: the images of a Kaggle directory are never read, so need not exist.
            labels = open_source(labels, tree=tree, id_column=id_column, path_column=None,
                                 require_images=False).catalog
        source = str(getattr(labels, "source", "") or "labels catalog")
        ids, values = np.asarray(labels.ids), np.asarray(labels.labels, dtype=np.float64)
        if values.shape != (len(ids), tree.n_answers):
            raise CatalogError(f"{source}: labels have shape {values.shape}, expected ({len(ids)}, {tree.n_answers}) "
                             f"for tree {tree.name!r}")
    if not np.isfinite(values).any():
        raise CatalogError(f"{source}: no labels (none of the {tree.name!r} answer columns has a value)")
    keys = id_keys(ids)
    _check_unique(keys, source)
    return keys, values, source


def match_ids(pred_keys: np.ndarray, label_keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows of each side that share an id (in prediction order), then the ids of each side
    that the other lacks: ``(pred_rows, label_rows, only_in_predictions, only_in_labels)``."""
    if (pred_keys.dtype == object) != (label_keys.dtype == object):
        # One side has integer ids, the other strings: compare them as text.
        pred_keys, label_keys = pred_keys.astype(str).astype(object), label_keys.astype(str).astype(object)
    pos = pd.Index(label_keys).get_indexer(pred_keys)  # -1 where the id has no label
    matched = pos >= 0
    in_preds = pd.Index(label_keys).isin(pred_keys)
    return np.flatnonzero(matched), pos[matched], pred_keys[~matched], label_keys[~in_preds]
