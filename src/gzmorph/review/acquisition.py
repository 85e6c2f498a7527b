"""Acquisition policies: which galaxies an expert (or volunteer) should label next, and why.

Every policy gives each predicted galaxy a ``priority`` (higher first) and a ``reason``
(shown on the review pages):

* ``"today"``: the flagged galaxies only, max over flagged questions of
  ``reach * (1 - confidence)`` (:func:`gzmorph.review.queue.build_queue`).
* ``"uncertainty"``: predictive uncertainty of the whole tree, the sum over questions
  of ``reach * (1 - confidence)`` (confidence ``1 - H/log n`` of the renormalised
  answers), for every galaxy, flagged or not.
* ``"bald"``: mutual information between the answer and the model (Houlsby et al. 2011;
  Walmsley et al. 2020): ``H(mean_m p_m) - mean_m H(p_m)`` over the members ``m`` (the
  runs of an ensemble, or predictions under different test-time views), per question on
  the renormalised answers, weighted by the members' mean reach and summed.  High when
  the members disagree, not when they agree on a coin toss.
* ``"anomaly"``: the anomaly score of a similarity index (:mod:`gzmorph.discovery.index`).
* ``"similar"``: cosine similarity of the galaxy's embedding to the nearest seed galaxy.
* ``"random"``: a seeded random order (the baseline of the active-learning benchmark).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError, ConfigError
from gzmorph.tree import Tree

__all__ = ["POLICIES", "AcquisitionConfig", "acquisition_scores", "bald", "predictive_uncertainty",
           "similarity_to_seeds"]

POLICIES = ("today", "uncertainty", "bald", "anomaly", "similar", "random")


@dataclass(frozen=True)
class AcquisitionConfig:
    """Which acquisition policy orders the review queue, and its inputs.

    Parameters
    ----------
    policy : {"today", "uncertainty", "bald", "anomaly", "similar", "random"}
    members : tuple of path
        ``bald``: prediction files of the ensemble members (or TTA views), at least two.
    anomaly : path, optional
        ``anomaly``: an index directory of ``gzmorph similar --build`` (or a table with
        the id column and ``anomaly``).
    embeddings : path, optional
        ``similar``: an embedding file of ``gzmorph embed``.
    seeds : tuple of str
        ``similar``: ids of the seed galaxies.
    random_seed : int
        ``random``: the seed of the order.
    """

    policy: str = "today"
    members: tuple[str, ...] = field(default_factory=tuple)
    anomaly: str | None = None
    embeddings: str | None = None
    seeds: tuple[str, ...] = field(default_factory=tuple)
    random_seed: int = 0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"acquisition policy must be one of {POLICIES}, got {self.policy!r}")
        needs = {"bald": ("members", len(self.members) >= 2, "at least two member prediction files"),
                 "anomaly": ("anomaly", self.anomaly is not None, "an index directory or anomaly table"),
                 "similar": ("embeddings", self.embeddings is not None and len(self.seeds) > 0,
                             "an embedding file and at least one seed id")}
        if self.policy in needs and not needs[self.policy][1]:
            raise ConfigError(f"policy {self.policy!r} needs {needs[self.policy][2]}")


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=-1)


def _per_question(probs: np.ndarray, tree: Tree) -> list[np.ndarray]:
    """Renormalised answer distributions of every question: list of ``(..., n_answers_q)``."""
    out = []
    for sl in tree.slices:
        block = np.asarray(probs[..., sl], np.float64)
        total = block.sum(axis=-1, keepdims=True)
        out.append(np.where(total > 0, block / np.where(total > 0, total, 1.0), 1.0 / block.shape[-1]))
    return out


def predictive_uncertainty(probs: np.ndarray, tree: Tree) -> np.ndarray:
    """``(N,)``: sum over questions of ``reach * H/log n`` of the renormalised answers."""
    reach = tree.reach(probs)  # (N, Q)
    h = np.stack([_entropy(p) / np.log(p.shape[-1]) for p in _per_question(probs, tree)], axis=1)  # (N, Q)
    return (reach * h).sum(axis=1)


def bald(member_probs: np.ndarray, tree: Tree) -> np.ndarray:
    """``(N,)`` mutual information of ``member_probs`` ``(M, N, n_answers)``, reach-weighted, summed."""
    member_probs = np.asarray(member_probs, np.float64)
    if member_probs.ndim != 3 or member_probs.shape[0] < 2:
        raise ConfigError(f"BALD needs the predictions of at least 2 members, shape (M, N, A); got "
                          f"{member_probs.shape}")
    reach = np.mean([tree.reach(p) for p in member_probs], axis=0)  # (N, Q)
    info = [_entropy(q.mean(axis=0)) - _entropy(q).mean(axis=0) for q in _per_question(member_probs, tree)]
    return (reach * np.maximum(np.stack(info, axis=1), 0.0)).sum(axis=1)


def similarity_to_seeds(vectors: np.ndarray, seed_rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity of every vector to its most similar seed, and that seed's row."""
    x = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = x @ x[list(seed_rows)].T  # (N, S)
    return sims.max(axis=1), np.asarray(seed_rows)[sims.argmax(axis=1)]


