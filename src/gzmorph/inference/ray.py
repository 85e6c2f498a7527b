"""Catalog-scale prediction on a Ray cluster (the optional extra ``gzmorph[ray]``).

The job of :func:`gzmorph.inference.predict.predict_to_file`, spread over a cluster with Ray Data.
The driver opens the catalog and cuts it into *partitions* of ``chunk_rows``
consecutive rows.  The rows of the partitions not written yet go through CPU tasks
that decode the images (:func:`gzmorph.data.images.iter_decoded`; an undecodable image
becomes a row with a failure reason, never a failed task), then through a pool of
model actors (one per GPU, fractions allowed, or CPU actors) running the
:class:`~gzmorph.inference.ensemble.Ensemble`, TTA included.  Only row numbers, probabilities
and reasons come back to the driver, which writes each partition as soon as all its
rows are back, with :func:`gzmorph.inference.table.prediction_table` (the columns of the
single-machine Parquet output).  So the output lives on the driver's file system,
while the images and the installed package must be visible to every node (the
models travel to the actors through Ray's object store).

Output layout (``pandas.read_parquet(out)`` reads the predictions in input order)::

    out/_manifest.json             settings the parts depend on ("_": Parquet readers skip it)
    out/part-000000.parquet        predictions of partition 0
    <out>.errors/part-000003.parquet
                                   id, path, reason of partition 3's undecodable images

A partition's prediction part is written last, atomically: the parts present are the
finished partitions.  The resume rule is the single-machine one
(:mod:`gzmorph.inference.parts`): a rerun with ``resume`` computes only the others and
refuses other settings (models, TTA, thresholds, inputs...); without it the job starts over.
"""

from __future__ import annotations

import functools
import time
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from gzmorph.errors import CatalogError, ConfigError, MissingExtraError, OutputError
from gzmorph import config
from gzmorph.data.catalog import Catalog
from gzmorph.data.source import Source, decode_rows, open_source
from gzmorph.inference.ensemble import Ensemble, ModelSpec
from gzmorph.inference.parts import PartStore, chunk_error_table, job_manifest
from gzmorph.inference.calibrator import calibration_for
from gzmorph.inference.table import RaySummary, prediction_table
from gzmorph.inference.predict import PredictConfig, prediction_runtime, resolve_thresholds
from gzmorph.training.rundir import TrainedModel
from gzmorph.runtime import resolve_device
from gzmorph.tree import Tree

__all__ = ["RayConfig", "RaySummary", "predict_ray", "ray_errors_dir", "INSTALL_HINT"]


def ray_errors_dir(out: str | Path) -> Path:
    """The error side directory of a Ray output directory: ``<out>.errors/`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".errors")

INSTALL_HINT = "Ray is not installed: pip install 'gzmorph[ray]' (or pip install 'ray[data]')"


@dataclass(frozen=True)
class RayConfig:
    """Where and with which resources a Ray prediction job runs.

    Parameters
    ----------
    address : str or None
        Cluster to connect to (``"auto"``, ``"HEAD_IP:6379"``, ``"ray://HEAD_IP:10001"``);
        ``None``: ``RAY_ADDRESS``, else a cluster started on this machine with
        ``ray start``, else a new local one.  Ignored when Ray is already initialised
        in this process.
    actors : int or None
        Model actors.  ``None``: one per ``gpus_per_actor`` GPUs of the cluster, or
        for CPU actors enough to use half the cluster's CPUs (the other half decodes).
    gpus_per_actor : float or None
        GPUs of each actor (fractions share a GPU); ``0``: CPU actors.  ``None``: 1
        when the cluster has GPUs, else 0.
    cpus_per_actor : float
        CPUs reserved by each actor; CPU actors use as many torch threads (at least one)
        unless :attr:`PredictConfig.threads` says otherwise.
    block_rows : int
        Rows per decoding task (the unit of work of the CPU stage).
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0
    block_rows: int = 256

    def __post_init__(self) -> None:
        if self.actors is not None and self.actors < 1:
            raise ValueError(f"actors must be >= 1 or None, got {self.actors}")
        gpus = self.gpus_per_actor
        if gpus is not None and not 0 <= gpus:
            raise ValueError(f"gpus_per_actor must be >= 0 or None, got {gpus}")
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            raise ValueError(f"gpus_per_actor above 1 must be a whole number (Ray's rule), got {gpus}")
        if self.cpus_per_actor < 0:
            raise ValueError(f"cpus_per_actor must be >= 0, got {self.cpus_per_actor}")
        if self.block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {self.block_rows}")

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RayConfig":
        return config.from_dict(cls, data)


