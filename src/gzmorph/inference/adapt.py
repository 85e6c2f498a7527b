"""Test-time adaptation: BatchNorm statistics re-estimated on the target images (``predict --adapt-bn``).

A network trained on one survey and shown another sees inputs of other statistics
(sharpness, noise, colour), and its batch-norm layers normalise them with the training
survey's means and variances.  Re-estimating those statistics on the target images
(AdaBN, Li et al. 2016; Schneider et al. 2020) is the cheapest standard remedy for such
covariate shift: no labels, no gradient, only the normalisation layers' running
means and variances change.

How: the runs' batch-norm layers (the ``p4m`` and ``cyclic`` presets have them; the
paper's network has none) forget their statistics and, in training mode with
``momentum=None`` (a cumulative average over batches, as
:func:`torch.optim.swa_utils.update_bn` does), see a bounded sample of the target
images (:func:`sample_rows`: at most ``adapt_bn_images`` spread evenly over the
collection) through the job's own preprocessing: decoding, recentring or pixel scale,
and every test-time transform.  Everything else stays in evaluation mode (dropout
off), and no other tensor changes.

The adapted statistics are computed once per job, by the driver, before any chunk; the
runs that carry them travel to the Ray actors like any run.  They are kept next to the
output (``<out>.adapt_bn.pt``, :func:`gzmorph.inference.parts.adapt_path`), so a resumed
job uses the very same numbers (recomputing them on another machine or thread count
could differ in the last bits), and their digest is part of the job's record.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from gzmorph.errors import ConfigError
from gzmorph.inference.config import ADAPT_BN_MIN
from gzmorph.nn import augment as aug
from gzmorph.runtime import atomic_save, load_checkpoint

if TYPE_CHECKING:
    from gzmorph.inference.ensemble import Ensemble

__all__ = ["ADAPT_BN_MIN", "norm_layers", "norm_state", "reestimate", "sample_rows", "adapt_ensemble", "adapt_job",
           "own_copies"]



def norm_layers(model: torch.nn.Module) -> list[tuple[str, _BatchNorm]]:
    """The batch-norm layers of a network that keep running statistics, with their names."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats]


def norm_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The running statistics of :func:`norm_layers` (state-dict names -> CPU copies)."""
    return {f"{name}.{key}": getattr(m, key).detach().cpu().clone() for name, m in norm_layers(model)
            for key in ("running_mean", "running_var", "num_batches_tracked")}


@torch.no_grad()
def reestimate(model: torch.nn.Module, batches: Iterable[torch.Tensor], forward: Any = None) -> int:
    """Replace the running statistics of ``model``'s batch norms by those of ``batches``.

    Parameters
    ----------
    model : Module
        Left in evaluation mode, every tensor but the statistics unchanged.
    batches : iterable of Tensor
        The network's inputs (crops).
    forward : callable, optional
        ``forward(batch)`` runs the network (default ``model(batch)``), e.g. under autocast.

    Returns
    -------
    int
        Batches seen.  Each batch counts once (``momentum=None``): the mean is exact
        over equal batches; the variance is the mean of the batches' unbiased variances.
    """
    layers = [m for _, m in norm_layers(model)]
    momenta = [m.momentum for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    n = 0
    try:
        for batch in batches:
            (forward or model)(batch)
            n += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.eval()
    return n


def sample_rows(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` rows of ``n``, spread evenly over the collection (deterministic)."""
    if n <= limit:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))


def _views(ensemble: "Ensemble", k: int, images: np.ndarray, geometry: np.ndarray | None) -> Iterator[torch.Tensor]:
    """Run ``k``'s crops of a batch under every test-time transform, as prediction renders them."""
    run = ensemble.runs[k]
    x = torch.from_numpy(np.ascontiguousarray(images)).to(ensemble.runtime.device)
    if run.image_size != x.shape[1]:  # as Ensemble.predict_runs: resized on the device
        chw = x.permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
        x = F.interpolate(chw, size=(run.image_size,) * 2, mode="bilinear", antialias=True,
                          align_corners=False).clamp_(0, 1)
    geometry = geometry if ensemble.recentred[k] or ensemble.rescale else None  # as Ensemble._forward
    for angle, scale, flip in ensemble.transforms:
        t = aug.place(aug.fixed_transforms(len(images), angle=angle, scale=scale, flip=flip), geometry)
        yield aug.render_crops(x, t.to(x.device), run.augment, run.pca)  # (B, 2, 3, s, s)


