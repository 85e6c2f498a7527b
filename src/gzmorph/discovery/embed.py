"""Embeddings: a network's invariant representation of every image, streamed to Parquet.

What is stored is the network's *pooled features before the head*
(``pooled_features`` of the networks):

* ``p4m`` / ``cyclic`` (:class:`~gzmorph.nn.symmetric.SymmetricNet`): the features
  averaged over space and over the 8 orientations of the dihedral group D4 (and over
  the 0- and 45-degree crops for ``p4m-2crop``; ``p4m`` reads the first crop only):
  exactly invariant to turns by 90 degrees and flips of the image.
* the paper's :class:`~gzmorph.nn.model.GalaxyNet`: the 16 viewpoints' conv features
  concatenated (``viewpoint_merge="concat"``, 8,192 numbers for ``paper``) or averaged
  (``"mean"``); turns by multiples of 45 degrees permute the viewpoints, so this is not
  invariant.

With test-time averaging (``tta``) the features are averaged over the views.

An :class:`EmbeddingJob` is a :class:`~gzmorph.inference.job.PredictionJob` whose
chunks hold vectors instead of answer probabilities: the same source, chunks, error
rows, part store, manifest and resume rule (:mod:`gzmorph.inference.parts`), so a killed
``embed`` resumes to the same bytes.  The output has the id, ``path`` and ``embedding``
(a fixed-size list of float32); its schema metadata ``gzmorph_embedding`` records the
model digest (:func:`gzmorph.inference.job.weights_digest`), TTA, which features, the
width and the PCA's digest: :func:`embedding_digest` is what an index checks.

PCA (optional, ``pca_dim``): fitted once, on up to ``pca_fit_rows`` images spread
evenly over the collection, before the job; stored as ``<out>.pca.npz`` (and reused
by a resumed job, or by another collection given ``pca=FILE``).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gzmorph.errors import CatalogError, ConfigError
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.ensemble import ModelSpec
from gzmorph.inference.job import PredictionJob, decode_workers, iter_batches, weights_digest
from gzmorph.inference.parts import PartStore, check_outputs, model_files
from gzmorph.inference.predict import run_local_to_file
from gzmorph.inference.summary import PredictSummary
from gzmorph.inference.table import error_table, id_arrow_type
from gzmorph.runtime import atomic_write, torch_threads

__all__ = ["EmbeddingJob", "Embeddings", "Pca", "embed_to_file", "read_embeddings", "embedding_digest",
           "pca_path", "feature_kind", "embed_images", "METADATA_KEY"]

METADATA_KEY = b"gzmorph_embedding"


def pca_path(out: str | Path) -> Path:
    """Where an embedding file keeps its PCA: ``<out>.pca.npz``."""
    out = Path(out)
    return out.with_name(out.name + ".pca.npz")


@dataclass(frozen=True)
class Pca:
    """A fitted PCA: ``(x - mean) @ components.T``, float32."""

    mean: np.ndarray  # (F,)
    components: np.ndarray  # (k, F)

    @property
    def digest(self) -> str:
        h = hashlib.sha1(np.ascontiguousarray(self.mean, np.float32).tobytes())
        h.update(np.ascontiguousarray(self.components, np.float32).tobytes())
        return h.hexdigest()

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) @ self.components.T).astype(np.float32)

    @classmethod
    def fit(cls, x: np.ndarray, k: int) -> "Pca":
        """Fit ``k`` components with scikit-learn (full SVD: deterministic, signs fixed)."""
        from sklearn.decomposition import PCA

        if k > min(x.shape):
            raise ConfigError(f"pca_dim={k} is more than the {min(x.shape)} that {x.shape[0]} vectors of width "
                              f"{x.shape[1]} allow; choose a smaller --pca-dim or fit on more images")
        fitted = PCA(n_components=k, svd_solver="full").fit(x.astype(np.float64))
        return cls(fitted.mean_.astype(np.float32), fitted.components_.astype(np.float32))

    def save(self, path: str | Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, mean=self.mean, components=self.components)

        atomic_write(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> "Pca":
        try:
            with np.load(path) as f:
                return cls(f["mean"].astype(np.float32), f["components"].astype(np.float32))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"{path}: not a PCA file written by gzmorph embed ({exc})") from None


def feature_kind(model: Any) -> str:
    """Which features :meth:`pooled_features` gives for this network (recorded in the file)."""
    cfg = getattr(model, "cfg", None)
    family = getattr(cfg, "family", None)
    if family in ("p4m", "cyclic"):
        return f"{family}: group-pooled features (invariant to 90-degree turns and flips)"
    merge = getattr(cfg, "viewpoint_merge", "concat")
    return f"galaxynet: viewpoint features, {merge} over the 16 viewpoints"


def embedding_digest(meta: dict[str, Any]) -> str:
    """What makes two embedding files comparable: the model's weights, TTA, features, PCA."""
    keys = ("model_weights", "tta", "which", "kind", "dim", "pca")
    return hashlib.sha1(json.dumps({k: meta.get(k) for k in keys}, sort_keys=True).encode()).hexdigest()