@functools.lru_cache(maxsize=4)
def _cache_source(root: str) -> Source:
    # Opened once per worker process, not once per block.
    return open_source(root)


def decode_block(batch: dict[str, np.ndarray], size: int, cache: str | None = None) -> dict[str, np.ndarray]:
    """Ray task: decode (or read from a cache) the images of a block of rows.

    Parameters
    ----------
    batch : dict
        ``row`` (int64) and ``path`` (str or None) columns.
    size : int
        Decoded side in pixels.
    cache : str, optional
        A cache directory (``gzmorph prepare``) the rows are read from instead of the
        image files; every node must see it.

    Returns
    -------
    dict
        ``row``; ``image`` uint8 ``(B, size, size, 3)`` (zeros where decoding failed);
        ``reason`` (``""`` where it worked).
    """
    rows = np.asarray(batch["row"], dtype=np.int64)
    images = np.zeros((len(rows), size, size, 3), dtype=np.uint8)
    reasons = np.full(len(rows), "", dtype=object)
    if cache is not None:
        items = _cache_source(cache).stream(rows, size)
    else:
        paths = [None if p is None or (isinstance(p, float) and np.isnan(p)) else str(p) for p in batch["path"]]
        items = decode_rows(paths, rows, size, workers=0)
    for i, (_, image, reason) in enumerate(items):
        if image is None:
            reasons[i] = reason or "unknown error"
        else:
            images[i] = image
    return {"row": rows, "image": images, "reason": reasons}


