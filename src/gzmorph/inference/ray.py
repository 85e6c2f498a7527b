"""The Ray executor of a prediction job (the optional extra ``gzmorph[ray]``).

The job is the single-machine one (:class:`~gzmorph.inference.job.PredictionJob`: the
same source with its FITS composite and recentring options, caches with their own
tree, the same trained-answer mask, error rows, manifest and resume rule); only
where its chunks are computed changes.  The driver loads the runs on its CPU, opens
the source and sends the job once to a pool of model actors (one per GPU, fractions
allowed, or CPU actors).  Each actor moves the networks to its device and computes
whole chunks with :meth:`~gzmorph.inference.job.PredictionJob.compute_chunk`: it
decodes (or reads from the cache) the chunk's rows and runs the ensemble, TTA
included; an undecodable image becomes an error row, never a failed task.  The two
tables of a chunk come back to the driver, which writes them as soon as they
arrive.  So the output lives on the driver's file system, while the images and the
installed package must be visible to every node (the models and the catalog travel
to the actors through Ray's object store; a cache travels as its path).

Output layout (``pandas.read_parquet(out)`` reads the predictions in input order)::

    out/_manifest.json             settings the parts depend on ("_": Parquet readers skip it)
    out/part-000000.parquet        predictions of chunk 0
    <out>.errors/part-000003.parquet
                                   id, path, reason of chunk 3's undecodable images

A chunk's prediction part is written last, atomically: the parts present are the
finished chunks.  The resume rule is the single-machine one
(:mod:`gzmorph.inference.parts`): a rerun with ``resume`` computes only the others and
refuses other settings (models, TTA, thresholds, inputs...); without it the job starts over.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pyarrow as pa
from tqdm.auto import tqdm

from gzmorph.config import Config
from gzmorph.data.catalog import Catalog
from gzmorph.errors import ConfigError, MissingExtraError, OutputError
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.ensemble import ModelSpec
from gzmorph.inference.job import PredictionJob, prediction_runtime
from gzmorph.inference.parts import SCIENCE_SUFFIXES, PartStore, model_files, ray_errors_dir
from gzmorph.inference.science import output_extras
from gzmorph.inference.summary import RaySummary
from gzmorph.outputs import refuse_overwrite
from gzmorph.runtime import resolve_device

__all__ = ["RayConfig", "RaySummary", "predict_ray", "ray_executor", "ray_errors_dir", "ChunkActor", "INSTALL_HINT"]

INSTALL_HINT = "Ray is not installed: pip install 'gzmorph[ray]'"


@dataclass(frozen=True)
class RayConfig(Config):
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
        CPUs reserved by each actor, which decodes its chunks and runs the network;
        CPU actors use as many torch threads (at least one) unless
        :attr:`PredictConfig.threads` says otherwise, and GPU actors as many decoding
        processes less one (none below 2) unless :attr:`PredictConfig.workers` does.
    """

    address: str | None = None
    actors: int | None = None
    gpus_per_actor: float | None = None
    cpus_per_actor: float = 1.0

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


