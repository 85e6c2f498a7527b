"""An on-disk similarity index of an embedding file (faiss), its queries and anomaly scores.

An index directory holds ``index.faiss`` (a faiss index: exact ``IndexFlatL2``, or
``IndexHNSWFlat`` for very large collections), ``items.parquet`` (id, path and the
anomaly score of every vector, in index order), ``index.json`` (the embedding record
of :mod:`gzmorph.discovery.embed`, with its digest, the metric and the index kind) and,
when the embedding was reduced, ``pca.npz`` (so an image file can be queried).

Metric: ``"cosine"`` (default) L2-normalises every vector, so the faiss L2 distance
``d`` gives the cosine distance ``d**2 / 2``; ``"l2"`` keeps Euclidean distances.
Reported ``distance`` is the cosine distance or the Euclidean one.

faiss was chosen over hnswlib and usearch because its exact flat index needs no
tuning and is fast enough for millions of vectors of a few dozen dimensions on
2 cores (BENCHMARKS.md, "Discovery"), and it has HNSW for larger ones.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gzmorph.discovery.anomaly import anomaly_scores
from gzmorph.discovery.embed import Embeddings, pca_path, read_embeddings
from gzmorph.errors import CatalogError, ConfigError, MissingExtraError, OutputError
from gzmorph.outputs import MARKER, claim_folder, mark_folder, refuse_overwrite, temporary_folder
from gzmorph.runtime import write_json

__all__ = ["SimilarityIndex", "build_index", "open_index", "claim_index_folder", "embedding_inputs", "index_inputs",
           "METRICS", "INDEX_KINDS", "INDEX_FILES", "require_faiss"]

METRICS = ("cosine", "l2")
INDEX_KINDS = ("flat", "hnsw")
#: Every file an index folder may hold (an ``--overwrite`` replaces nothing else).
INDEX_FILES = (MARKER, "index.faiss", "items.parquet", "index.json", "pca.npz")


def _collection_inputs(record: dict[str, Any], paths: Sequence[Any]) -> list[Path]:
    """The collection (``source``) and model recorded by embed, and every folder holding one of ``paths``."""
    found = [Path(record[key]) for key in ("source", "model") if isinstance(record.get(key), str)]
    # Every folder holding an image of the collection is an input folder (one dirname per path).
    return found + [Path(folder) for folder in sorted({os.path.dirname(str(p)) for p in paths}) if folder]


def embedding_inputs(emb: Embeddings) -> list[Path]:
    """The paths an embedding file stands for, as inputs of :func:`gzmorph.outputs.refuse_overwrite`:
    itself, its PCA, the collection it was made from, the folders of its images and the model."""
    return [emb.source, pca_path(emb.source), *_collection_inputs(emb.meta, emb.paths)]


def index_inputs(index: "SimilarityIndex") -> list[Path]:
    """The paths an opened index reads or stands for: its folder, its embedding file and the latter's inputs."""
    source = [Path(index.meta["source"]), pca_path(index.meta["source"])] if index.meta.get("source") else []
    return [index.directory, *source, *_collection_inputs(index.meta["embedding"], index.items["path"])]


def require_faiss() -> Any:
    """The faiss module, or one clear error naming the ``discovery`` extra."""
    try:
        import faiss
    except ImportError:
        raise MissingExtraError("similarity search needs faiss: pip install 'gzmorph[discovery]'") from None
    return faiss


