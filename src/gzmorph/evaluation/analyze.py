"""What the network has learned: the figures of the paper's Section 9.

:func:`analyze` loads a trained run and a set of images and writes, into one folder,
PNG figures linked from ``analysis.html``:

* ``filters.png``: the first-layer filters per colour channel, each filter
  contrast-normalised over its three channels together (the paper's Figure 10);
* ``viewpoint.png`` and ``activations_<layer>.png``: one viewpoint of one image and the
  activations of every convolutional and pooling layer for it (Figures 11-12);
* ``units.png``: for the most variable units of the last hidden layer, the images that
  activate them most and least (Figure 13);
* ``errors.png``: the images with the highest and lowest prediction RMSE (Figure 14),
  when the images come with labels (or ``labels`` is given).

Images are shown as the network sees them: crop 0 of the fixed (unrotated) transform.
``units.csv`` and ``image_errors.csv`` list the ids behind the figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from gzmorph.config import Config
from gzmorph.errors import CatalogError, ConfigError
from gzmorph.nn import augment as aug
from gzmorph.evaluation.html import render
from gzmorph.evaluation.inputs import id_keys, load_labels, match_ids
from gzmorph.outputs import claim_folder, mark_folder, refuse_overwrite
from gzmorph.runtime import resolve_device, write_json
from gzmorph.metrics import masked_sums, rmse_from_sums
from gzmorph.tree import Tree
from gzmorph.nn.model import GalaxyNet
from gzmorph.nn.viewpoints import N_VIEWPOINTS, extract_viewpoints

__all__ = ["AnalyzeConfig", "analyze", "plot_filters", "plot_activations", "plot_units", "plot_errors"]


@dataclass(frozen=True)
class AnalyzeConfig(Config):
    """Settings of :func:`analyze`.

    Parameters
    ----------
    max_images : int
        Images analysed at most (a seeded random sample of a larger collection).
    n_units : int
        Units of the last hidden layer shown (those whose activation varies most).
    n_examples : int
        Most and least activating images shown per unit.
    n_errors : int
        Images with the highest and with the lowest RMSE shown.
    example_id : int, str or None
        Id of the image whose activations are drawn; ``None`` takes the first image.
    viewpoint : int
        Which of the 16 viewpoints of that image (0: crop 0, not mirrored, first corner).
    batch_size : int
    seed : int
        Seed of the image sample.
    """

    max_images: int = 2000
    n_units: int = 8
    n_examples: int = 6
    n_errors: int = 8
    example_id: Any = None
    viewpoint: int = 0
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_images", "n_units", "n_examples", "n_errors", "batch_size"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if self.viewpoint not in range(N_VIEWPOINTS):
            raise ValueError(f"viewpoint must be in 0..{N_VIEWPOINTS - 1}, got {self.viewpoint}")


@dataclass
class _Inputs:
    ids: np.ndarray
    images: np.ndarray  # uint8 (N, S, S, 3)
    labels: np.ndarray | None  # float (N, n_answers), NaN-masked
    source: str
    n_total: int
    skipped: list[tuple[Any, str]]


# --------------------------------------------------------------------------- inputs
def _load_inputs(images: Any, tree: Tree, size: int, cfg: AnalyzeConfig, workers: int | None, id_column: str,
                 progress: bool) -> _Inputs:
    """Sample up to ``cfg.max_images`` rows of an array, catalog or cache and decode them."""
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        rows = _sample(len(images), cfg)
        return _Inputs(rows, images[rows], None, "array", len(images), [])
    from gzmorph.data.source import open_source

    source = open_source(images, tree=tree, id_column=id_column)
    catalog = source.catalog
    if source.cache is not None:
        # Sample among the decoded rows of a cache; its failed rows are known already.
        ok = source.cache.ok_index
        rows = ok[_sample(len(ok), cfg)]
        skipped = [(catalog.ids[i], "failed when the cache was prepared") for i in np.flatnonzero(~source.cache.ok)]
        return _Inputs(catalog.ids[rows], np.asarray(source.cache.images[rows]),
                       catalog.labels[rows].astype(np.float64), catalog.source, len(catalog), skipped)
    rows = _sample(len(catalog), cfg)
    decoded, failed, _ = source.load(size, rows=rows, workers=workers, progress=progress)
    keep = np.ones(len(rows), dtype=bool)
    keep[[i for i, _ in failed]] = False
    skipped = [(catalog.ids[rows[i]], reason) for i, reason in failed]
    if not keep.any():
        raise CatalogError(f"{catalog.source or images}: none of the {len(rows)} images could be decoded "
                         f"(first: {skipped[0][0]}: {skipped[0][1]})")
    labels = catalog.labels[rows[keep]].astype(np.float64)
    return _Inputs(catalog.ids[rows[keep]], decoded[keep], labels, catalog.source or str(images), len(catalog),
                   skipped)


def _sample(n: int, cfg: AnalyzeConfig) -> np.ndarray:
    if n == 0:
        raise CatalogError("no images to analyse")
    if n <= cfg.max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(cfg.seed).choice(n, cfg.max_images, replace=False))


def _attach_labels(inputs: _Inputs, labels: Any, tree: Tree, id_column: str) -> np.ndarray | None:
    """Labels aligned with ``inputs`` (NaN rows for ids without labels), or None."""
    if labels is None:
        own = inputs.labels
        return own if own is not None and np.isfinite(own).any() else None
    if isinstance(labels, np.ndarray):
        if labels.shape != (len(inputs.images), tree.n_answers):
            raise ValueError(f"labels array of shape {labels.shape}, expected ({len(inputs.images)}, {tree.n_answers})")
        return labels.astype(np.float64)
    keys, values, _ = load_labels(labels, tree, id_column)
    rows, label_rows, _, _ = match_ids(id_keys(inputs.ids), keys)
    out = np.full((len(inputs.ids), tree.n_answers), np.nan)
    out[rows] = values[label_rows]
    return out


# --------------------------------------------------------------------------- network
@torch.inference_mode()
def _forward(trained, images: np.ndarray, batch_size: int, device: torch.device) -> dict[str, np.ndarray]:
    """Last hidden layer, predictions and crop 0 (for display) of every image."""
    model, feats, preds, crops0 = trained.model, [], [], []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size])).to(device)
        t = aug.fixed_transforms(len(x)).to(device)
        crops = aug.render_crops(x, t, trained.augment, trained.pca)  # (B, 2, 3, 69, 69)
        h = model.features(crops).float()  # (B, units)
        # Eval mode: dropout is the identity, so this equals model(crops) without a second pass.
        preds.append(model.constraint(model.output(h)).cpu().numpy())
        feats.append(h.cpu().numpy())
        crops0.append((crops[:, 0].permute(0, 2, 3, 1) * 255).round().byte().cpu().numpy())  # (B, 69, 69, 3)
    return {"features": np.concatenate(feats), "predictions": np.concatenate(preds), "crops": np.concatenate(crops0)}


@torch.inference_mode()
def _activations(trained, image: np.ndarray, viewpoint: int, device: torch.device) -> tuple[np.ndarray, dict]:
    """One viewpoint ``(45, 45, 3)`` of one image and each layer's maps ``(C, H, W)``."""
    x = torch.from_numpy(np.ascontiguousarray(image[None])).to(device)
    crops = aug.render_crops(x, aug.fixed_transforms(1).to(device), trained.augment, trained.pca)
    if isinstance(trained.model, GalaxyNet):
        view = extract_viewpoints(crops)[viewpoint : viewpoint + 1]  # (16, 3, 45, 45) -> (1, 3, 45, 45)
    else:  # a symmetry-built network sees crop 0 whole
        view = crops[:, 0]  # (1, 2, 3, S, S) -> (1, 3, S, S)
    maps = {k: v[0].float().cpu().numpy() for k, v in trained.model.conv_activations(view).items()}
    return view[0].permute(1, 2, 0).cpu().numpy(), maps


