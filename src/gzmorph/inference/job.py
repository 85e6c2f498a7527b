"""One prediction job: what it reads, how it is cut into chunks, what each chunk writes.

A :class:`PredictionJob` holds the :class:`~gzmorph.inference.ensemble.Ensemble`, the
:class:`~gzmorph.data.source.Source` (catalog, pixels, FITS composite and recentring
options, and for a cache its own tree) and the :class:`PredictConfig`.  The inputs are
cut into *chunks* of ``chunk_rows`` consecutive rows; :meth:`PredictionJob.compute_chunk`
turns the decoded items of one chunk into its two tables: the prediction rows
(:func:`gzmorph.inference.table.prediction_table`, NaN for answers the runs never
learned, plus ``recentred`` when recentring) and the error rows (id, path, reason).
Batches never straddle a chunk, so a chunk's rows do not depend on which chunks were
computed before it, where, or whether the job was interrupted.

The executors only decide where chunks are computed:
:func:`gzmorph.inference.predict.predict_to_file` runs them in this process
(:meth:`PredictionJob.run_local`), :func:`gzmorph.inference.ray.predict_ray` on Ray
actors; both call :meth:`~PredictionJob.compute_chunk`, keep finished chunks in a
:class:`~gzmorph.inference.parts.PartStore` under the job's :meth:`~PredictionJob.manifest`
(the resume rule: a rerun must present the same manifest) and end with the job's
:meth:`~PredictionJob.summary`.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa

from gzmorph.data.composite import Stretch, require_survey_extra
from gzmorph.data.decode import DecodeOptions, Item
from gzmorph.data.pixscale import scale_column
from gzmorph.data.prefetch import prefetch
from gzmorph.data.source import Source, open_source
from gzmorph.errors import CatalogError
from gzmorph.inference.calibrator import Calibration, calibration_for
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.ensemble import Ensemble, ModelSpec
from gzmorph.inference.summary import PredictSummary
from gzmorph.inference.table import (DEFAULT_THRESHOLD, REACH_THRESHOLD, error_table, id_arrow_type,
                                     load_thresholds, prediction_table)
from gzmorph.runtime import Runtime, cpu_cores, resolve_device
from gzmorph.tree import Tree

__all__ = ["PredictConfig", "PredictionJob", "decode_workers", "prediction_runtime", "prediction_threads",
           "resolve_thresholds",
           "decode_options", "iter_batches", "job_manifest", "weights_digest", "ids_digest", "MANIFEST_VERSION"]

MANIFEST_VERSION = 3  # 3: models identified by the content of their weights
# (rows, images (B, S, S, 3), failures, geometry (B, 4) or None)
Batch = tuple[list[int], "np.ndarray | None", list[tuple[int, str]], "np.ndarray | None"]


# ------------------------------------------------------------------ settings of a job
def decode_workers(cfg: PredictConfig, rt: Runtime) -> int | None:
    """Decoding processes: ``cfg.workers``, or automatic.

    When the network runs on a CPU of at most 4 cores, decoding (~2,000 img/s per core)
    costs a small fraction of the forward pass, and decode processes only take cores
    from torch's threads: decode in this process.  Item on 2 cores with the small
    network: 338 img/s in-process against 259 img/s with 2 decode processes.
    """
    if cfg.workers is not None:
        return cfg.workers
    return 0 if rt.device.type == "cpu" and cpu_cores() <= 4 else None


def prediction_runtime(cfg: PredictConfig) -> Runtime:
    """The device and speed paths (autocast, channels_last) of a prediction job.

    Each run's precision is then decided by :mod:`gzmorph.inference.precision` (the
    ensemble's ``bf16``); ``autocast`` here is the one of callers that do not (embedding).
    """
    runtime = resolve_device(cfg.device, fast=cfg.precision != "fp32", precision=cfg.precision)
    if cfg.precision == "bf16" and not runtime.channels_last:
        # Runtime keeps channels_last to CUDA by default; here the user asked for bf16 explicitly.
        runtime = Runtime(device=runtime.device, autocast=True, channels_last=True)
    return runtime


def prediction_threads(cfg: PredictConfig, rt: Runtime, workers: int | None) -> int | None:
    """torch threads of a job: ``cfg.threads``, or on a small CPU the cores the decoding thread leaves.

    When images are decoded in this process (``workers == 0``) they are decoded in a
    thread beside the network (:func:`gzmorph.data.prefetch.prefetch`), and the network
    gets the other cores.  Measured on 2 cores with ``p4m`` (BENCHMARKS.md, "CPU
    throughput"): one pass, 835 img/s with one torch thread against 743 with two;
    ``--tta rot`` on an idle machine 234 against 324, but on a loaded one about 137
    against 53 (spinning OpenMP threads lose most when the cores are shared), so the
    robust choice is kept.  ``None`` leaves torch's setting.
    """
    if cfg.threads is not None:
        return cfg.threads
    if rt.device.type == "cpu" and workers == 0:
        return max(1, cpu_cores() - 1)
    return None


def resolve_thresholds(spec: str | Path | dict | None, tree: Tree) -> dict[str, float]:
    """Triage thresholds for every question of ``tree``, warning about defaulted ones."""
    thresholds, defaulted = load_thresholds(spec, tree)
    if spec is not None and defaulted:
        where = f" in {spec}" if isinstance(spec, (str, Path)) else ""
        warnings.warn(f"the triage thresholds{where} have no value for "
                      f"{', '.join(defaulted)} (no labels when they were fitted?): using the default "
                      f"{DEFAULT_THRESHOLD} for them", stacklevel=3)
    return thresholds


def decode_options(ensemble: Ensemble, cfg: PredictConfig) -> DecodeOptions:
    """FITS composite (given, else the runs') and recentring (given, else the runs') of a job."""
    stretch = cfg.stretch
    if stretch is None:
        stored = [run.stretch for run in ensemble.runs if run.stretch]
        stretch = Stretch.from_dict(stored[0]) if stored else None
    options = DecodeOptions(stretch, ensemble.recentre)
    if cfg.pixel_scale is not None:  # the zoom of each image's field over the runs' (data/pixscale.py)
        options = replace(options, pixel_scale=cfg.pixel_scale, model_field=ensemble.field)
    if options.stretch is not None or options.recentre:
        require_survey_extra()
    return options


def trained_mask(ensemble: Ensemble, layout: str) -> np.ndarray | None:
    """The trained-answer mask of an output (None: all trained, or a Kaggle CSV).

    The Kaggle CSV format needs every number, so it keeps them, with this warning and
    the list in the manifest; every Parquet output (one file, Ray parts, in memory)
    makes them NaN, with no triage decision.
    """
    untrained = ensemble.untrained_columns
    if not untrained:
        return None
    questions = [q.name for q in ensemble.tree.questions if set(q.columns) & set(untrained)]
    what = ("kept in the CSV (the Kaggle format needs them) but meaningless" if layout == "csv"
            else "written as NaN, with no triage decision")
    warnings.warn(f"the model was never trained on {len(untrained)} answer column(s) of {', '.join(questions)} "
                  f"({', '.join(untrained)}): {what}; listed under 'untrained' in the manifest", stacklevel=4)
    return None if layout == "csv" else ensemble.trained


# ------------------------------------------------------------------ manifest
def weights_digest(model: Any) -> str:
    """SHA-1 of a network's parameters and buffers (names, dtypes, shapes, bytes).

    Identifies a model by what it computes, not by its run path and step: a run
    whose checkpoint was replaced by another one of the same step gets another digest.
    """
    import torch

    if callable(getattr(model, "weights_digest", None)):  # an ONNX network: the digest of its file
        return model.weights_digest()
    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def ids_digest(ids: np.ndarray) -> str:
    """A digest of the input ids, to recognise the same inputs when a job resumes."""
    digest = hashlib.sha1()
    for start in range(0, len(ids), 65536):
        digest.update("\n".join(map(str, ids[start : start + 65536])).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def job_manifest(ensemble: Any, cfg: Any, catalog: Any, thresholds: dict[str, float], image_size: int,
                 layout: str) -> dict[str, Any]:
    """Everything the output bytes depend on; a resumed job must present the same.

    ``layout`` is the output's shape (``"csv"``, ``"parquet"`` or ``"ray-parts"``).
    """
    return json.loads(json.dumps({
        "version": MANIFEST_VERSION, "layout": layout, "models": ensemble.names,
        "steps": [run.step for run in ensemble.runs],
        "model_weights": [weights_digest(run.model) for run in ensemble.runs],
        "untrained": list(getattr(ensemble, "untrained_columns", [])), "weights": ensemble.weights.tolist(),
        "tta": cfg.tta, "tta_transforms": getattr(ensemble, "run_transforms", None), "which": cfg.which, "precision": cfg.precision, "thresholds": dict(thresholds),
        "reach_threshold": REACH_THRESHOLD, "n_inputs": len(catalog), "ids": ids_digest(catalog.ids),
        "id_column": catalog.id_column, "image_size": image_size, "batch_size": cfg.batch_size,
        "chunk_rows": cfg.chunk_rows, "recentre": list(getattr(ensemble, "recentred", [])),
        "stretch": None if getattr(cfg, "stretch", None) is None else cfg.stretch.to_dict()}, default=str))


# ------------------------------------------------------------------ batches
def iter_batches(stream: Iterator[Item], count: int, batch_size: int) -> Iterator[Batch]:
    """Take ``count`` items from ``stream``: yield ``(rows, images, failures, geometry)`` batches."""
    rows: list[int] = []
    images: list[np.ndarray] = []
    geometry: list[np.ndarray | None] = []
    failures: list[tuple[int, str]] = []

    def stacked() -> np.ndarray | None:
        return None if not geometry or geometry[0] is None else np.stack(geometry)  # (B, 4)

    for _ in range(count):
        row, image, reason, geom = next(stream)
        if image is None:
            failures.append((row, reason or "unknown error"))
        else:
            rows.append(row)
            images.append(image)
            geometry.append(geom)
        if len(images) == batch_size:
            yield rows, np.stack(images), failures, stacked()  # (B, S, S, 3)
            rows, images, failures, geometry = [], [], [], []
    if images or failures:
        yield rows, (np.stack(images) if images else None), failures, stacked()


# ------------------------------------------------------------------ the job
@dataclass
class PredictionJob:
    """A prediction job: the ensemble, the source it reads and how.

    Build one with :meth:`open`.  Picklable (the Ray executor ships it to its actors):
    a cache source travels as its path and is reopened, with its own tree.

    Attributes
    ----------
    ensemble : Ensemble
    source : Source
        Catalog and pixels, with the job's :func:`decode_options`.
    config : PredictConfig
    thresholds : dict
        Triage threshold of every question.
    layout : {"csv", "parquet", "ray-parts", "memory"}
        The output's shape: it decides the trained-answer mask (NaN except in CSV).
    trained : ndarray of bool or None
        Answers the runs learned (the others are NaN), or None for every answer.
    calibration : Calibration or None
        Applied to every chunk (:mod:`gzmorph.inference.calibrator`): calibrated
        fractions, intervals, ``Qn_p_correct`` triage.
    adapted : dict or None
        With ``adapt_bn``, after :meth:`adapt`: what the runs' BatchNorm statistics were
        re-estimated on (:mod:`gzmorph.inference.adapt`), for the manifest and summary.
    """

    ensemble: Ensemble
    source: Source
    config: PredictConfig
    thresholds: dict[str, float]
    layout: str
    trained: np.ndarray | None = None
    calibration: Calibration | None = None
    adapted: dict[str, Any] | None = None

    @classmethod
    def open(cls, models: ModelSpec | Sequence[ModelSpec], source: Any, config: PredictConfig,
             weights: Sequence[float] | str | Path | None = None, triage_thresholds: str | Path | dict | None = None,
             layout: str = "memory", runtime: Runtime | None = None) -> "PredictionJob":
        """Load the models and open the source; ``runtime`` defaults to the config's device."""
        runtime_here = runtime or prediction_runtime(config)
        cfg = config.for_device(runtime_here.device.type)  # the batch size, when not given
        if cfg.adapt_bn:  # adaptation changes the networks' statistics: never those of a caller's loaded runs
            from gzmorph.inference.adapt import own_copies

            models = own_copies(models)
        ensemble = Ensemble.load(models, runtime_here, cfg.tta, weights, cfg.which,
                                 cfg.compile and runtime is None, cfg.recentre, cfg.pixel_scale is not None,
                                 precision=cfg.precision)
        # A missing image is an error row like an unreadable one, not a reason to stop.
        src = open_source(source, tree=ensemble.tree, split=cfg.split, id_column=cfg.id_column,
                          path_column=cfg.path_column, require_images=False,
                          options=decode_options(ensemble, cfg))
        if len(src.catalog) == 0:
            raise CatalogError(f"{source}: no images to predict")
        if cfg.pixel_scale is not None and src.cache is not None:
            raise CatalogError(f"{source}: a cache holds resized pixels without their native side: predict the "
                               "image files to use a pixel scale")
        calibration = calibration_for([run.run_dir for run in ensemble.runs], cfg.calibration, ensemble.tree)
        spec = triage_thresholds if calibration is None else calibration.thresholds_spec(triage_thresholds)
        thresholds = resolve_thresholds(spec, ensemble.tree)
        return cls(ensemble, src, cfg, thresholds, layout, trained_mask(ensemble, layout), calibration)

    def on(self, runtime: Runtime) -> "PredictionJob":
        """The same job with its networks on ``runtime`` (a Ray actor's device), compiled if asked."""
        for run in self.ensemble.runs:
            run.model.to(runtime.device).eval()
        ensemble = Ensemble(self.ensemble.runs, runtime, self.config.tta, self.ensemble.weights,
                            self.config.compile, self.config.recentre, self.ensemble.rescale,
                            precision=self.config.precision)
        return replace(self, ensemble=ensemble)  # keeps a subclass's own fields (an embedding's PCA), adapted

    def adapt(self, stats_file: Path | None = None, reuse: bool = False) -> None:
        """With ``config.adapt_bn``: re-estimate the runs' BatchNorm statistics once, before any chunk.

        ``stats_file`` keeps them (``<out>.adapt_bn.pt``); ``reuse`` (resume) loads an
        existing one instead (:func:`gzmorph.inference.adapt.adapt_job`).  The fused
        prediction forms are then rebuilt from the adapted networks.
        """
        from gzmorph.inference.adapt import adapt_job

        self.adapted = adapt_job(self, stats_file, reuse)
        if self.adapted is not None:
            self.ensemble.refresh()

    # -------------------------------------------------------------- chunks
    @property
    def n(self) -> int:
        return len(self.source.catalog)

    @property
    def n_chunks(self) -> int:
        return -(-self.n // self.config.chunk_rows)

    @property
    def image_size(self) -> int:
        """Side the images are decoded at (a cache's own size)."""
        return self.source.size or self.ensemble.image_size

    @property
    def columns(self) -> list[str]:
        """The columns of the CSV output after the id: answers, their intervals when calibrated, then
        ``recentred`` when recentring."""
        tree = self.ensemble.tree
        intervals = [f"{c}{s}" for c in tree.columns for s in ("_lo", "_hi")] if self.calibration else []
        return [*tree.columns, *intervals, *(["recentred"] if self.ensemble.recentre else [])]

    def rows(self, k: int) -> np.ndarray:
        """The catalog rows of chunk ``k``."""
        return np.arange(k * self.config.chunk_rows, min((k + 1) * self.config.chunk_rows, self.n))

    def chunk_ids(self, k: int) -> np.ndarray:
        return self.source.catalog.ids[self.rows(k)]

    def todo(self, done: set[int]) -> list[int]:
        """The chunks not in ``done``, in order."""
        return [k for k in range(self.n_chunks) if k not in done]

    def count(self, chunks: Sequence[int]) -> int:
        """Inputs of ``chunks``."""
        return sum(len(self.rows(k)) for k in chunks)

    def manifest(self) -> dict[str, Any]:
        """:func:`job_manifest` of this job."""
        manifest = job_manifest(self.ensemble, self.config, self.source.catalog, self.thresholds, self.image_size,
                                self.layout)
        if self.calibration is not None:  # resumed parts must be calibrated alike
            manifest.update(calibration=self.calibration.to_dict(), interval_level=self.config.interval_level)
        if self.config.pixel_scale is not None:  # absent when off, so older records still match
            manifest.update(pixel_scale=self.config.pixel_scale, model_field=self.ensemble.field)
        if scale_column(self.config.pixel_scale) is not None:  # resumed rows must have had the same values
            manifest.update(pixel_scales=ids_digest(self.source.catalog.pixel_scales))
        if self.adapted is not None:  # model_weights above already hold the adapted statistics
            manifest.update(adapt_bn=self.adapted)
        return manifest

    def stream(self, chunks: Sequence[int], workers: int | None) -> Iterator[Item]:
        """Decoded items ``(row, image, reason, geometry)`` of ``chunks``, in order."""
        rows = np.concatenate([self.rows(k) for k in chunks]) if chunks else np.zeros(0, np.int64)
        return self.source.stream(rows, self.image_size, workers, recentre=self.ensemble.recentre)

    def decoded(self, chunks: Sequence[int], workers: int | None) -> Iterator[Item]:
        """:meth:`stream`, decoded ahead in a thread while the network runs (both executors).

        At most ``4 * 32`` items wait decoded (:func:`~gzmorph.data.prefetch.prefetch`).
        """
        return prefetch(self.stream(chunks, workers), depth=4, group=32, stopwatch=self.ensemble.stopwatch)

    # -------------------------------------------------------------- one chunk
    def compute_chunk(self, k: int, items: Iterator[Item],
                      progress: Callable[[int], Any] | None = None) -> tuple[pa.Table, pa.Table]:
        """The prediction rows and the error rows of chunk ``k``.

        ``items`` yields the chunk's decoded items first (it may go on with the next
        chunks'); ``progress`` is called with the inputs done after every batch.
        """
        ensemble = self.ensemble
        ok_rows: list[int] = []
        probs: list[np.ndarray] = []
        found: list[np.ndarray] = []
        failed: list[tuple[int, str]] = []
        for rows, images, failures, geometry in iter_batches(items, len(self.rows(k)), self.config.batch_size):
            if images is not None:
                p, why = ensemble.predict_checked(images, geometry)
                good = why == ""  # outputs that are not probabilities become error rows
                probs.append(p[good])
                ok_rows += [r for r, g in zip(rows, good) if g]
                failed += [(r, w) for r, w in zip(rows, why) if w]
                if geometry is not None:
                    found.append(geometry[good, 3] > 0)
            failed += failures
            if progress is not None:
                progress(len(rows) + len(failures))
        with ensemble.stopwatch("table"):
            return self._tables(ok_rows, probs, found, failed)

    def _tables(self, ok_rows: list[int], probs: list[np.ndarray], found: list[np.ndarray],
                failed: list[tuple[int, str]]) -> tuple[pa.Table, pa.Table]:
        """A chunk's prediction table and error table from its batches' results."""
        cat, ensemble = self.source.catalog, self.ensemble
        ok = np.asarray(ok_rows, dtype=np.int64)
        table = prediction_table(cat.ids[ok], np.concatenate(probs) if probs else
                                 np.zeros((0, ensemble.tree.n_answers), np.float32),
                                 ensemble.tree, self.thresholds, cat.id_column, trained=self.trained,
                                 calibration=self.calibration, level=self.config.interval_level)
        if ensemble.recentre:  # False: no galaxy found, the plain centre crop was used
            table = table.append_column("recentred", pa.array(np.concatenate(found) if found else
                                                              np.zeros(0, dtype=bool), pa.bool_()))
        bad = np.asarray([r for r, _ in failed], dtype=np.int64)
        errors = error_table(cat.ids[bad], cat.paths[bad], [reason for _, reason in failed], cat.id_column,
                             id_arrow_type(cat.ids))
        return table, errors

    def run_local(self, chunks: Sequence[int], sink: Callable[[int, pa.Table, pa.Table], Any],
                  progress: Callable[[int], Any] | None = None) -> None:
        """The local executor: compute ``chunks`` in this process, in order, handing each to ``sink``.

        One decoding stream runs through all the chunks, so decoding processes never
        wait at a chunk boundary, and it runs ahead of the network (:meth:`decoded`).
        The caller sets the torch threads (:func:`prediction_threads`).
        """
        stream = self.decoded(chunks, decode_workers(self.config, self.ensemble.runtime))
        try:
            for k in chunks:
                tables = self.compute_chunk(k, stream, progress)
                with self.ensemble.stopwatch("write"):
                    sink(k, *tables)
        finally:
            stream.close()  # stops the decoding thread at once, also when a chunk failed

    # -------------------------------------------------------------- summary
    def summary(self, out: Path, errors_file: Path, n_predicted: int, n_failed: int, n_resumed: int,
                seconds: float, kind: type[PredictSummary] = PredictSummary) -> PredictSummary:
        """What the job did; with recentring, counts the rows of ``out`` that kept the centre crop."""
        cat = self.source.catalog
        summary = kind(out, errors_file, self.n, n_predicted, n_failed, n_resumed, seconds, cat.id_column,
                       cat.ids.dtype.kind in "iu")
        if self.ensemble.recentre:
            summary.n_not_recentred = summary.count_not_recentred()
        if self.adapted is not None:
            summary.n_adapted = self.adapted["n_images"]
        return summary