def _prepared(x: np.ndarray, metric: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    return x


def _distance(squared: np.ndarray, metric: str) -> np.ndarray:
    squared = np.maximum(squared, 0.0)
    return squared / 2 if metric == "cosine" else np.sqrt(squared)


@dataclass
class SimilarityIndex:
    """A loaded index: the faiss index, its items (ids, paths, anomaly) and its record."""

    directory: Path
    faiss_index: Any
    items: pd.DataFrame
    meta: dict[str, Any]

    @property
    def n(self) -> int:
        return len(self.items)

    @property
    def id_column(self) -> str:
        return self.meta["embedding"]["id_column"]

    def check(self, emb: Embeddings) -> None:
        """Refuse vectors from another model, TTA, feature layer or PCA."""
        mine = self.meta["embedding"]["digest"]
        if emb.digest != mine:
            raise ConfigError(f"{emb.source}: made by another model or settings than the index {self.directory} "
                              f"(embedding digest {emb.digest[:12]} != {mine[:12]}; model {emb.meta.get('model')} "
                              f"vs {self.meta['embedding'].get('model')}); embed with the index's model")

    def _k(self, k: int, exclude_self: bool) -> int:
        limit = self.n - 1 if exclude_self else self.n
        if k < 1 or k > limit:
            raise ConfigError(f"k={k} but the index {self.directory} has {self.n} items: k must be between 1 "
                              f"and {limit}" + (" (the galaxy itself is left out)" if exclude_self else ""))
        return k

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, positions)``, each ``(Q, k)``, of the ``k`` nearest items of each vector."""
        if not np.isfinite(vectors).all():
            raise ConfigError("a query vector has NaN or infinite values")
        squared, pos = self.faiss_index.search(_prepared(vectors, self.meta["metric"]), self._k(k, False))
        return _distance(squared, self.meta["metric"]), pos

    def positions(self, ids: Sequence[Any]) -> np.ndarray:
        """Index positions of ``ids`` (compared as text); an unknown id is an error."""
        where = {str(v): i for i, v in enumerate(self.items[self.id_column])}
        missing = [str(v) for v in ids if str(v) not in where]
        if missing:
            raise ConfigError(f"{self.id_column} {missing[0]!r} is not in the index {self.directory} "
                              f"({self.n} items)" + (f"; {len(missing)} ids unknown" if len(missing) > 1 else ""))
        return np.asarray([where[str(v)] for v in ids], dtype=np.int64)

    def vectors_of(self, positions: np.ndarray) -> np.ndarray:
        """The stored (prepared) vectors at ``positions``, ``(Q, F)``."""
        return np.stack([self.faiss_index.reconstruct(int(p)) for p in positions]).astype(np.float32)

    def similar_to_ids(self, ids: Sequence[Any], k: int) -> pd.DataFrame:
        """The ``k`` nearest other galaxies of each id: query, rank, id, distance, path."""
        pos = self.positions(ids)
        self._k(k, True)
        squared, found = self.faiss_index.search(self.vectors_of(pos), k + 1)
        rows = []
        for q, p, d_row, f_row in zip(ids, pos, _distance(squared, self.meta["metric"]), found):
            keep = [(d, f) for d, f in zip(d_row, f_row) if f != p and f >= 0][:k]
            rows += [(q, r + 1, f, d) for r, (d, f) in enumerate(keep)]
        return self._table(rows)

    def similar_to_vectors(self, vectors: np.ndarray, names: Sequence[Any], k: int) -> pd.DataFrame:
        """The ``k`` nearest galaxies of each query vector (named ``names``)."""
        dist, found = self.search(vectors, k)
        rows = [(q, r + 1, f, d) for q, d_row, f_row in zip(names, dist, found)
                for r, (d, f) in enumerate(zip(d_row, f_row)) if f >= 0]
        return self._table(rows)

    def _table(self, rows: list[tuple[Any, int, int, float]]) -> pd.DataFrame:
        pos = np.asarray([r[2] for r in rows], dtype=np.int64)
        return pd.DataFrame({"query": [str(r[0]) for r in rows], "rank": [r[1] for r in rows],
                             self.id_column: self.items[self.id_column].to_numpy()[pos],
                             "distance": np.asarray([r[3] for r in rows], np.float64),
                             "path": self.items["path"].to_numpy()[pos]})

    def anomalies(self, top: int) -> pd.DataFrame:
        """The ``top`` most anomalous galaxies, highest score first."""
        return self.items.sort_values("anomaly", ascending=False, kind="stable").head(top)


def _faiss_index(x: np.ndarray, kind: str, faiss: Any) -> Any:
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(x.shape[1], 32)
        index.hnsw.efSearch = 64
    else:
        index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index


def build_index(embeddings: str | Path | Embeddings, directory: str | Path, *, metric: str = "cosine",
                kind: str = "flat", anomaly: str = "knn", anomaly_k: int = 10, seed: int = 0,
                overwrite: bool = False) -> SimilarityIndex:
    """Build an index directory from an embedding file.

    The folder is claimed with the output guard (:mod:`gzmorph.outputs`) before any
    work: it must be new or empty, never an input (the embedding file, its collection,
    an image folder of it, the model) nor inside or holding one; an existing index (a
    folder with the ``"index"`` marker and only index files) is replaced only with
    ``overwrite``, and atomically (built beside it, then swapped in).

    Parameters
    ----------
    embeddings : path or Embeddings
        A file of :func:`gzmorph.discovery.embed.embed_to_file`.
    directory : path
        The index directory (created).
    metric : {"cosine", "l2"}
    kind : {"flat", "hnsw"}
        Exact search, or the HNSW graph (approximate, for many millions of vectors).
    anomaly : {"knn", "iforest", "none"}
        The ``anomaly`` column (:func:`gzmorph.discovery.anomaly.anomaly_scores`).
    anomaly_k : int
        Neighbours of the k-NN score.  The k-NN score searches every vector: with the
        exact flat index that is quadratic in N (fine up to ~10^5 vectors on 2 cores);
        for millions use ``kind="hnsw"`` or ``anomaly="iforest"``.
    overwrite : bool
        Replace an index already in ``directory`` (``similar --overwrite``).
    """
    faiss = require_faiss()
    if metric not in METRICS or kind not in INDEX_KINDS:
        raise ConfigError(f"metric must be one of {METRICS} and kind one of {INDEX_KINDS}, got {metric!r}, {kind!r}")
    emb = embeddings if isinstance(embeddings, Embeddings) else read_embeddings(embeddings)
    if len(emb.ids) < 2:
        raise CatalogError(f"{emb.source}: {len(emb.ids)} vectors; an index needs at least 2")
    directory = Path(directory)
    claim_index_folder(directory, embedding_inputs(emb), overwrite)
    x = _prepared(emb.vectors, metric)
    index = _faiss_index(x, kind, faiss)
    items = pd.DataFrame({emb.meta["id_column"]: emb.ids, "path": emb.paths})
    items["anomaly"] = anomaly_scores(x, anomaly, anomaly_k, index=index, seed=seed)
    meta = {"embedding": emb.meta, "metric": metric, "kind": kind, "n": len(items), "anomaly": anomaly,
            "anomaly_k": anomaly_k, "source": str(emb.source.resolve())}
    tmp = temporary_folder(directory)  # built beside, swapped in whole: never half an index
    try:
        mark_folder(tmp, "index")
        faiss.write_index(index, str(tmp / "index.faiss"))
        items.to_parquet(tmp / "items.parquet", index=False)
        if emb.meta.get("pca"):
            shutil.copyfile(pca_path(emb.source), tmp / "pca.npz")
        write_json(meta, tmp / "index.json")
        _swap_in(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SimilarityIndex(directory, index, items, meta)


def claim_index_folder(directory: Path, inputs: Sequence[Any], overwrite: bool, option: str = "INDEX") -> None:
    """Refuse, before any work, an index folder that is an input or not an index this call may replace."""
    refuse_overwrite(inputs, folders=[directory], option=option)
    if not claim_folder(directory, "index", option=option, what="similarity index (gzmorph similar --build)"):
        return
    if not overwrite:
        raise OutputError(f"{option} {directory}: already holds an index; pass --overwrite to replace it")
    strays = sorted(p.name for p in directory.iterdir() if p.name not in INDEX_FILES)
    if strays:
        raise OutputError(f"{option} {directory}: holds {strays[0]!r}, which is not a file of an index "
                          f"({len(strays)} such); move it out or choose another folder")


def _swap_in(tmp: Path, directory: Path) -> None:
    """Rename the finished folder ``tmp`` to ``directory``, moving an old index aside and deleting it after."""
    if not directory.exists() or not any(directory.iterdir()):
        if directory.is_dir():
            directory.rmdir()
        os.replace(tmp, directory)
        return
    old = temporary_folder(directory)  # an empty folder of ours, replaced by the old index
    os.replace(directory, old)
    try:
        os.replace(tmp, directory)
    except BaseException:
        os.replace(old, directory)
        raise
    shutil.rmtree(old)


def open_index(directory: str | Path) -> SimilarityIndex:
    """Load an index directory written by :func:`build_index`."""
    faiss = require_faiss()
    directory = Path(directory)
    record = directory / "index.json"
    if not record.is_file():
        raise ConfigError(f"{directory}: not a gzmorph index (no index.json); build one with gzmorph similar --build")
    meta = json.loads(record.read_text())
    index = faiss.read_index(str(directory / "index.faiss"))
    items = pd.read_parquet(directory / "items.parquet")
    if index.ntotal != len(items):
        raise ConfigError(f"{directory}: index.faiss has {index.ntotal} vectors but items.parquet {len(items)} rows")
    return SimilarityIndex(directory, index, items, meta)