@dataclass
class EmbeddingJob(PredictionJob):
    """A prediction job whose chunks hold the network's pooled features (one model)."""

    pca: Pca | None = None

    @classmethod
    def open_embedding(cls, model: ModelSpec, source: Any, config: PredictConfig, pca: Pca | None = None
                       ) -> "EmbeddingJob":
        if isinstance(model, (list, tuple)):
            if len(model) != 1:
                raise ConfigError(f"embed takes one model (an embedding is one network's), got {len(model)}")
            model = model[0]
        job = PredictionJob.open(model, source, config, layout="parquet")
        return cls(job.ensemble, job.source, job.config, job.thresholds, job.layout, pca=pca)

    @property
    def meta(self) -> dict[str, Any]:
        """The ``gzmorph_embedding`` record of the output (without the width before PCA is known)."""
        run = self.ensemble.runs[0]
        return {"model": self.ensemble.names[0], "model_weights": weights_digest(run.model),
                "tta": self.config.tta, "which": self.config.which, "kind": feature_kind(run.model),
                "pca": None if self.pca is None else self.pca.digest,
                "dim": None if self.pca is None else int(self.pca.components.shape[0]),
                "image_size": self.image_size, "id_column": self.source.catalog.id_column}

    def manifest(self) -> dict[str, Any]:
        return {**super().manifest(), "layout": "embedding", "embedding": self.meta}

    @property
    def columns(self) -> list[str]:
        return ["path", "embedding"]

    def vectors(self, images: np.ndarray, geometry: np.ndarray | None) -> np.ndarray:
        """``(B, F)`` float32 features of a uint8 batch ``(B, S, S, 3)``, after the PCA if any."""
        x = self.ensemble.predict_runs(images, geometry, features=True)[0]  # (1, B, F) -> (B, F)
        return x if self.pca is None else self.pca.transform(x)

    def compute_chunk(self, k: int, items: Iterator[Any],
                      progress: Callable[[int], Any] | None = None) -> tuple[pa.Table, pa.Table]:
        """The embedding rows and error rows of chunk ``k`` (a non-finite vector is an error row)."""
        cat = self.source.catalog
        ok_rows: list[int] = []
        vecs: list[np.ndarray] = []
        failed: list[tuple[int, str]] = []
        for rows, images, failures, geometry in iter_batches(items, len(self.rows(k)), self.config.batch_size):
            if images is not None:
                x = self.vectors(images, geometry)
                finite = np.isfinite(x).all(axis=1)
                vecs.append(x[finite])
                ok_rows += [r for r, f in zip(rows, finite) if f]
                failed += [(r, "non-finite embedding (NaN or inf features)") for r, f in zip(rows, finite) if not f]
            failed += failures
            if progress is not None:
                progress(len(rows) + len(failures))
        ok = np.asarray(ok_rows, dtype=np.int64)
        dim = vecs[0].shape[1] if vecs else 0
        flat = np.concatenate(vecs).reshape(-1) if vecs else np.zeros(0, np.float32)  # (N, F) -> (N * F,)
        table = pa.table({cat.id_column: pa.array(cat.ids[ok], id_arrow_type(cat.ids)),
                          "path": pa.array([str(p) for p in cat.paths[ok]], pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), dim)})
        bad = np.asarray(sorted(r for r, _ in failed), dtype=np.int64)
        reasons = dict(failed)
        errors = error_table(cat.ids[bad], cat.paths[bad], [reasons[r] for r in bad], cat.id_column,
                             id_arrow_type(cat.ids))
        return table, errors

    def fit_pca(self, k: int, n_fit: int) -> Pca:
        """Fit the PCA on up to ``n_fit`` images spread evenly over the collection."""
        rows = np.unique(np.linspace(0, self.n - 1, min(n_fit, self.n)).round().astype(np.int64))
        stream = self.source.stream(rows, self.image_size, decode_workers(self.config, self.ensemble.runtime),
                                    recentre=self.ensemble.recentre)
        saved, self.pca = self.pca, None
        feats = [self.vectors(images, geometry) for _, images, _, geometry
                 in iter_batches(stream, len(rows), self.config.batch_size) if images is not None]
        self.pca = saved
        x = np.concatenate(feats) if feats else np.zeros((0, 0), np.float32)
        x = x[np.isfinite(x).all(axis=1)]
        return Pca.fit(x, k)


class _Metadata:
    """What :meth:`PartStore.assemble` adds to the Parquet schema: the embedding record."""

    kept_names: list[str] = []

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta

    def table(self, table: pa.Table) -> pa.Table:
        return table

    def schema(self, schema: pa.Schema) -> pa.Schema:
        return schema.with_metadata({METADATA_KEY: json.dumps(self.meta, sort_keys=True).encode()})


