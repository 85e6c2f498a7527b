"""The local executor of a prediction job, and the Python API of prediction.

:func:`predict_to_file` computes the chunks of a :class:`~gzmorph.inference.job.PredictionJob`
in this process (decoding worker processes stream the images, bounded look-ahead,
while the main process runs the network; or rows come from a memory-mapped
:class:`~gzmorph.data.cache.ImageCache`), keeps each finished chunk as a part
(:mod:`gzmorph.inference.parts`) and concatenates them into the output file, so
memory holds one batch of images and one chunk of predictions whatever the collection
size, and a killed job resumes where it stopped and ends with the same bytes.
:func:`gzmorph.inference.ray.predict_ray` computes the same chunks on a Ray cluster.

Test-time averaging, ensembles and runs trained at different image sizes: see
:mod:`gzmorph.inference.ensemble`.  Images are decoded once, at the largest ``image_size`` of
the runs; a cache is used at its own size.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
from tqdm.auto import tqdm

from gzmorph.data.catalog import Catalog
from gzmorph.errors import CatalogError, OutputError
from gzmorph.metrics import masked_rmse
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.ensemble import WEIGHTS_KIND, ModelSpec, fit_simplex_weights, is_weights_file
from gzmorph.inference.job import PredictionJob, decode_workers, iter_batches
from gzmorph.outputs import refuse_overwrite
from gzmorph.inference.parts import (PartStore, check_outputs, errors_path, finished_output, model_files,
                                     output_format, single_machine_store)
from gzmorph.inference.science import catalog_file, output_extras
from gzmorph.inference.summary import PredictSummary
from gzmorph.runtime import torch_threads, write_json

__all__ = ["PredictConfig", "PredictSummary", "predict", "predict_to_file", "fit_weights"]


def predict_to_file(models: ModelSpec | Sequence[ModelSpec], source: Catalog | Any | str | Path, out: str | Path, *,
                    config: PredictConfig | None = None, weights: Sequence[float] | str | Path | None = None,
                    triage_thresholds: str | Path | dict | None = None, resume: bool = False,
                    keep_columns: Sequence[str] | None = None, keep_all: bool = False,
                    **options: Any) -> PredictSummary:
    """Predict a collection into a CSV, Parquet, FITS, ECSV or VOTable file, streaming, resumable.

    Parameters
    ----------
    models : run directory, TrainedModel, or a sequence of them
        Several runs are averaged (``weights``).
    source : Catalog, ImageCache or path
        A directory of images, a CSV/Parquet catalog, a Kaggle directory (``split``
        picks the training or test images) or a cache made by ``gzmorph prepare``.
    out : path
        ``.csv`` (Kaggle submission: id + answer columns) or ``.parquet`` (plus the
        per-question answer, confidence, reach and triage columns); ``.fits``,
        ``.ecsv``, ``.vot``: the Parquet columns as an astropy Table, with units,
        descriptions and provenance (:mod:`gzmorph.inference.science`).  Undecodable
        inputs go to ``<out>.errors.csv`` (id, path, reason).
    config : PredictConfig, optional
        Or its fields as keyword ``options`` (``tta="paper"``, ``batch_size=128``...).
    weights : sequence of float or path, optional
        Ensemble weights, or a JSON file written by :func:`fit_weights`.
    triage_thresholds : path or dict, optional
        Confidence thresholds per question (``gzmorph evaluate``); default
        :data:`gzmorph.inference.table.DEFAULT_THRESHOLD` for every question.
    keep_columns : sequence of str, optional
        Columns of the source catalogue to carry into every output, after the id.
    keep_all : bool
        Carry every column of the source catalogue.
    resume : bool
        Keep the chunks an interrupted run of the same job finished (the job's settings
        must be the same); the final file is the same as an uninterrupted run's.  A
        finished output (no part directory left) is kept as is when its record
        ``<out>.manifest.json`` (:func:`gzmorph.inference.parts.manifest_path`) shows the same
        settings and unchanged files; otherwise ``ValueError`` (rerun without resume).

    Returns
    -------
    PredictSummary
    """
    cfg = config or PredictConfig(**options)
    out = Path(out)
    fmt = output_format(out)
    kaggle_labels = [Path(source) / "training_solutions_rev1.csv"] if isinstance(source, (str, Path)) else []
    # A cutouts folder's catalog.parquet is an input too (the folder itself is the source).
    tables = [catalog_file(source)] if catalog_file(source) is not None else []
    check_outputs(out, [source, *tables, *kaggle_labels, triage_thresholds, weights, *model_files(models)])
    t0 = time.monotonic()
    job = PredictionJob.open(models, source, cfg, weights, triage_thresholds, layout=fmt)
    manifest = job.manifest()
    extras = output_extras(job.ensemble, manifest, source, job.source.catalog, keep_columns, keep_all)
    manifest["kept_columns"] = extras.kept_names  # another choice of columns is another output
    return run_local_to_file(job, out, manifest, cfg, resume=resume, t0=t0, extras=lambda store: extras)


def run_local_to_file(job: PredictionJob, out: Path, manifest: dict[str, Any], cfg: PredictConfig, *, resume: bool,
                      t0: float, desc: str = "predict",
                      extras: Callable[[PartStore], Any] = lambda store: None,
                      execute: Callable[..., None] | None = None) -> PredictSummary:
    """Run a job (prediction or embedding) whose output is the single file ``out``.

    A finished output of the same manifest is kept as it is (with ``resume``); otherwise
    the chunks an interrupted run left (with ``resume``) are kept and the others
    computed, then the parts are assembled.  ``extras(store)`` gives what the assembly
    adds (kept columns, metadata), once every chunk is written.  ``execute(job, todo,
    sink, progress)`` computes the chunks: by default this process
    (:meth:`PredictionJob.run_local`); :func:`gzmorph.inference.ray.ray_executor` sends
    them to Ray actors, and the file is the same.
    """
    if resume and (done := finished_output(out, manifest)) is not None:
        return job.summary(out, errors_path(out), done[0], done[1], job.n, time.monotonic() - t0)
    store = single_machine_store(out, manifest, resume)
    todo = job.todo(store.done())
    n_resumed = job.n - job.count(todo)
    with tqdm(total=job.n, initial=n_resumed, unit="img", disable=not cfg.progress, dynamic_ncols=True,
              desc=desc) as bar, torch_threads(cfg.threads):
        if execute is None:
            job.run_local(todo, store.write, bar.update)
        else:
            execute(job, todo, store.write, bar.update)
    n_done, n_fail = store.assemble(out, job.n_chunks, job.columns, job.chunk_ids, extras(store))
    store.remove()
    return job.summary(out, errors_path(out), n_done, n_fail, n_resumed, time.monotonic() - t0)


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
    job = PredictionJob.open(models, source, cfg, weights, triage_thresholds, layout="memory")
    tables, errors = [], []

    def collect(k: int, table: pa.Table, err: pa.Table) -> None:
        tables.append(table)
        errors.append(err)

    with tqdm(total=job.n, unit="img", disable=not cfg.progress, dynamic_ncols=True, desc="predict") as bar, \
            torch_threads(cfg.threads):
        job.run_local(range(job.n_chunks), collect, bar.update)
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
    if out is not None:  # the output guard, before the work: never an input, never a file of another kind
        refuse_overwrite([catalog, *model_files(models)], files=[out], option="--weights-out")
        if Path(out).exists() and not is_weights_file(out):
            raise OutputError(f"--weights-out {out}: exists and is not a weights file written by --weights-out; "
                              "choose another name")
    job = PredictionJob.open(models, catalog, cfg)
    ensemble, cat = job.ensemble, job.source.catalog
    if not cat.has_labels:
        raise CatalogError(f"{catalog}: no labels of tree {ensemble.tree.name!r}; cannot fit ensemble weights")
    stream = job.stream(range(job.n_chunks), decode_workers(cfg, ensemble.runtime))
    rows: list[int] = []
    preds: list[np.ndarray] = []
    n_failed = 0
    with tqdm(total=len(cat), unit="img", disable=not cfg.progress, desc="fit weights") as bar, \
            torch_threads(cfg.threads):
        for batch_rows, images, failures, geometry in iter_batches(stream, len(cat), cfg.batch_size):
            if images is not None:
                per = ensemble.predict_runs(images, geometry)  # (R, B, A)
                good = np.all([ensemble.tree.output_problems(p) == "" for p in per], axis=0)
                preds.append(per[:, good])  # outputs that are not probabilities are not fitted on
                rows += [r for r, g in zip(batch_rows, good) if g]
                n_failed += int((~good).sum())
            n_failed += len(failures)
            bar.update(len(batch_rows) + len(failures))
    if not preds:
        raise CatalogError(f"{catalog}: no image could be decoded")
    per_run = np.concatenate(preds, axis=1)  # (R, N_ok, A)
    labels = cat.labels[rows]
    w = fit_simplex_weights(per_run, labels)

    def rmse(p: np.ndarray) -> float:
        return masked_rmse(p, labels)

    record = {"gzmorph": WEIGHTS_KIND, "runs": ensemble.names, "weights": w.tolist(), "tta": cfg.tta,
              "which": cfg.which,
              "val_catalog": str(catalog if not isinstance(catalog, Catalog) else catalog.source),
              "n_images": len(rows), "n_failed": n_failed, "label_columns": cat.label_columns,
              "rmse": {"runs": [rmse(p) for p in per_run], "uniform": rmse(per_run.mean(axis=0)),
                       "fitted": rmse(np.tensordot(w, per_run, axes=1))}}
    if out is not None:
        write_json(record, out)
    return record