# --------------------------------------------------------------------------- figures
def _mosaic(tiles: np.ndarray, ncols: int, pad: int = 1, fill: float = 1.0) -> np.ndarray:
    """Tiles ``(N, h, w[, 3])`` on a grid of ``ncols`` columns separated by ``pad`` pixels."""
    n, h, w = tiles.shape[:3]
    nrows = math.ceil(n / ncols)
    out = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, *tiles.shape[3:]), fill, dtype=np.float64)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, ncols)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = tile
    return out


def plot_filters(weight: np.ndarray) -> Figure:
    """First-layer filters ``(C_out, 3, k, k)``: one panel per colour channel, each filter
    contrast-normalised to its own range over its three channels jointly (the paper's Figure 10).

    One range per filter, not per channel: a channel whose weights are 1000 times
    smaller than the others' is drawn flat (mid-grey of its filter's range), as its
    effect on the filter's response is; stretched alone it would look as strong.
    """
    lo = weight.min(axis=(1, 2, 3), keepdims=True)
    span = weight.max(axis=(1, 2, 3), keepdims=True) - lo
    norm = (weight - lo) / np.where(span > 0, span, 1.0)
    ncols = min(8, len(weight))
    mosaics = [_mosaic(norm[:, c], ncols) for c in range(3)]
    # Height from the mosaics' aspect, so a single row of filters is not lost in white space.
    fig = Figure(figsize=(10, 3.2 * mosaics[0].shape[0] / mosaics[0].shape[1] + 0.9))
    for ax, mosaic, name in zip(fig.subplots(1, 3), mosaics, ("red", "green", "blue")):
        ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{name} channel")
        ax.axis("off")
    fig.suptitle(f"first-layer filters: {weight.shape[0]} filters of {weight.shape[2]}x{weight.shape[3]} px")
    return fig