def _batches(items: Iterator[Any], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    images, geometry = [], []
    for item in items:
        if item.image is None:
            continue
        images.append(item.image)
        geometry.append(item.geometry)
        if len(images) == batch_size:
            yield np.stack(images), None if geometry[0] is None else np.stack(geometry)  # (B, S, S, 3), (B, 4)
            images, geometry = [], []
    if images:
        yield np.stack(images), None if geometry[0] is None else np.stack(geometry)


def adapt_ensemble(ensemble: "Ensemble", items: Iterator[Any], batch_size: int) -> int:
    """Re-estimate every run's batch-norm statistics on the decodable ``items``; returns how many there were.

    Raises :class:`ConfigError` (one line) for a run without normalisation layers and
    for fewer than :data:`ADAPT_BN_MIN` decodable images.
    """
    for run in ensemble.runs:
        if not norm_layers(run.model):
            raise ConfigError(f"{run.run_dir}: its network has no BatchNorm layers to adapt (--adapt-bn works with "
                              "networks that have them, such as the p4m and cyclic presets)")
    batches = list(_batches(items, batch_size))
    n = sum(len(b) for b, _ in batches)
    if n < ADAPT_BN_MIN:
        raise ConfigError(f"--adapt-bn needs at least {ADAPT_BN_MIN} decodable target images to estimate the "
                          f"normalisation statistics, got {n}")
    for k, run in enumerate(ensemble.runs):
        def forward(crops: torch.Tensor, net: torch.nn.Module = run.model) -> torch.Tensor:
            with ensemble.runtime.autocast_context():
                return net(crops)

        reestimate(run.model, (crops for images, geometry in batches
                               for crops in _views(ensemble, k, images, geometry)), forward)
    return n


def own_copies(models: Any) -> Any:
    """``models`` (a spec or a sequence of them) with every loaded run's network copied, paths as they are."""
    from gzmorph.models.rundir import TrainedModel

    specs = [models] if isinstance(models, (str, Path, TrainedModel)) else list(models)
    return [replace(m, model=copy.deepcopy(m.model)) if isinstance(m, TrainedModel) else m for m in specs]


def _digest(states: list[dict[str, torch.Tensor]]) -> str:
    digest = hashlib.sha1()
    for state in states:
        for name, tensor in sorted(state.items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}\n".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _kept(ensemble: "Ensemble", path: Path, sample: str) -> dict[str, Any] | None:
    """The statistics kept in ``path``, applied to the runs, when they are these runs' on these images; else None."""
    stored = load_checkpoint(path)
    states = stored.get("model")
    if stored.get("sample") != sample or not isinstance(states, list) or len(states) != len(ensemble.runs) \
            or any(set(state) != set(norm_state(run.model)) for run, state in zip(ensemble.runs, states)):
        return None
    for run, state in zip(ensemble.runs, states):
        run.model.load_state_dict(state, strict=False)
    return stored


def adapt_job(job: Any, stats_file: Path | None = None, reuse: bool = False) -> dict[str, Any] | None:
    """Adapt a :class:`~gzmorph.inference.job.PredictionJob`'s runs when its config asks; the record for its manifest.

    ``stats_file``: where the statistics are kept (``<out>.adapt_bn.pt``); with ``reuse``
    (a resumed job) an existing one is loaded instead of computed again.  Returns
    ``{"n_images", "max_images", "stats"}`` (``stats``: digest of the statistics), or
    None when the job does not adapt.
    """
    cfg = job.config
    if not cfg.adapt_bn:
        return None
    rows = sample_rows(job.n, cfg.adapt_bn_images)
    sample = _sample_digest(job.source.catalog.ids[rows])
    stored = _kept(job.ensemble, Path(stats_file), sample) if stats_file is not None and reuse and \
        Path(stats_file).is_file() else None
    if stored is not None:
        n = int(stored["n_images"])
    else:  # computed afresh (also when a kept file was estimated on other images)
        workers = cfg.workers if cfg.workers is not None else 0
        items = job.source.stream(rows, job.image_size, workers, recentre=job.ensemble.recentre)
        n = adapt_ensemble(job.ensemble, items, cfg.batch_size)
        if stats_file is not None:
            # "model": the key every checkpoint load_checkpoint reads holds (here the statistics of each run).
            atomic_save({"model": [norm_state(run.model) for run in job.ensemble.runs], "n_images": n,
                         "sample": sample}, stats_file)
    states = [norm_state(run.model) for run in job.ensemble.runs]
    return {"n_images": n, "max_images": cfg.adapt_bn_images, "stats": _digest(states)}


def _sample_digest(ids: np.ndarray) -> str:
    """Which images the statistics are estimated on (their ids), so a kept file is reused only for them."""
    return hashlib.sha1("\n".join(map(str, ids)).encode()).hexdigest()