def embed_to_file(model: ModelSpec, source: Any, out: str | Path, *, config: PredictConfig | None = None,
                  pca_dim: int | None = None, pca: str | Path | None = None, pca_fit_rows: int = 20000,
                  resume: bool = False, ray_config: Any = None, **options: Any) -> PredictSummary:
    """Embed every image of ``source`` into the Parquet file ``out``, streaming, resumable.

    Parameters
    ----------
    model : run directory, model package or TrainedModel
        One network with a feature layer (not an ``.onnx`` file).
    source : folder, catalogue, cutouts folder, Kaggle directory or cache
        As for :func:`gzmorph.inference.predict.predict_to_file`.
    out : path
        ``.parquet``: id, ``path``, ``embedding``; failed images in ``<out>.errors.csv``.
    config : PredictConfig, optional
        Or its fields as keyword ``options`` (``tta``, ``batch_size``, ``device``...).
    pca_dim : int, optional
        Reduce to this many dimensions with a PCA fitted once (``<out>.pca.npz``).
    pca : path, optional
        Use a stored PCA (another embedding's ``.pca.npz``) instead of fitting one.
    pca_fit_rows : int
        Images the PCA is fitted on (evenly spread).
    resume : bool
        Keep the chunks (and the PCA) of an interrupted run of the same job.
    ray_config : RayConfig, optional
        Compute the chunks on a Ray cluster (:func:`gzmorph.inference.ray.ray_executor`,
        ``pip install 'gzmorph[ray]'``); this process fits the PCA and writes the same
        file as without Ray, so either may resume the other's interrupted job.
    """
    cfg = config or PredictConfig(**options)
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".pq"):
        raise ConfigError(f"embedding output {out}: must be a .parquet file")
    if pca_dim is not None and (pca_dim < 1 or pca is not None):
        raise ConfigError("give either pca_dim (a positive number of dimensions) or a stored pca file, not both")
    stored = pca_path(out)
    check_outputs(out, [source, pca, *model_files(model)])
    execute = None
    if ray_config is not None:  # imported only when asked: Ray is an optional extra
        from gzmorph.inference.ray import ray_executor

        execute = ray_executor(ray_config)
    t0 = time.monotonic()
    job = EmbeddingJob.open_embedding(model, source, cfg)
    if pca is not None:
        job.pca = Pca.load(pca)
    elif pca_dim is not None:
        with torch_threads(cfg.threads):
            job.pca = Pca.load(stored) if resume and stored.is_file() else job.fit_pca(pca_dim, pca_fit_rows)
    if job.pca is not None and Path(pca or "") != stored:
        job.pca.save(stored)

    def metadata(store: PartStore) -> _Metadata:
        meta = job.meta
        if isinstance(source, (str, Path)):  # the collection, an input an index's outputs must never replace
            meta["source"] = str(Path(source).resolve())
        if meta["dim"] is None:
            meta["dim"] = pq.read_schema(store.part_path(0)).field("embedding").type.list_size
        meta["digest"] = embedding_digest(meta)
        return _Metadata(meta)

    return run_local_to_file(job, out, job.manifest(), cfg, resume=resume, t0=t0, desc="embed", extras=metadata,
                             execute=execute)


@dataclass
class Embeddings:
    """An embedding file in memory: ids, image paths, vectors ``(N, F)`` float32 and the record."""

    ids: np.ndarray
    paths: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any]
    source: Path

    @property
    def digest(self) -> str:
        return self.meta["digest"]


def read_embeddings(path: str | Path) -> Embeddings:
    """Read a file written by :func:`embed_to_file`; refuse other files and NaN vectors."""
    path = Path(path)
    if not path.is_file():
        raise CatalogError(f"{path}: no such embedding file")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise CatalogError(f"{path}: not a Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or "embedding" not in table.column_names:
        raise CatalogError(f"{path}: not an embedding file of gzmorph embed (no {METADATA_KEY.decode()} record)")
    meta = json.loads(raw)
    id_column = meta["id_column"]
    col = table.column("embedding").combine_chunks()
    n, dim = table.num_rows, meta["dim"]
    vectors = col.flatten().to_numpy(zero_copy_only=False).reshape(n, dim) if n else np.zeros((0, dim), np.float32)
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    ids = table.column(id_column).to_numpy(zero_copy_only=False)
    if len(bad):
        raise CatalogError(f"{path}: row {bad[0]} ({id_column} {ids[bad[0]]}) has a NaN or infinite vector "
                           f"({len(bad)} such rows); re-embed those images")
    return Embeddings(ids, table.column("path").to_numpy(zero_copy_only=False), vectors.astype(np.float32),
                      meta, path)


def embed_images(model: ModelSpec, images: np.ndarray, *, pca: Pca | None = None,
                 config: PredictConfig | None = None, **options: Any) -> np.ndarray:
    """Vectors ``(B, F)`` of uint8 images ``(B, S, S, 3)`` in memory (no recentring), as :func:`embed_to_file`."""
    from gzmorph.inference.ensemble import Ensemble
    from gzmorph.inference.job import prediction_runtime

    cfg = config or PredictConfig(**options)
    ensemble = Ensemble.load(model, prediction_runtime(cfg), cfg.tta, which=cfg.which, recentre=False)
    x = ensemble.predict_runs(np.asarray(images, np.uint8), None, features=True)[0]  # (B, F)
    return x if pca is None else pca.transform(x)