def plot_activations(name: str, maps: np.ndarray) -> Figure:
    """All maps ``(C, H, W)`` of one layer, on the layer's common scale (dark = 0)."""
    top = float(maps.max())
    ncols = min(16, len(maps))
    mosaic = _mosaic(maps / top if top > 0 else maps, ncols, fill=1.0)
    fig = Figure(figsize=(min(12.0, 0.8 * ncols + 1), 0.8 * math.ceil(len(maps) / ncols) + 0.8))
    ax = fig.subplots()
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_title(f"{name}: {maps.shape[0]} maps of {maps.shape[1]}x{maps.shape[2]} (max {top:.3g})")
    ax.axis("off")
    return fig


def plot_units(features: np.ndarray, crops: np.ndarray, units: np.ndarray, n: int) -> Figure:
    """Per unit (row): the ``n`` most activating images, a gap, the ``n`` least (Figure 13)."""
    rows = []
    for u in units:
        order = np.argsort(features[:, u], kind="stable")
        tiles = np.concatenate([crops[order[::-1][:n]], np.full((1, *crops.shape[1:]), 255, np.uint8),
                                crops[order[:n]]])
        rows.append(_mosaic(tiles / 255.0, len(tiles), pad=2))
    fig = Figure(figsize=(1.0 * (2 * n + 1) + 1, 1.0 * len(units) + 0.8))
    ax = fig.subplots()
    ax.imshow(np.concatenate([np.pad(r, ((0, 4), (0, 0), (0, 0)), constant_values=1.0) for r in rows]))
    step = crops.shape[1] + 4
    ax.set_yticks(np.arange(len(units)) * step + crops.shape[1] / 2, [f"unit {u}" for u in units])
    ax.set_xticks([n * (crops.shape[2] + 2) / 2, (1.5 * n + 1) * (crops.shape[2] + 2)],
                  ["most activating", "least activating"])
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    return fig


