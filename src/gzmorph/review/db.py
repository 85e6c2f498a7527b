"""The review database: every expert answer, kept safely in SQLite.

One row per (galaxy, reviewer, question) in table ``answers`` with the answer column
(or ``"?"`` for "can't tell"), the time (UTC, ISO 8601) and the version of the model
whose predictions were shown.  Table ``reviews`` records per (galaxy, reviewer)
whether the review is ``done`` (every reached question answered) or ``skipped``;
table ``meta`` records the tree (a database belongs to one tree), the catalog and the
id column, so that ``gzmorph review export`` needs nothing but the database.

Reliability: the database runs in WAL mode with ``synchronous=FULL`` and every answer
is its own transaction (``BEGIN IMMEDIATE``: validate against the reviewer's current
answers, write, prune the abandoned branch, update the status), so a killed server
loses no answer that was acknowledged and leaves nothing half-written; several
reviewers (server threads or processes) can write at once.  Each call opens its own
connection, because server requests run on a thread pool and sqlite3 connections
must not cross threads.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pandas as pd

from gzmorph.errors import ConfigError, InputNotFoundError
from gzmorph.review.walk import check_answer, is_complete, next_question, prune
from gzmorph.tree import Tree

__all__ = ["ReviewStore", "AnswerRecord", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS answers (
    galaxy TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    answered_at TEXT NOT NULL,
    model_version TEXT NOT NULL,
    PRIMARY KEY (galaxy, reviewer, question)
);
CREATE TABLE IF NOT EXISTS reviews (
    galaxy TEXT NOT NULL,
    reviewer TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'skipped')),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (galaxy, reviewer)
);
"""