class ModelActor:
    """Ray actor: the ensemble on this actor's device, applied to decoded batches.

    Parameters
    ----------
    runs : list of TrainedModel
        Loaded on the CPU by the driver; moved to the actor's device here.
    weights : list of float
        Normalised ensemble weights.
    config : PredictConfig
        TTA, device (``"cuda"`` for actors that reserved a GPU, else ``"cpu"``) and precision.
    threads : int
        torch intra-op threads (CPU actors).
    """

    def __init__(self, runs: list[TrainedModel], weights: list[float], config: PredictConfig, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.ensemble = Ensemble.load(runs, prediction_runtime(config), config.tta, weights,
                                      compile=config.compile)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        reasons = np.asarray(batch["reason"], dtype=object)
        ok = reasons == ""
        probs = np.full((len(reasons), self.ensemble.tree.n_answers), np.nan, dtype=np.float32)
        if ok.any():
            probs[ok] = self.ensemble(batch["image"][ok])  # boolean indexing copies: writable for torch
        return {"row": np.asarray(batch["row"], dtype=np.int64), "probs": probs, "reason": reasons}


# ------------------------------------------------------------------ driver side
class _Assembler:
    """Collect the rows coming back from the actors; write each partition once complete."""

    def __init__(self, catalog: Catalog, todo: Sequence[int], chunk_rows: int, tree: Tree,
                 thresholds: Mapping[str, float], store: PartStore) -> None:
        self.catalog, self.chunk_rows, self.tree = catalog, chunk_rows, tree
        self.thresholds, self.store = thresholds, store
        n = len(catalog)
        self.expected = {k: min((k + 1) * chunk_rows, n) - k * chunk_rows for k in todo}
        self.pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {k: [] for k in todo}
        self.received = dict.fromkeys(todo, 0)

    def add(self, batch: Mapping[str, np.ndarray]) -> int:
        """Take one batch of results; return its number of rows."""
        rows = np.asarray(batch["row"], dtype=np.int64)
        probs, reasons = np.asarray(batch["probs"]), np.asarray(batch["reason"], dtype=object)
        parts = rows // self.chunk_rows
        for k in np.unique(parts):
            sel = parts == k
            k = int(k)
            if k not in self.pending:
                raise RuntimeError(f"rows of partition {k} came back twice or were never sent")
            self.pending[k].append((rows[sel], probs[sel], reasons[sel]))
            self.received[k] += int(sel.sum())
            if self.received[k] == self.expected[k]:
                self._flush(k)
        return len(rows)

    def _flush(self, k: int) -> None:
        rows, probs, reasons = (np.concatenate(x) for x in zip(*self.pending.pop(k)))
        order = np.argsort(rows, kind="stable")
        rows, probs, reasons = rows[order], probs[order], reasons[order]
        start = k * self.chunk_rows
        if not np.array_equal(rows, np.arange(start, start + self.expected[k])):
            raise RuntimeError(f"partition {k}: the rows that came back are not the rows sent")
        cat, ok = self.catalog, reasons == ""
        table = prediction_table(cat.ids[rows[ok]], probs[ok], self.tree, self.thresholds, cat.id_column)
        self.store.write(k, table, chunk_error_table(cat, rows[~ok], reasons[~ok]))

    def check_finished(self) -> None:
        if self.pending:
            missing = sorted(self.pending)
            raise RuntimeError(f"the Ray job ended before partitions {missing[:10]} were complete; "
                               "rerun the same command with --resume to compute them")


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # the Data library comes with the "data" extra of ray
    except ImportError as exc:
        raise MissingExtraError(INSTALL_HINT) from exc
    return ray


def _resources(ray: Any, rcfg: RayConfig) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for the cluster Ray is connected to."""
    total = ray.cluster_resources()
    cluster_gpus, cluster_cpus = float(total.get("GPU", 0)), float(total.get("CPU", 0))
    gpus = rcfg.gpus_per_actor if rcfg.gpus_per_actor is not None else (1.0 if cluster_gpus else 0.0)
    cpus = rcfg.cpus_per_actor
    if gpus > 0 and cluster_gpus == 0:
        raise ConfigError(f"the Ray cluster has no GPU (resources {dict(total)}); use gpus_per_actor=0 "
                         "(--ray-gpus-per-actor 0) for CPU actors")
    if rcfg.actors is not None:
        actors = rcfg.actors
    elif gpus > 0:
        actors = max(1, int(cluster_gpus // gpus))
    else:
        actors = max(1, int(cluster_cpus // (2 * max(cpus, 1.0))))
    if gpus > 0 and actors * gpus > cluster_gpus:
        warnings.warn(f"{actors} actors x {gpus} GPUs exceed the cluster's {cluster_gpus:g} GPUs: actors "
                      "wait for GPUs (fine on an autoscaling cluster)", stacklevel=3)
    if actors * cpus > cluster_cpus - 1:
        warnings.warn(f"{actors} actors x {cpus:g} CPUs leave less than one of the cluster's {cluster_cpus:g} "
                      "CPUs for decoding: the job may stall until more CPUs join", stacklevel=3)
    return actors, gpus, cpus


def _blocks(catalog: Catalog, todo: Sequence[int], chunk_rows: int, block_rows: int) -> Iterator[pd.DataFrame]:
    # Blocks never straddle a partition, so each decoding task feeds one partition.
    n = len(catalog)
    for k in todo:
        for start in range(k * chunk_rows, min((k + 1) * chunk_rows, n), block_rows):
            rows = np.arange(start, min(start + block_rows, (k + 1) * chunk_rows, n))
            yield pd.DataFrame({"row": rows, "path": catalog.paths[rows]})


def _run_on_ray(ray: Any, ensemble: Ensemble, src: Source, assembler: _Assembler, todo: Sequence[int],
                cfg: PredictConfig, rcfg: RayConfig, bar: tqdm) -> None:
    started = not ray.is_initialized()
    if started:
        ray.init(address=rcfg.address)
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    try:
        blocks = list(_blocks(src.catalog, todo, cfg.chunk_rows, rcfg.block_rows))
        actors, gpus, cpus = _resources(ray, rcfg)
        actors = min(actors, len(blocks))  # an actor without a block would only hold resources
        ctx.enable_progress_bars = cfg.progress
        ds = ray.data.from_pandas(blocks)
        ds = ds.map_batches(decode_block, fn_kwargs={"size": src.size or ensemble.image_size,
                                                      "cache": None if src.cache is None else str(src.cache.root.resolve())}, batch_size=None,
                            batch_format="numpy", num_cpus=1)
        # Ray shows an actor only the GPUs it reserved: the device follows the reservation.
        kwargs = {"runs": ensemble.runs, "weights": ensemble.weights.tolist(),
                  "config": replace(cfg, device="cuda" if gpus > 0 else "cpu"),
                  "threads": cfg.threads or max(1, int(cpus))}
        ds = ds.map_batches(ModelActor, fn_constructor_kwargs=kwargs, batch_size=cfg.batch_size,
                            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=actors),
                            num_gpus=gpus, num_cpus=cpus)
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            bar.update(assembler.add(batch))
        assembler.check_finished()
    finally:
        ctx.enable_progress_bars = bars
        if started:
            ray.shutdown()


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ray_fields = {f.name for f in fields(RayConfig)}
    predict_fields = {f.name for f in fields(PredictConfig)}
    unknown = sorted(set(options) - ray_fields - predict_fields)
    if unknown:
        raise TypeError(f"unknown options {unknown} (fields of PredictConfig or RayConfig)")
    return ({k: v for k, v in options.items() if k in predict_fields},
            {k: v for k, v in options.items() if k in ray_fields})


def predict_ray(models: ModelSpec | Sequence[ModelSpec], source: Catalog | str | Path, out: str | Path, *,
                config: PredictConfig | None = None, ray_config: RayConfig | None = None,
                weights: Sequence[float] | str | Path | None = None,
                triage_thresholds: str | Path | dict | None = None, resume: bool = False,
                **options: Any) -> RaySummary:
    """Predict a collection on a Ray cluster into a directory of Parquet parts.

    Parameters
    ----------
    models : run directory, TrainedModel, or a sequence of them
        Several runs are averaged (``weights``).
    source : Catalog or path
        A directory of images, a CSV/Parquet catalog or a Kaggle directory
        (``config.split``); paths must be readable from every node.
    out : path
        Output directory (e.g. ``preds.parquet``), see the module docstring; error
        rows go to ``<out>.errors/``.
    config : PredictConfig, optional
        TTA, batch size, precision, ``chunk_rows`` (rows per partition), ``threads``
        (per CPU actor)...; ``workers`` is not used (Ray tasks decode) and the device
        follows :attr:`RayConfig.gpus_per_actor`.
    ray_config : RayConfig, optional
        Cluster address and actor resources.
    weights, triage_thresholds, resume
        As in :func:`gzmorph.inference.predict.predict_to_file`: with ``resume`` a rerun of
        the same job computes only the partitions not written yet; without it the job
        starts over.
    **options
        Fields of :class:`PredictConfig` or :class:`RayConfig` instead of the objects.

    Returns
    -------
    RaySummary
        Counts over all partitions (``n_resumed``: rows of partitions already written).
    """
    ray = _import_ray()  # fail before any work when the extra is missing
    predict_opts, ray_opts = _split_options(options)
    cfg = config or PredictConfig(**predict_opts)
    rcfg = ray_config or RayConfig(**ray_opts)
    out = Path(out)
    if out.suffix.lower() == ".csv":
        raise OutputError(f"{out}: a Ray job writes a directory of Parquet parts; name it e.g. "
                         f"{out.with_suffix('.parquet').name}")
    t0 = time.monotonic()
    # On the driver the runs only provide metadata and travel to the actors: keep them on the CPU.
    ensemble = Ensemble.load(models, resolve_device("cpu"), cfg.tta, weights, cfg.which, recentre=cfg.recentre)
    if ensemble.recentre or cfg.stretch is not None or any(run.stretch for run in ensemble.runs):
        raise ConfigError("FITS cutouts and recentring are not supported with --ray yet; predict without --ray")
    src = open_source(source, tree=ensemble.tree, split=cfg.split, id_column=cfg.id_column,
                      path_column=cfg.path_column, require_images=False)
    catalog = src.catalog
    n = len(catalog)
    if n == 0:
        raise CatalogError(f"{source}: no images to predict")
    if calibration_for([run.run_dir for run in ensemble.runs], cfg.calibration, ensemble.tree) is not None:
        raise ConfigError("calibrated prediction is not supported with --ray yet: predict without --ray, "
                          "or with --calibration off")
    thresholds = resolve_thresholds(triage_thresholds, ensemble.tree)
    manifest = job_manifest(ensemble, cfg, catalog, thresholds, src.size or ensemble.image_size, "ray-parts")
    store = PartStore(out, ray_errors_dir(out), manifest, resume)
    done = store.done()
    todo = [k for k in range(-(-n // cfg.chunk_rows)) if k not in done]
    n_todo = sum(min((k + 1) * cfg.chunk_rows, n) - k * cfg.chunk_rows for k in todo)
    if todo:
        assembler = _Assembler(catalog, todo, cfg.chunk_rows, ensemble.tree, thresholds, store)
        with tqdm(total=n, initial=n - n_todo, unit="img", disable=not cfg.progress, dynamic_ncols=True,
                  desc="predict (ray)") as bar:
            _run_on_ray(ray, ensemble, src, assembler, todo, cfg, rcfg, bar)
    n_pred, n_fail = store.counts()
    return RaySummary(out, store.errors_dir, n, n_pred, n_fail, n - n_todo, time.monotonic() - t0,
                      catalog.id_column, catalog.ids.dtype.kind in "iu")
