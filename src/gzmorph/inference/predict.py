"""Catalog-scale prediction: streaming decode, test-time averaging, ensembles, output files.

Data flow: image files are decoded by worker processes (:func:`gzmorph.data.images.iter_decoded`,
bounded look-ahead) while the main process runs the network, or rows are read from a
memory-mapped :class:`~gzmorph.data.cache.ImageCache`.  Inputs are processed in *chunks*
of ``chunk_rows`` consecutive rows; batches never straddle a chunk, each finished
chunk is written as one part (see :mod:`gzmorph.inference.table`), so memory holds one batch
of images and one chunk of predictions whatever the collection size, and a killed
job resumes where it stopped and ends with the same bytes.

Test-time averaging, ensembles and runs trained at different image sizes: see
:mod:`gzmorph.inference.ensemble`.  Images are decoded once, at the largest ``image_size`` of
the runs; a cache is used at its own size.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from gzmorph.errors import CatalogError, ConfigError
from gzmorph.data.catalog import Catalog
from gzmorph.data.composite import Stretch, require_survey_extra
from gzmorph.data.images import DecodeOptions
from gzmorph.data.source import Source, open_source
from gzmorph.inference.calibrator import CALIBRATION_MODES, Calibration, calibration_for
from gzmorph.inference.ensemble import Ensemble, ModelSpec, fit_simplex_weights, load_weights
from gzmorph.inference.parts import (check_outputs, chunk_error_table, finished_output, job_manifest, model_files,
                                     single_machine_store)
from gzmorph.inference.table import (DEFAULT_THRESHOLD, PredictSummary, errors_path, load_thresholds, output_format,
                                     prediction_table)
from gzmorph.runtime import Runtime, cpu_cores, resolve_device, torch_threads, write_json
from gzmorph.evaluation.metrics import masked_rmse
from gzmorph.tree import Tree

__all__ = ["PredictConfig", "PredictSummary", "Ensemble", "predict", "predict_to_file", "fit_weights", "decode_options",
           "prediction_runtime", "resolve_thresholds", "resolve_calibration", "fit_simplex_weights", "load_weights"]

TTA_CHOICES = ("none", "rot", "paper")
# (row, image or None, failure reason or None, geometry (4,) or None), and
# (rows, images (B, S, S, 3), failures, geometry (B, 4) or None)
_Item = tuple[int, "np.ndarray | None", "str | None", "np.ndarray | None"]
_Batch = tuple[list[int], "np.ndarray | None", list[tuple[int, str]], "np.ndarray | None"]


@dataclass(frozen=True)
class PredictConfig:
    """How a prediction job runs.

    Parameters
    ----------
    tta : {"none", "rot", "paper"}
        Test-time averaging: one pass, 5 rotations, or the paper's 60 transforms
        (:func:`gzmorph.nn.augment.tta_transforms`).
    batch_size : int
        Images per forward pass (each pass renders ``batch_size`` crop pairs).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    precision : {"auto", "fp32", "bf16"}
        ``"auto"``: bf16 autocast and channels_last on CUDA, fp32 on the CPU
        (:func:`gzmorph.runtime.resolve_device`); ``"fp32"``: fp32 everywhere;
        ``"bf16"``: bf16 autocast and channels_last on the CPU too (faster on CPUs with
        native bf16, e.g. AVX512-BF16/AMX, at the cost of probabilities that differ from
        fp32 by up to a few 1e-3).
    workers : int or None
        Decoding processes (``None``: automatic, ``0``: decode in this process).
    compile : bool
        ``torch.compile`` the networks: ~10 s per run up front, then about twice the
        forward rate of the paper network on a CPU (BENCHMARKS.md); for large jobs.
    threads : int or None
        torch intra-op threads while the job runs (``None``: torch's setting).  On a
        CPU shared with other jobs, ``threads=1, workers=0`` can be several times
        faster than the defaults (see BENCHMARKS.md): spinning OpenMP threads and
        decoding processes then fight for the same cores.
    chunk_rows : int
        Rows per written chunk (Parquet row group); rounded up to a multiple of
        ``batch_size``.  Bounds the memory used by predictions and the work lost
        when a job is killed.
    which : {"best", "last"}
        Checkpoint of each run.
    progress : bool
        Show a progress bar (images/s and time left).
    split : {"train", "test"}
        When the source is a Kaggle directory: its training or test images.
    id_column : str
        Id column of a catalog file given as the source.
    path_column : str
        Image path column of a catalog file given as the source.
    recentre : bool or None
        Recentre and rescale every image on its galaxy (:mod:`gzmorph.data.recentre`);
        ``None`` (default): as each run was trained (``augment.recentre``), so a run
        trained with recentring applies it without being asked.  Adds the
        ``recentred`` column (False where no galaxy was found and the plain centre
        crop was used).
    stretch : Stretch or None
        Colour composite of FITS cutouts (:mod:`gzmorph.data.composite`); ``None``: the
        one the run was trained with, if it was trained on FITS.
    calibration : {"auto", "on", "off"}
        Apply the model's ``calibration.json`` (``gzmorph calibrate``): ``auto`` when it
        has one, ``on`` refuse a model without one, ``off`` the raw network.
    interval_level : float or None
        Central level of the calibrated intervals (``Class1.1_lo``/``_hi``); ``None``: the
        calibration's (0.8 unless fitted otherwise).
    """

    tta: str = "none"
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    workers: int | None = None
    threads: int | None = None
    compile: bool = False
    chunk_rows: int = 2048
    which: str = "best"
    progress: bool = True
    split: str = "train"
    id_column: str = "GalaxyID"
    path_column: str = "path"
    recentre: bool | None = None
    stretch: Stretch | None = None
    calibration: str = "auto"
    interval_level: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stretch, dict):
            object.__setattr__(self, "stretch", Stretch.from_dict(self.stretch))
        if self.tta not in TTA_CHOICES:
            raise ValueError(f"tta must be one of {TTA_CHOICES}, not {self.tta!r}")
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise ValueError(f"batch_size and chunk_rows must be >= 1, got {self.batch_size}, {self.chunk_rows}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 or None, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.which not in ("best", "last"):
            raise ValueError(f"which must be 'best' or 'last', not {self.which!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {self.precision!r}")
        if self.split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', not {self.split!r}")
        if self.calibration not in CALIBRATION_MODES:
            raise ValueError(f"calibration must be one of {CALIBRATION_MODES}, not {self.calibration!r}")
        if self.interval_level is not None and not 0 < self.interval_level < 1:
            raise ValueError(f"interval_level must be in (0, 1), got {self.interval_level}")
        # Chunks hold whole batches, so resumed and uninterrupted jobs batch alike.
        rows = -(-self.chunk_rows // self.batch_size) * self.batch_size
        object.__setattr__(self, "chunk_rows", rows)


# ------------------------------------------------------------------ inputs
def _iter_batches(stream: Iterator[_Item], count: int, batch_size: int) -> Iterator[_Batch]:
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
def _chunk_rows(k: int, chunk_rows: int, n: int) -> np.ndarray:
    return np.arange(k * chunk_rows, min((k + 1) * chunk_rows, n))


def _run_chunks(ensemble: Ensemble, src: Source, chunks: list[int], cfg: PredictConfig,
                thresholds: dict[str, float], sink: Callable[[int, Any, pd.DataFrame], None], bar: tqdm,
                trained: np.ndarray | None = None, calibration: Calibration | None = None) -> None:
    """Predict the given chunks in order, handing each finished chunk to ``sink``.

    ``trained`` (answers the runs learned) makes the other answers NaN, without decisions.
    """
    cat = src.catalog
    n = len(cat)
    size = src.size or ensemble.image_size
    todo = [_chunk_rows(k, cfg.chunk_rows, n) for k in chunks]
    if not todo:
        return
    stream = src.stream_measured(np.concatenate(todo), size, decode_workers(cfg, ensemble.runtime),
                                 recentre=ensemble.recentre)
    for k, rows in zip(chunks, todo):
        ok_rows: list[int] = []
        probs: list[np.ndarray] = []
        found: list[np.ndarray] = []
        failed: list[tuple[int, str]] = []
        for batch_rows, images, failures, geometry in _iter_batches(stream, len(rows), cfg.batch_size):
            if images is not None:
                probs.append(ensemble(images) if geometry is None else ensemble(images, geometry))
                ok_rows += batch_rows
                if geometry is not None:
                    found.append(geometry[:, 3] > 0)
            failed += failures
            bar.update(len(batch_rows) + len(failures))
        ok = np.asarray(ok_rows, dtype=np.int64)
        table = prediction_table(cat.ids[ok], np.concatenate(probs) if probs else
                                 np.zeros((0, ensemble.tree.n_answers), np.float32),
                                 ensemble.tree, thresholds, cat.id_column, trained=trained,
                                 calibration=calibration, level=cfg.interval_level)
        if ensemble.recentre:  # False: no galaxy found, the plain centre crop was used
            table = table.append_column("recentred", pa.array(np.concatenate(found) if found else
                                                              np.zeros(0, dtype=bool), pa.bool_()))
        bad = np.asarray([r for r, _ in failed], dtype=np.int64)
        sink(k, table, chunk_error_table(cat, bad, [reason for _, reason in failed]))


def decode_workers(cfg: PredictConfig, rt: Runtime) -> int | None:
    """Decoding processes: ``cfg.workers``, or automatic.

    When the network runs on a CPU of at most 4 cores, decoding (~2,000 img/s per core)
    costs a small fraction of the forward pass, and decode processes only take cores
    from torch's threads: decode in this process.  Measured on 2 cores with the small
    network: 338 img/s in-process against 259 img/s with 2 decode processes.
    """
    if cfg.workers is not None:
        return cfg.workers
    return 0 if rt.device.type == "cpu" and cpu_cores() <= 4 else None


def prediction_runtime(cfg: PredictConfig) -> Runtime:
    """The device and speed paths (autocast, channels_last) of a prediction job."""
    runtime = resolve_device(cfg.device, fast=cfg.precision != "fp32")
    if cfg.precision == "bf16" and not runtime.autocast:
        # Runtime keeps bf16 to CUDA by default; here the user asked for it explicitly.
        runtime = Runtime(device=runtime.device, autocast=True, channels_last=True)
    return runtime


def resolve_thresholds(spec: str | Path | dict | None, tree: Tree) -> dict[str, float]:
    """Triage thresholds for every question of ``tree``, warning about defaulted ones.

    Shared by the single-machine and the Ray jobs (:mod:`gzmorph.inference.ray`).
    """
    thresholds, defaulted = load_thresholds(spec, tree)
    if spec is not None and defaulted:
        where = f" in {spec}" if isinstance(spec, (str, Path)) else ""
        warnings.warn(f"the triage thresholds{where} have no value for "
                      f"{', '.join(defaulted)} (no labels when they were fitted?): using the default "
                      f"{DEFAULT_THRESHOLD} for them", stacklevel=3)
    return thresholds


def resolve_calibration(ensemble: Ensemble, cfg: PredictConfig, triage_thresholds: str | Path | dict | None
                        ) -> tuple[Calibration | None, dict[str, float]]:
    """The job's calibration (:func:`gzmorph.inference.calibrator.calibration_for`) and thresholds.

    A calibrated job cuts on ``Qn_p_correct``: its thresholds are the calibration's
    unless a thresholds file fitted on ``p_correct`` is given; one fitted on the
    confidence ``a`` (``gzmorph evaluate``) is refused rather than misapplied.
    """
    cal = calibration_for([run.run_dir for run in ensemble.runs], cfg.calibration, ensemble.tree)
    if cal is None:
        return None, resolve_thresholds(triage_thresholds, ensemble.tree)
    if triage_thresholds is None:
        return cal, resolve_thresholds(cal.triage_file(), ensemble.tree)
    spec = triage_thresholds
    if not isinstance(spec, dict):
        import json

        try:
            spec = json.loads(Path(spec).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{triage_thresholds}: cannot read triage thresholds: {exc}") from None
    if not isinstance(spec, dict) or spec.get("confidence") != "p_correct":
        raise ConfigError(f"{triage_thresholds}: thresholds on the confidence a, but a calibrated model cuts on "
                          "Qn_p_correct; leave --triage-thresholds out (the calibration has its own) or "
                          "predict with --calibration off")
    return cal, resolve_thresholds(spec, ensemble.tree)


def _untrained(ensemble: Ensemble, fmt: str) -> np.ndarray | None:
    """The trained-answer mask for a Parquet table (None: all trained, or a Kaggle CSV).

    The Kaggle CSV format needs every number, so it keeps them, with this warning and
    the list in the manifest; the Parquet table makes them NaN.
    """
    untrained = ensemble.untrained_columns
    if not untrained:
        return None
    questions = [q.name for q in ensemble.tree.questions if set(q.columns) & set(untrained)]
    what = ("kept in the CSV (the Kaggle format needs them) but meaningless" if fmt == "csv"
            else "written as NaN, with no triage decision")
    warnings.warn(f"the model was never trained on {len(untrained)} answer column(s) of {', '.join(questions)} "
                  f"({', '.join(untrained)}): {what}; listed under 'untrained' in the manifest", stacklevel=3)
    return ensemble.trained if fmt == "parquet" else None


def decode_options(ensemble: Ensemble, cfg: PredictConfig) -> DecodeOptions:
    """FITS composite (given, else the runs') and recentring (given, else the runs') of a job."""
    stretch = cfg.stretch
    if stretch is None:
        stored = [run.stretch for run in ensemble.runs if run.stretch]
        stretch = Stretch.from_dict(stored[0]) if stored else None
    options = DecodeOptions(stretch, ensemble.recentre)
    if options.stretch is not None or options.recentre:
        require_survey_extra()
    return options


def _setup(models: ModelSpec | Sequence[ModelSpec], source: Any, cfg: PredictConfig,
           weights: Sequence[float] | str | Path | None) -> tuple[Ensemble, Source]:
    ensemble = Ensemble.load(models, prediction_runtime(cfg), cfg.tta, weights, cfg.which, cfg.compile,
                             cfg.recentre)
    # A missing image is an error row like an unreadable one, not a reason to stop.
    src = open_source(source, tree=ensemble.tree, split=cfg.split, id_column=cfg.id_column,
                      path_column=cfg.path_column, require_images=False, options=decode_options(ensemble, cfg))
    if len(src.catalog) == 0:
        raise CatalogError(f"{source}: no images to predict")
    return ensemble, src


def predict_to_file(models: ModelSpec | Sequence[ModelSpec], source: Catalog | Any | str | Path, out: str | Path, *,
                    config: PredictConfig | None = None, weights: Sequence[float] | str | Path | None = None,
                    triage_thresholds: str | Path | dict | None = None, resume: bool = False,
                    **options: Any) -> PredictSummary:
    """Predict a collection into a CSV or Parquet file, streaming, resumable.

    Parameters
    ----------
    models : run directory, TrainedModel, or a sequence of them
        Several runs are averaged (``weights``).
    source : Catalog, ImageCache or path
        A directory of images, a CSV/Parquet catalog, a Kaggle directory (``split``
        picks the training or test images) or a cache made by ``gzmorph prepare``.
    out : path
        ``.csv`` (Kaggle submission: id + answer columns) or ``.parquet`` (plus the
        per-question answer, confidence, reach and triage columns).  Undecodable
        inputs go to ``<out>.errors.csv`` (id, path, reason).
    config : PredictConfig, optional
        Or its fields as keyword ``options`` (``tta="paper"``, ``batch_size=128``...).
    weights : sequence of float or path, optional
        Ensemble weights, or a JSON file written by :func:`fit_weights`.
    triage_thresholds : path or dict, optional
        Confidence thresholds per question (``gzmorph evaluate``); default
        :data:`gzmorph.inference.table.DEFAULT_THRESHOLD` for every question.
    resume : bool
        Keep the chunks an interrupted run of the same job finished (the job's settings
        must be the same); the final file is the same as an uninterrupted run's.  A
        finished output (no part directory left) is kept as is when its record
        ``<out>.manifest.json`` (:func:`gzmorph.inference.table.manifest_path`) shows the same
        settings and unchanged files; otherwise ``ValueError`` (rerun without resume).

    Returns
    -------
    PredictSummary
    """
    cfg = config or PredictConfig(**options)
    out = Path(out)
    fmt = output_format(out)
    kaggle_labels = [Path(source) / "training_solutions_rev1.csv"] if isinstance(source, (str, Path)) else []
    check_outputs(out, [source, *kaggle_labels, triage_thresholds, weights, *model_files(models)])
    t0 = time.monotonic()
    ensemble, src = _setup(models, source, cfg, weights)
    cat, n = src.catalog, len(src.catalog)
    calibration, thresholds = resolve_calibration(ensemble, cfg, triage_thresholds)
    trained = _untrained(ensemble, fmt)
    n_chunks = -(-n // cfg.chunk_rows)
    manifest = job_manifest(ensemble, cfg, cat, thresholds, src.size or ensemble.image_size, fmt)
    intervals: list[str] = []
    if calibration is not None:  # the resumed parts must be calibrated alike
        manifest = {**manifest, "calibration": calibration.to_dict(), "interval_level": cfg.interval_level}
        intervals = [f"{c}{s}" for c in ensemble.tree.columns for s in ("_lo", "_hi")]
    columns = [*ensemble.tree.columns, *intervals, *(["recentred"] if ensemble.recentre else [])]
    if resume and (done := finished_output(out, manifest)) is not None:
        return PredictSummary(out, errors_path(out), n, done[0], done[1], n, time.monotonic() - t0,
                              cat.id_column, cat.ids.dtype.kind in "iu", _not_recentred(out, ensemble))
    store = single_machine_store(out, manifest, resume)
    done_chunks = store.done()
    todo = [k for k in range(n_chunks) if k not in done_chunks]
    n_resumed = n - sum(len(_chunk_rows(k, cfg.chunk_rows, n)) for k in todo)
    with tqdm(total=n, initial=n_resumed, unit="img", disable=not cfg.progress, dynamic_ncols=True,
              desc="predict") as bar, torch_threads(cfg.threads):
        _run_chunks(ensemble, src, todo, cfg, thresholds, store.write, bar, trained, calibration)
    n_pred, n_fail = store.assemble(out, n_chunks, columns,
                                    lambda k: cat.ids[_chunk_rows(k, cfg.chunk_rows, n)])
    store.remove()
    return PredictSummary(out, errors_path(out), n, n_pred, n_fail, n_resumed, time.monotonic() - t0,
                          cat.id_column, cat.ids.dtype.kind in "iu", _not_recentred(out, ensemble))


def _not_recentred(out: Path, ensemble: Ensemble) -> int | None:
    """Rows of a finished output that kept the plain centre crop (None without recentring)."""
    if not ensemble.recentre:
        return None
    if output_format(out) == "parquet":
        import pyarrow.parquet as pq

        column = pq.read_table(out, columns=["recentred"]).column(0).to_numpy(zero_copy_only=False)
    else:
        column = pd.read_csv(out, usecols=["recentred"])["recentred"].to_numpy()
    return int((~column.astype(bool)).sum())


def predict(models: ModelSpec | Sequence[ModelSpec], source: Catalog | Any | str | Path, out: str | Path | None = None,
            *, config: PredictConfig | None = None, weights: Sequence[float] | str | Path | None = None,
            triage_thresholds: str | Path | dict | None = None, resume: bool = False,
            **options: Any) -> pd.DataFrame:
    """Predict a collection and return the predictions as a DataFrame.

    Same parameters as :func:`predict_to_file`.  With ``out`` the file is written
    (streaming) and read back, so the result is exactly the file's content; without
    it the full table (Parquet columns) is built in memory.  The failed inputs are in
    ``result.attrs["errors"]`` (id, path, reason).  For collections too large for
    memory use :func:`predict_to_file`.
    """
    cfg = config or PredictConfig(**options)
    if out is not None:
        summary = predict_to_file(models, source, out, config=cfg, weights=weights,
                                  triage_thresholds=triage_thresholds, resume=resume)
        frame, errors = summary.read()
        frame.attrs["errors"] = errors
        return frame
    ensemble, src = _setup(models, source, cfg, weights)
    calibration, thresholds = resolve_calibration(ensemble, cfg, triage_thresholds)
    tables, errors = [], []

    def collect(k: int, table: Any, err: Any) -> None:
        tables.append(table)
        errors.append(err)

    n = len(src.catalog)
    with tqdm(total=n, unit="img", disable=not cfg.progress, dynamic_ncols=True, desc="predict") as bar, \
            torch_threads(cfg.threads):
        _run_chunks(ensemble, src, list(range(-(-n // cfg.chunk_rows))), cfg, thresholds, collect, bar,
                    _untrained(ensemble, "parquet"), calibration)
    frame = pa.concat_tables(tables).to_pandas()  # the same conversion as reading the Parquet file
    frame.attrs["errors"] = pa.concat_tables(errors).to_pandas()
    return frame


def fit_weights(models: Sequence[ModelSpec], catalog: Catalog | Any | str | Path, out: str | Path | None = None, *,
                config: PredictConfig | None = None, **options: Any) -> dict[str, Any]:
    """Fit ensemble weights on a labelled validation catalog and optionally save them as JSON.

    The runs predict ``catalog`` (with the configured TTA); the weights on the simplex
    that minimise the mean squared error over the available answer columns are kept.

    Returns
    -------
    dict
        ``runs`` (resolved run directories), ``weights``, ``tta``, ``which``,
        ``val_catalog``, ``n_images``, ``n_failed``, ``label_columns`` and ``rmse``
        (of each run, of the uniform mean and of the fitted mean).  Written to ``out``
        when given; pass that file as ``weights`` to :func:`predict`.
    """
    cfg = config or PredictConfig(**options)
    ensemble, src = _setup(models, catalog, cfg, None)
    cat = src.catalog
    if not cat.has_labels:
        raise CatalogError(f"{catalog}: no labels of tree {ensemble.tree.name!r}; cannot fit ensemble weights")
    stream = src.stream_measured(np.arange(len(cat)), src.size or ensemble.image_size,
                                 decode_workers(cfg, ensemble.runtime), recentre=ensemble.recentre)
    rows: list[int] = []
    preds: list[np.ndarray] = []
    n_failed = 0
    with tqdm(total=len(cat), unit="img", disable=not cfg.progress, desc="fit weights") as bar, \
            torch_threads(cfg.threads):
        for batch_rows, images, failures, geometry in _iter_batches(stream, len(cat), cfg.batch_size):
            if images is not None:
                preds.append(ensemble.predict_runs(images, geometry))
                rows += batch_rows
            n_failed += len(failures)
            bar.update(len(batch_rows) + len(failures))
    if not preds:
        raise CatalogError(f"{catalog}: no image could be decoded")
    per_run = np.concatenate(preds, axis=1)  # (R, N_ok, A)
    labels = cat.labels[rows]
    w = fit_simplex_weights(per_run, labels)

    def rmse(p: np.ndarray) -> float:
        return masked_rmse(p, labels)

    record = {"runs": ensemble.names, "weights": w.tolist(), "tta": cfg.tta, "which": cfg.which,
              "val_catalog": str(catalog if not isinstance(catalog, Catalog) else catalog.source),
              "n_images": len(rows), "n_failed": n_failed, "label_columns": cat.label_columns,
              "rmse": {"runs": [rmse(p) for p in per_run], "uniform": rmse(per_run.mean(axis=0)),
                       "fitted": rmse(np.tensordot(w, per_run, axes=1))}}
    if out is not None:
        write_json(record, out)
    return record