class ChunkActor:
    """Ray actor: the prediction job on this actor's device, computing whole chunks.

    Parameters
    ----------
    job : PredictionJob
        As the driver opened it (networks on the CPU).
    device : str
        ``"cuda"`` for actors that reserved a GPU (Ray shows them only those), else ``"cpu"``.
    threads : int
        torch intra-op threads.
    workers : int
        Decoding processes of each chunk (0: the actor decodes).
    """

    def __init__(self, job: PredictionJob, device: str, threads: int, workers: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.job = job.on(prediction_runtime(replace(job.config, device=device)))
        self.workers = workers

    def compute(self, k: int) -> tuple[int, pa.Table, pa.Table]:
        """Chunk ``k``: its number, prediction rows and error rows."""
        return (k, *self.job.compute_chunk(k, self.job.stream([k], self.workers)))


def _import_ray() -> Any:
    try:
        import ray
        from ray.util import ActorPool  # noqa: F401  (part of Ray core)
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
        actors = max(1, int(cluster_cpus // max(cpus, 1.0)))
    if gpus > 0 and actors * gpus > cluster_gpus:
        warnings.warn(f"{actors} actors x {gpus} GPUs exceed the cluster's {cluster_gpus:g} GPUs: actors "
                      "wait for GPUs (fine on an autoscaling cluster)", stacklevel=3)
    if actors * cpus > cluster_cpus:
        warnings.warn(f"{actors} actors x {cpus:g} CPUs exceed the cluster's {cluster_cpus:g} CPUs: actors "
                      "wait for CPUs (fine on an autoscaling cluster)", stacklevel=3)
    return actors, gpus, cpus


def _run_on_ray(ray: Any, job: PredictionJob, todo: Sequence[int], rcfg: RayConfig,
                sink: Callable[[int, pa.Table, pa.Table], Any], progress: Callable[[int], Any]) -> None:
    """Compute the chunks ``todo`` on a pool of actors; hand each finished one to ``sink``."""
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started:
        ray.init(address=rcfg.address)
    try:
        actors, gpus, cpus = _resources(ray, rcfg)
        cfg = job.config
        threads = cfg.threads or max(1, int(cpus))
        workers = cfg.workers if cfg.workers is not None else (max(0, int(cpus) - 1) if gpus > 0 else 0)
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(ChunkActor)
        shared = ray.put(job)  # one copy of the runs and the catalog in the object store
        pool = ActorPool([remote.remote(shared, "cuda" if gpus > 0 else "cpu", threads, workers)
                          for _ in range(min(actors, len(todo)))])  # an actor without a chunk would only hold resources
        for k, table, errors in pool.map_unordered(lambda actor, k: actor.compute.remote(k), list(todo)):
            sink(k, table, errors)
            progress(len(job.rows(k)))
    finally:
        if started:
            ray.shutdown()


def ray_executor(rcfg: RayConfig) -> Callable[[PredictionJob, Sequence[int], Callable, Callable], None]:
    """An executor for :func:`gzmorph.inference.predict.run_local_to_file`: the chunks on Ray actors.

    The driver still writes the parts and assembles the single output file, so a job
    (an embedding, say) gives the same bytes on Ray as in this process.  Fails at once
    when the ``ray`` extra is missing.
    """
    ray = _import_ray()

    def execute(job: PredictionJob, todo: Sequence[int], sink: Callable[[int, pa.Table, pa.Table], Any],
                progress: Callable[[int], Any]) -> None:
        # On the driver the networks only travel to the actors: ship them from the CPU.
        _run_on_ray(ray, job.on(resolve_device("cpu")), todo, rcfg, sink, progress)

    return execute


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ray_fields = {f.name for f in fields(RayConfig)}
    predict_fields = {f.name for f in fields(PredictConfig)}
    unknown = sorted(set(options) - ray_fields - predict_fields)
    if unknown:
        raise TypeError(f"unknown options {unknown} (fields of PredictConfig or RayConfig)")
    return ({k: v for k, v in options.items() if k in predict_fields},
            {k: v for k, v in options.items() if k in ray_fields})


def predict_ray(models: ModelSpec | Sequence[ModelSpec], source: Catalog | Any | str | Path, out: str | Path, *,
                config: PredictConfig | None = None, ray_config: RayConfig | None = None,
                weights: Sequence[float] | str | Path | None = None,
                triage_thresholds: str | Path | dict | None = None, resume: bool = False,
                keep_columns: Sequence[str] | None = None, keep_all: bool = False,
                **options: Any) -> RaySummary:
    """Predict a collection on a Ray cluster into a directory of Parquet parts.

    Parameters
    ----------
    models : run directory, TrainedModel, or a sequence of them
        Several runs are averaged (``weights``).
    source : Catalog, ImageCache or path
        Anything :func:`gzmorph.inference.predict.predict_to_file` reads: a directory
        of images or FITS cutouts, a CSV/Parquet catalog, a Kaggle directory
        (``config.split``) or a cache; paths must be readable from every node.
    out : path
        Output directory (e.g. ``preds.parquet``), see the module docstring; error
        rows go to ``<out>.errors/``.
    config : PredictConfig, optional
        As for :func:`gzmorph.inference.predict.predict_to_file` (FITS ``stretch``,
        ``recentre``...); ``chunk_rows`` is the unit of work sent to an actor,
        ``threads`` and ``workers`` count per actor, and the device follows
        :attr:`RayConfig.gpus_per_actor`.
    ray_config : RayConfig, optional
        Cluster address and actor resources.
    weights, triage_thresholds, keep_columns, keep_all, resume
        As in :func:`gzmorph.inference.predict.predict_to_file` (the kept columns and the
        provenance go into every part): with ``resume`` a rerun of
        the same job computes only the chunks not written yet; without it the job
        starts over.
    **options
        Fields of :class:`PredictConfig` or :class:`RayConfig` instead of the objects.

    Returns
    -------
    RaySummary
        Counts over all chunks (``n_resumed``: rows of chunks already written).
    """
    ray = _import_ray()  # fail before any work when the extra is missing
    predict_opts, ray_opts = _split_options(options)
    cfg = config or PredictConfig(**predict_opts)
    rcfg = ray_config or RayConfig(**ray_opts)
    out = Path(out)
    if out.suffix.lower() in (".csv", *SCIENCE_SUFFIXES):
        raise OutputError(f"{out}: a Ray job writes a directory of Parquet parts; name it e.g. "
                         f"{out.with_suffix('.parquet').name}")
    # The shared output guard, before any work: the parts never go into, onto or over an input.
    refuse_overwrite([source, triage_thresholds, weights, *model_files(models)],
                     folders=[out, ray_errors_dir(out)])
    t0 = time.monotonic()
    # On the driver the runs only provide metadata and travel to the actors: keep them on the CPU.
    job = PredictionJob.open(models, source, cfg, weights, triage_thresholds, layout="ray-parts",
                             runtime=resolve_device("cpu"))
    manifest = job.manifest()
    extras = output_extras(job.ensemble, manifest, source, job.source.catalog, keep_columns, keep_all)
    manifest["kept_columns"] = extras.kept_names
    store = PartStore(out, ray_errors_dir(out), manifest, resume)
    todo = job.todo(store.done())
    n_resumed = job.n - job.count(todo)

    def write(k: int, table: Any, errors: Any) -> None:  # the driver joins the kept columns to each part
        joined = extras.table(table)
        store.write(k, joined.cast(extras.schema(joined.schema)), extras.table(errors))

    if todo:
        with tqdm(total=job.n, initial=n_resumed, unit="img", disable=not cfg.progress, dynamic_ncols=True,
                  desc="predict (ray)") as bar:
            _run_on_ray(ray, job, todo, rcfg, write, bar.update)
    n_pred, n_fail = store.counts()
    return job.summary(out, store.errors_dir, n_pred, n_fail, n_resumed, time.monotonic() - t0, RaySummary)