def _member_probs(paths: Sequence[str], preds: pd.DataFrame, tree: Tree, id_column: str) -> np.ndarray:
    from gzmorph.review.queue import load_predictions

    out = []
    for path in paths:
        member = load_predictions(path, tree, id_column)
        missing = preds.index[~preds.index.isin(member.index)]
        if len(missing):
            raise CatalogError(f"{path}: no prediction for galaxy {missing[0]!r} ({len(missing)} missing)")
        out.append(member.loc[preds.index, tree.columns].to_numpy(np.float64))
    return np.stack(out)  # (M, N, A)


def _anomaly(source: str, preds: pd.DataFrame, id_column: str) -> np.ndarray:
    path = Path(source)
    table = pd.read_parquet(path / "items.parquet" if path.is_dir() else path)
    if "anomaly" not in table or id_column not in table:
        raise CatalogError(f"{source}: no {id_column!r} and 'anomaly' columns (give a gzmorph similar index)")
    scores = pd.Series(table["anomaly"].to_numpy(), index=table[id_column].astype(str))
    return scores.reindex(preds.index).fillna(-np.inf).to_numpy(np.float64)


def _similar(cfg: AcquisitionConfig, preds: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    from gzmorph.discovery.embed import read_embeddings

    emb = read_embeddings(cfg.embeddings)
    where = {str(v): i for i, v in enumerate(emb.ids)}
    unknown = [s for s in cfg.seeds if s not in where]
    if unknown:
        raise ConfigError(f"seed galaxy {unknown[0]!r} is not in {cfg.embeddings}")
    sims, seed_of = similarity_to_seeds(emb.vectors, [where[s] for s in cfg.seeds])
    rows = np.asarray([where.get(g, -1) for g in preds.index])
    priority = np.where(rows >= 0, sims[np.maximum(rows, 0)], -np.inf)
    reasons = [f"similar to seed {emb.ids[seed_of[r]]} (cosine {sims[r]:.3f})" if r >= 0 else "no embedding"
               for r in rows]
    return priority, reasons


def acquisition_scores(preds: pd.DataFrame, tree: Tree, cfg: AcquisitionConfig,
                       id_column: str = "GalaxyID") -> pd.DataFrame | None:
    """``priority`` and ``reason`` of every galaxy of ``preds`` (indexed by id text) under ``cfg``.

    None for ``"today"`` (the queue's own rule).
    """
    if cfg.policy == "today":
        return None
    probs = preds[tree.columns].to_numpy(np.float64)
    if cfg.policy == "uncertainty":
        priority = predictive_uncertainty(probs, tree)
        reasons = [f"predictive uncertainty {v:.3f} (sum of reach x normalised entropy)" for v in priority]
    elif cfg.policy == "bald":
        priority = bald(_member_probs(cfg.members, preds, tree, id_column), tree)
        reasons = [f"members disagree: mutual information {v:.3f}" for v in priority]
    elif cfg.policy == "anomaly":
        priority = _anomaly(cfg.anomaly, preds, id_column)
        reasons = [f"anomaly score {v:.3f}" if np.isfinite(v) else "not in the index" for v in priority]
    elif cfg.policy == "similar":
        priority, reasons = _similar(cfg, preds)
    else:
        priority = np.random.default_rng(cfg.random_seed).random(len(preds))
        reasons = ["random draw"] * len(preds)
    return pd.DataFrame({"priority": priority, "reason": reasons}, index=preds.index)