def plot_errors(crops: np.ndarray, rmse: np.ndarray, ids: np.ndarray, n: int) -> Figure:
    """The ``n`` images with the highest RMSE (top row) and the lowest (bottom row)."""
    valid = np.flatnonzero(np.isfinite(rmse))
    order = valid[np.argsort(rmse[valid], kind="stable")]
    n = min(n, len(order))
    fig = Figure(figsize=(1.3 * n + 0.5, 3.4))
    axes = np.asarray(fig.subplots(2, n, squeeze=False))
    for row, picks, label in ((0, order[::-1][:n], "highest RMSE"), (1, order[:n], "lowest RMSE")):
        for ax, i in zip(axes[row], picks):
            ax.imshow(crops[i])
            ax.set_title(f"{ids[i]}\n{rmse[i]:.3f}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize=8)
    return fig


def _save(fig: Figure, path: Path) -> str:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path.name


def _example_row(ids: np.ndarray, example_id: Any) -> int:
    if example_id is None:
        return 0
    hits = np.flatnonzero(id_keys(ids).astype(str) == str(example_id))
    if hits.size == 0:
        raise ConfigError(f"example id {example_id!r} is not among the analysed images (first: {ids[:3].tolist()})")
    return int(hits[0])


def _unit_table(features: np.ndarray, units: np.ndarray, ids: np.ndarray, n: int) -> pd.DataFrame:
    rows = []
    for u in units:
        order = np.argsort(features[:, u], kind="stable")
        rows.append(dict(unit=int(u), std=float(features[:, u].std()), mean=float(features[:, u].mean()),
                         most_activating=" ".join(map(str, ids[order[::-1][:n]])),
                         least_activating=" ".join(map(str, ids[order[:n]]))))
    return pd.DataFrame(rows)


def _activation_figures(trained, inputs: _Inputs, cfg: AnalyzeConfig, dev: torch.device, out: Path) -> tuple[list, str]:
    row = _example_row(inputs.ids, cfg.example_id)
    view, maps = _activations(trained, inputs.images[row], cfg.viewpoint, dev)
    fig = Figure(figsize=(2.5, 2.5))
    ax = fig.subplots()
    ax.imshow(np.clip(view, 0, 1), interpolation="nearest")
    ax.set_title(f"image {inputs.ids[row]}, viewpoint {cfg.viewpoint}", fontsize=8)
    ax.axis("off")
    files = [_save(fig, out / "viewpoint.png")]
    files += [_save(plot_activations(k, v), out / f"activations_{k}.png") for k, v in maps.items()]
    return files, str(inputs.ids[row])


def _unit_figures(features: np.ndarray, crops: np.ndarray, ids: np.ndarray, cfg: AnalyzeConfig,
                  out: Path) -> tuple[list, np.ndarray]:
    std = features.std(axis=0)
    units = np.argsort(-std, kind="stable")[: cfg.n_units]
    units = units[std[units] > 0]  # a unit that never varies has no most/least activating images
    if units.size == 0:
        return [], units
    _unit_table(features, units, ids, cfg.n_examples).to_csv(out / "units.csv", index=False)
    return [_save(plot_units(features, crops, units, min(cfg.n_examples, len(ids))), out / "units.png")], units


def _error_figures(predictions: np.ndarray, labels: np.ndarray | None, crops: np.ndarray, ids: np.ndarray,
                   cfg: AnalyzeConfig, out: Path, id_column: str) -> list:
    """Per-image RMSE over the labelled answers; the best and worst images."""
    if labels is None:
        return []
    sse, counts = masked_sums(predictions, labels, axis=1)  # (N,) each
    rmse = rmse_from_sums(sse, counts)
    if not np.isfinite(rmse).any():
        return []
    table = pd.DataFrame({id_column: ids, "rmse": rmse, "n_label_values": counts})
    table.sort_values("rmse", ascending=False).to_csv(out / "image_errors.csv", index=False)
    return [_save(plot_errors(crops, rmse, ids, cfg.n_errors), out / "errors.png")]


def analyze(run_dir: str | Path, images: Any, out: str | Path, labels: Any = None, *,
            config: AnalyzeConfig | None = None, which: str = "best", device: str = "auto",
            id_column: str = "GalaxyID", workers: int | None = None, progress: bool = True, **settings) -> Path:
    """Write the paper's Section 9 figures for a trained run and ``analysis.html``.

    Parameters
    ----------
    run_dir : path or str
        Run directory written by ``gzmorph train``, model package, or
        ``hf:ORG/NAME[@REVISION]`` (not an ONNX file: the figures need the torch network).
    images : path, Catalog or ndarray
        Kaggle directory, CSV/Parquet catalog, image folder, image cache, a
        :class:`gzmorph.data.catalog.Catalog`, or uint8 images ``(N, H, W, 3)`` (ids 0..N-1).
    out : path
        Folder for the PNG files, ``units.csv``, ``image_errors.csv``, ``analysis.json``
        and ``analysis.html``.
    labels : Catalog, DataFrame, path or ndarray, optional
        Labels for the error figure, joined on the ids (an array must align with the
        analysed images). Default: the labels that come with ``images``, if any.
    config : AnalyzeConfig, optional
        Settings; keyword ``settings`` (e.g. ``n_units=4``) override its fields.
    which : {"best", "last"}
    device, id_column, workers, progress
        Compute device; id column of a labels table; decoding processes; progress bar.

    Returns
    -------
    Path
        ``analysis.html``.
    """
    from dataclasses import replace

    from gzmorph.models.resolve import resolve_model

    cfg = replace(config or AnalyzeConfig(), **settings)
    out = Path(out)
    # The shared output guard: never among the images, a run or the labels, nor in a user's folder.
    refuse_overwrite([run_dir, images, labels], folders=[out])
    claim_folder(out, "analysis", what="analysis (gzmorph analyze)")
    mark_folder(out, "analysis")
    dev = resolve_device(device).device
    trained = resolve_model(run_dir, which=which, device=dev, purpose="analyzed")
    inputs = _load_inputs(images, trained.tree, trained.image_size, cfg, workers, id_column, progress)
    labels = _attach_labels(inputs, labels, trained.tree, id_column)
    result = _forward(trained, inputs.images, cfg.batch_size, dev)
    weight = trained.model.first_layer_weight.detach().float().cpu().numpy()  # (C_out, 3, k, k)
    files = {"filters": [_save(plot_filters(weight), out / "filters.png")]}
    files["activations"], example_id = _activation_figures(trained, inputs, cfg, dev, out)
    files["units"], units = _unit_figures(result["features"], result["crops"], inputs.ids, cfg, out)
    files["errors"] = _error_figures(result["predictions"], labels, result["crops"], inputs.ids, cfg, out, id_column)
    if inputs.skipped:
        pd.DataFrame(inputs.skipped, columns=["id", "reason"]).to_csv(out / "skipped.csv", index=False)
    summary = dict(run_dir=str(run_dir), step=trained.step, source=inputs.source, n_images=int(len(inputs.ids)),
                   n_in_source=inputs.n_total, n_skipped=len(inputs.skipped), units=units.tolist(),
                   n_hidden_units=int(result["features"].shape[1]), example_id=example_id,
                   has_labels=bool(files["errors"]), config=cfg.to_dict(), files=files)
    write_json(summary, out / "analysis.json")
    path = out / "analysis.html"
    path.write_text(render("analysis.html", title="gzmorph analysis", s=summary), encoding="utf-8")
    return path
