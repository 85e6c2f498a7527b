"""Expert answers as labels: vote fractions in the Kaggle cumulative convention.

For each galaxy and question, the fraction of the reviewers who answered the question
that chose each answer, multiplied by the value of the question's parent answer (1
for a root question).  The tree's sums then hold: a question's answers add up to its
parent answer.  A question that no reviewer answered (nobody reached it, or everybody
said "can't tell") is NaN, never 0: training masks NaN, while 0 would teach the model
that the answer is certainly absent.  Vote counts per question (``Qn_votes``, the
reviewers who gave a real answer, and ``Qn_cant_tell``) come alongside.  Every stored
answer is a vote, also in a review left unfinished: its unanswered questions simply
have fewer voters.

The table is a catalog that ``gzmorph train --data`` and ``gzmorph evaluate --labels``
read: the id column, ``path`` (the image's absolute path, from the review's catalog)
and the answer columns.  Galaxies without any vote are left out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError, OutputError
from gzmorph.outputs import claim_file, refuse_overwrite
from gzmorph.review.db import ReviewStore
from gzmorph.runtime import atomic_write
from gzmorph.review.walk import CANT_TELL
from gzmorph.tree import Tree

__all__ = ["vote_fractions", "export_labels"]


def vote_fractions(answers: pd.DataFrame, tree: Tree) -> pd.DataFrame:
    """Cumulative vote fractions and vote counts per galaxy.

    Parameters
    ----------
    answers : DataFrame
        Columns ``galaxy``, ``reviewer``, ``question``, ``answer`` (one row per answer,
        as :meth:`ReviewStore.table` returns).
    tree : Tree

    Returns
    -------
    DataFrame
        Indexed by galaxy (sorted): the tree's answer columns (NaN where unreached),
        ``Qn_votes`` and ``Qn_cant_tell`` per question and ``n_reviewers``.
    """
    galaxies = sorted(answers["galaxy"].unique(), key=_id_sort_key)
    counts = (answers.groupby(["galaxy", "answer"]).size().unstack(fill_value=0)
              .reindex(index=galaxies, fill_value=0))
    get = lambda col: counts[col].to_numpy(np.float64) if col in counts else np.zeros(len(galaxies))  # noqa: E731
    values: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for q in tree.questions:
        votes = np.stack([get(c) for c in q.columns], axis=1)  # (G, n_answers of q)
        n = votes.sum(axis=1)
        reach = np.ones(len(galaxies)) if q.parent is None else values[q.parent]
        ok = (n > 0) & (reach > 0)  # NaN reach compares False
        frac = np.where(ok[:, None], votes / np.where(n > 0, n, 1)[:, None] * np.nan_to_num(reach)[:, None], np.nan)
        values.update({c: frac[:, j] for j, c in enumerate(q.columns)})
        is_q = answers["question"] == q.name
        cant = answers[is_q & (answers["answer"] == CANT_TELL)].groupby("galaxy").size()
        extra[f"{q.name}_votes"] = n.astype(np.int64)
        extra[f"{q.name}_cant_tell"] = cant.reindex(galaxies, fill_value=0).to_numpy(np.int64)
    out = pd.DataFrame({**values, **extra}, index=pd.Index(galaxies, name="galaxy"))
    out["n_reviewers"] = answers.groupby("galaxy")["reviewer"].nunique().reindex(galaxies).to_numpy(np.int64)
    return out


def _id_sort_key(galaxy: str):
    # Integer ids sort numerically (as catalogs do), others as text after them.
    return (0, int(galaxy), "") if galaxy.lstrip("-").isdigit() else (1, 0, galaxy)


def export_labels(db: str | Path, out: str | Path | None = None, catalog=None, overwrite: bool = False
                  ) -> pd.DataFrame:
    """Write the expert labels of a review database as a catalog CSV (or Parquet).

    Parameters
    ----------
    db : path
        Review database written by ``gzmorph review``.
    out : path, optional
        ``.csv`` or ``.parquet`` file to write.
    catalog : Catalog, optional
        Where the images are; by default the catalog recorded in the database is
        opened again (it gives the ``path`` column).
    overwrite : bool
        Replace an existing ``out`` (never one of the review's inputs: the database,
        its predictions file or its catalog).

    Returns
    -------
    DataFrame
        The id column, ``path``, the answer columns and the vote counts; galaxies
        without any real vote are left out.
    """
    store = ReviewStore.open_existing(db)
    meta = store.meta()
    if out is not None:  # the shared output guard, before any work
        inputs = [db, meta.get("predictions"), meta.get("catalog")]
        refuse_overwrite([i for i in inputs if i], files=[out])
        claim_file(out, overwrite=overwrite)
    id_column = meta.get("id_column", "GalaxyID")
    table = store.table()
    if table.empty:
        raise OutputError(f"{db}: no answers recorded yet; nothing to export")
    fr = vote_fractions(table, store.tree)
    fr = fr[~fr[store.tree.columns].isna().all(axis=1)]
    if catalog is None and meta.get("catalog"):
        from gzmorph.review.server import open_review_catalog

        catalog = open_review_catalog(meta["catalog"], store.tree, id_column, meta.get("split", "test"))
    frame = fr.reset_index()
    ids = frame.pop("galaxy")
    frame.insert(0, id_column, pd.to_numeric(ids) if all(_id_sort_key(g)[0] == 0 for g in ids) else ids)
    if catalog is not None:
        paths = {str(i): p for i, p in zip(catalog.ids.tolist(), catalog.paths)}
        missing = [g for g in ids if g not in paths]
        if missing:
            raise CatalogError(f"{db}: {len(missing)} reviewed galaxies are not in the catalog {catalog.source} "
                             f"(e.g. {missing[:5]})")
        frame.insert(1, "path", [paths[g] for g in ids])
    if out is not None:
        out = Path(out)
        if out.suffix.lower() in (".parquet", ".pq"):
            atomic_write(out, lambda tmp: frame.to_parquet(tmp, index=False))
        elif out.suffix.lower() == ".csv":
            atomic_write(out, lambda tmp: frame.to_csv(tmp, index=False, float_format="%.6g"))
        else:
            raise OutputError(f"{out}: labels file must end in .csv or .parquet")
    return frame
