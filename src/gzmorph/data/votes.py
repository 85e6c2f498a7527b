"""Vote counts of a catalog: how many volunteers (or experts) gave each answer.

A catalog may carry counts in either of two forms (both optional, next to the answer
fractions):

* per answer, ``Class1.1_votes``: the volunteers who chose answer 1.1 (GZ DECaLS style);
* per question, ``Q1_votes``: the volunteers who answered Q1 (``gzmorph review export``
  and ``gzmorph mock`` write these); the answers' counts are then the question's
  fractions, renormalised, times that total.

The result is an ``(N, n_answers)`` float32 array of counts in tree column order, NaN
where the catalog has no count (the question is then masked out of a count loss).
Counts must be whole, non-negative numbers, and a question cannot have more votes than
the answer leading to it; anything else is a :class:`~gzmorph.errors.CatalogError` that
names the file, the row and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from gzmorph.errors import CatalogError
from gzmorph.tree import Tree

__all__ = ["VOTES", "vote_columns", "read_votes", "votes_from_table", "pseudo_counts"]

#: Suffix of a vote-count column (``Class1.1_votes`` or ``Q1_votes``).
VOTES = "_votes"
# A count read from a float column (Parquet, or a CSV with an empty cell) may be 12.000001.
_WHOLE_TOL = 1e-4


def vote_columns(columns: list[str], tree: Tree) -> list[str]:
    """The vote-count columns of ``tree`` present in ``columns``."""
    wanted = [c + VOTES for c in tree.columns] + [q.name + VOTES for q in tree.questions]
    have = set(columns)
    return [c for c in wanted if c in have]


def _where(path: Path, row: int) -> str:
    return f"line {row + 2}" if path.suffix.lower() == ".csv" else f"row {row}"


def _counts(table: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """One count column as float64, refusing NaN, negative and fractional values."""
    values = pd.to_numeric(table[column], errors="coerce").to_numpy(np.float64)
    checks = (("is not a number (NaN or empty): counts must be given for every row", ~np.isfinite(values)),
              ("is negative", np.isfinite(values) & (values < 0)),
              ("is not a whole number", np.isfinite(values) & (np.abs(values - np.round(values)) > _WHOLE_TOL)))
    for what, bad in checks:
        rows = np.flatnonzero(bad)
        if rows.size:
            r = int(rows[0])
            more = f" (and {rows.size - 1} more rows)" if rows.size > 1 else ""
            raise CatalogError(f"{path}: {_where(path, r)}, column {column!r}: vote count "
                               f"{table[column].iloc[r]!r} {what}{more}")
    return np.round(values)


def votes_from_table(table: pd.DataFrame, path: Path, tree: Tree, labels: np.ndarray) -> np.ndarray | None:
    """``(N, n_answers)`` counts from a catalog table, or None when it has no vote column.

    ``labels`` are the table's answer fractions (tree order, NaN where absent): they split
    a per-question total among its answers.
    """
    present = vote_columns(list(table.columns), tree)
    if not present:
        return None
    out = np.full((len(table), tree.n_answers), np.nan)
    totals = np.full((len(table), tree.n_questions), np.nan)  # voters per question, however given
    for qi, (q, sl) in enumerate(zip(tree.questions, tree.slices)):
        per_answer = [c + VOTES for c in q.columns]
        if all(c in present for c in per_answer):
            out[:, sl] = np.stack([_counts(table, c, path) for c in per_answer], axis=1)
            totals[:, qi] = out[:, sl].sum(axis=1)
        elif any(c in present for c in per_answer):
            missing = [c for c in per_answer if c not in present]
            raise CatalogError(f"{path}: question {q.name} has vote columns for some answers only "
                               f"(missing {missing}); give all of them or a {q.name}{VOTES} total")
        elif q.name + VOTES in present:
            total = totals[:, qi] = _counts(table, q.name + VOTES, path)
            frac = labels[:, sl].astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                split = frac / frac.sum(axis=1, keepdims=True)  # (N, answers) the question's split
            counts = split * total[:, None]
            # No votes: every answer has 0 votes, whatever the (NaN) fractions say.
            out[:, sl] = np.where(total[:, None] == 0, 0.0, counts)
    _check_tree(out, totals, table, path, tree)
    return out.astype(np.float32)


def _check_tree(counts: np.ndarray, totals: np.ndarray, table: pd.DataFrame, path: Path, tree: Tree) -> None:
    """A question cannot have more voters than the answer that leads to it."""
    for qi, q in enumerate(tree.questions):
        if q.parent is None:
            continue
        parent = tree.columns.index(q.parent)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(totals[:, qi] > counts[:, parent] + 0.5)  # NaN compares False
        if bad.size:
            r = int(bad[0])
            more = f" (and {bad.size - 1} more rows)" if bad.size > 1 else ""
            column = q.name + VOTES if q.name + VOTES in table else ",".join(c + VOTES for c in q.columns)
            raise CatalogError(f"{path}: {_where(path, r)}, column {column}: {q.name} has {totals[r, qi]:g} votes "
                               f"but its parent answer {q.parent} only {counts[r, parent]:g}: counts contradict "
                               f"the tree{more}")


def read_votes(path: str | Path, tree: Tree, labels: np.ndarray, id_column: str) -> np.ndarray | None:
    """Vote counts of a catalog file (rows in file order), or None without vote columns.

    The header of a CSV or Parquet file is looked at first, so a catalog without counts is
    not read twice; an astropy table (FITS, ECSV, VOTable) is read whole.
    """
    from gzmorph.data.tablefile import ASTROPY_FORMATS, read_table_file, table_format

    path = Path(path)
    suffix = path.suffix.lower()
    if table_format(path) in ASTROPY_FORMATS:  # FITS table, ECSV, VOTable: binary or typed, not plain CSV
        table = read_table_file(path).frame
        if not vote_columns([str(c).strip() for c in table.columns], tree):
            return None
    else:
        parquet = suffix in (".parquet", ".pq")
        header = (pq.read_schema(path).names if parquet
                  else [c.strip() for c in pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns])
        if not vote_columns(header, tree):
            return None
        table = (pd.read_parquet(path) if parquet
                 else pd.read_csv(path, dtype={id_column: str}, skipinitialspace=True, encoding="utf-8-sig"))
    table.columns = [str(c).strip() for c in table.columns]
    return votes_from_table(table, path, tree, labels)


def pseudo_counts(labels: np.ndarray, assumed_votes: float) -> np.ndarray:
    """Counts from fractions alone: each column value times ``assumed_votes`` volunteers.

    A column value is the fraction of *all* volunteers of a galaxy who gave the answer
    (the Kaggle convention), so this is the expected count among ``assumed_votes``;
    NaN stays NaN (masked).
    """
    if not assumed_votes > 0:
        raise ValueError(f"assumed_votes must be positive, got {assumed_votes}")
    return (np.asarray(labels, dtype=np.float64) * assumed_votes).astype(np.float32)