@dataclass(frozen=True)
class AnswerRecord:
    """What :meth:`ReviewStore.record_answer` did: the walk's next question, or None when done."""

    next_question: str | None
    complete: bool


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class ReviewStore:
    """A review database file.

    Parameters
    ----------
    path : path
        SQLite file, created when missing.
    tree : Tree
        The tree answers are validated against.  A database created for another tree
        is refused (its answers would not fit).
    meta : dict, optional
        Facts to record on creation or update (``catalog``, ``id_column``...).
    """

    def __init__(self, path: str | Path, tree: Tree, meta: dict[str, str] | None = None) -> None:
        self.path = Path(path)
        self.tree = tree
        if self.path.parent and not self.path.parent.is_dir():
            raise InputNotFoundError(f"{self.path}: folder {self.path.parent} does not exist")
        if self.path.exists() and not self.path.is_file():
            raise ConfigError(f"{self.path}: is a directory, not a review database file")
        try:
            with self._connect() as con:
                con.execute("PRAGMA journal_mode=WAL")
                con.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:  # "file is not a database": someone else's file
            raise ConfigError(f"{self.path}: not a review database (SQLite: {exc}); give a new file name or "
                              "a database written by `gzmorph review`") from None
        stored = self.meta().get("tree")
        tree_json = json.dumps(tree.to_dict(), sort_keys=True)
        if stored is not None and json.loads(stored) != tree.to_dict():
            raise ConfigError(f"{self.path} holds answers for tree {json.loads(stored)['name']!r}, "
                             f"not for the given tree {tree.name!r}")
        self.set_meta({"tree": tree_json, "schema_version": str(SCHEMA_VERSION), **(meta or {})})
        if "secret" not in self.meta():
            # Signs the forms' CSRF tokens; kept here so open pages survive a restart.
            self.set_meta({"secret": secrets.token_hex(32)})

    @classmethod
    def open_existing(cls, path: str | Path) -> "ReviewStore":
        """Open a database for reading, with the tree it records."""
        from gzmorph.tree import Tree as _Tree

        path = Path(path)
        if not path.is_file():
            raise InputNotFoundError(f"{path}: no such review database")
        with sqlite3.connect(path) as con:
            try:
                row = con.execute("SELECT value FROM meta WHERE key='tree'").fetchone()
            except sqlite3.DatabaseError as exc:
                raise ConfigError(f"{path}: not a gzmorph review database ({exc})") from None
        if row is None:
            raise ConfigError(f"{path}: not a gzmorph review database (no tree recorded)")
        return cls(path, _Tree.from_dict(json.loads(row[0])))

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            con.execute("PRAGMA synchronous=FULL")  # a commit survives a power loss, not only a kill
            yield con
        finally:
            con.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")  # take the write lock before reading what we validate
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")

    # ----------------------------------------------------------------- metadata
    def meta(self) -> dict[str, str]:
        with self._connect() as con:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        with self._transaction() as con:
            con.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                            [(k, str(v)) for k, v in values.items()])

    # ------------------------------------------------------------------ answers
    def answers(self, galaxy: str, reviewer: str) -> dict[str, str]:
        """The reviewer's answers for a galaxy: question name -> answer column or ``"?"``."""
        with self._connect() as con:
            return self._answers(con, galaxy, reviewer)

    @staticmethod
    def _answers(con: sqlite3.Connection, galaxy: str, reviewer: str) -> dict[str, str]:
        rows = con.execute("SELECT question, answer FROM answers WHERE galaxy=? AND reviewer=?",
                           (galaxy, reviewer)).fetchall()
        return dict(rows)

    def record_answer(self, galaxy: str, reviewer: str, question: str, answer: str,
                      model_version: str = "") -> AnswerRecord:
        """Validate and store one answer in its own transaction.

        The answer replaces the reviewer's earlier answer to the same question; answers
        to questions the new answer no longer reaches are removed.  Raises
        :class:`~gzmorph.review.walk.AnswerError` for an answer the tree does not allow.
        """
        with self._transaction() as con:
            current = self._answers(con, galaxy, reviewer)
            check_answer(self.tree, current, question, answer)
            updated = prune(self.tree, {**current, question: answer})
            con.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                        (galaxy, reviewer, question, answer, _now(), model_version))
            dropped = sorted(set(current) - set(updated))
            con.executemany("DELETE FROM answers WHERE galaxy=? AND reviewer=? AND question=?",
                            [(galaxy, reviewer, q) for q in dropped])
            complete = is_complete(self.tree, updated)
            if complete:
                con.execute("INSERT OR REPLACE INTO reviews VALUES (?, ?, 'done', ?)", (galaxy, reviewer, _now()))
            else:
                con.execute("DELETE FROM reviews WHERE galaxy=? AND reviewer=?", (galaxy, reviewer))
        return AnswerRecord(next_question(self.tree, updated, after=question), complete)

    def skip(self, galaxy: str, reviewer: str) -> None:
        """Leave a galaxy out of this reviewer's queue (their answers, if any, are kept)."""
        with self._transaction() as con:
            con.execute("INSERT OR REPLACE INTO reviews VALUES (?, ?, 'skipped', ?)", (galaxy, reviewer, _now()))

    def finished(self, reviewer: str) -> set[str]:
        """Galaxies this reviewer is done with (answered every reached question, or skipped)."""
        with self._connect() as con:
            return {g for (g,) in con.execute("SELECT galaxy FROM reviews WHERE reviewer=?", (reviewer,))}

    def in_progress(self, reviewer: str) -> list[str]:
        """Galaxies this reviewer has started but not finished, most recent first."""
        with self._connect() as con:
            rows = con.execute(
                "SELECT galaxy, MAX(answered_at) AS t FROM answers WHERE reviewer=? AND galaxy NOT IN "
                "(SELECT galaxy FROM reviews WHERE reviewer=?) GROUP BY galaxy ORDER BY t DESC",
                (reviewer, reviewer)).fetchall()
        return [g for g, _ in rows]

    def table(self) -> pd.DataFrame:
        """Every stored answer: galaxy, reviewer, question, answer, answered_at, model_version."""
        with self._connect() as con:
            return pd.read_sql_query("SELECT * FROM answers ORDER BY galaxy, reviewer, question", con)
