"""Run directories: the data a run trains on, and loading a trained run back.

A run directory holds ``config.json`` (the resolved :class:`~gzmorph.recipes.TrainConfig`
plus the colour PCA, the data it saw and the label columns it had),
``metrics.jsonl``, ``checkpoints/last.pt`` and ``checkpoints/best.pt``, and
``skipped.csv`` when images could not be decoded.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gzmorph import augment as aug
from gzmorph.data import Catalog, open_catalog, train_val_split
from gzmorph.images import load_images
from gzmorph.model import build_model
from gzmorph.recipes import TrainConfig
from gzmorph.runtime import load_checkpoint, resolve_device
from gzmorph.tree import Tree, get_tree

__all__ = ["RUN_FILES", "TrainingData", "load_training_data", "TrainedModel", "load_run", "open_source",
           "run_config", "init_weights"]

RUN_FILES = {
    "config": "config.json",
    "metrics": "metrics.jsonl",
    "last": "checkpoints/last.pt",
    "best": "checkpoints/best.pt",
    "skipped": "skipped.csv",
}


@dataclass
class TrainingData:
    """Decoded training and validation images (uint8 ``(N, S, S, 3)``) with their labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    pca: dict[str, Any]
    label_columns: list[str]


def open_source(data: str | Path, tree: Tree, size: int, workers: int | None = None,
                progress: bool = True, split: str = "train", id_column: str = "GalaxyID",
                path_column: str = "path") -> tuple[Catalog, np.ndarray, list[tuple[int, str]]]:
    """Open a catalog or an image cache and return its decoded images.

    Returns the catalog, ``uint8 (N, size, size, 3)`` images and the ``(row, reason)``
    pairs of the rows that could not be decoded.
    """
    from gzmorph.cache import ImageCache, is_cache

    if is_cache(data):
        cache = ImageCache.open(data)
        if cache.size != size:
            raise ValueError(f"cache {data} holds {cache.size}-px images but the run needs {size} px; "
                             f"prepare it with --size {size}")
        catalog = cache.catalog()
        failed = [(int(i), "failed when the cache was prepared") for i in np.flatnonzero(~cache.ok)]
        return catalog, np.asarray(cache.images), failed
    catalog = open_catalog(data, tree=tree, split=split, id_column=id_column, path_column=path_column)
    if all(p is None for p in catalog.paths):
        raise ValueError(f"{data}: the catalog has no image paths (no {path_column!r} column); "
                         "give the image path column with --path-column")
    images, failed = load_images(catalog.paths, size=size, workers=workers, progress=progress)
    return catalog, images, failed


def load_training_data(data: str | Path, cfg: TrainConfig, tree: Tree, out: Path,
                       workers: int | None = None, progress: bool = True, id_column: str = "GalaxyID",
                       path_column: str = "path") -> TrainingData:
    """Decode a labelled catalog, drop (and record) undecodable rows, split it, compute the PCA."""
    catalog, images, failed = open_source(data, tree, cfg.image_size, workers, progress,
                                          id_column=id_column, path_column=path_column)
    if not catalog.has_labels:
        raise ValueError(f"{data}: no answer columns of tree {tree.name!r} found; training needs labels")
    out.mkdir(parents=True, exist_ok=True)
    keep = np.ones(len(catalog), dtype=bool)
    if failed:
        with open(out / RUN_FILES["skipped"], "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow([catalog.id_column, "path", "reason"])
            for row, reason in failed:
                keep[row] = False
                w.writerow([catalog.ids[row], catalog.paths[row] if catalog.paths is not None else "", reason])
        print(f"skipped {len(failed)} undecodable images (listed in {out / RUN_FILES['skipped']})")
    rows = np.flatnonzero(keep)
    catalog = catalog.subset(rows)
    images = images[rows]
    train_cat, val_cat = train_val_split(catalog, cfg.val_fraction, cfg.split_seed)
    pos = {k: i for i, k in enumerate(catalog.ids.tolist())}
    tr = np.array([pos[k] for k in train_cat.ids.tolist()], dtype=np.int64)
    va = np.array([pos[k] for k in val_cat.ids.tolist()], dtype=np.int64)
    train_images = torch.from_numpy(np.ascontiguousarray(images[tr]))
    return TrainingData(
        train_images=train_images,
        train_labels=torch.from_numpy(train_cat.labels),
        val_images=torch.from_numpy(np.ascontiguousarray(images[va])),
        val_labels=torch.from_numpy(val_cat.labels),
        pca=aug.color_pca(train_images.numpy(), seed=cfg.seed),
        label_columns=list(catalog.label_columns),
    )


@dataclass
class TrainedModel:
    """A trained network ready for inference, with what is needed to feed it."""

    model: torch.nn.Module  # GalaxyNet or SymmetricNet
    tree: Tree
    augment: aug.AugmentConfig
    pca: dict[str, Any]
    image_size: int
    config: TrainConfig
    step: int
    run_dir: Path


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device | None = "auto") -> TrainedModel:
    """Load a run directory written by :func:`gzmorph.train.train`.

    ``which`` is ``"best"`` (lowest validation RMSE; falls back to ``"last"`` when the
    run never validated) or ``"last"``.  The model is returned in eval mode.
    """
    run_dir = Path(run_dir)
    cfg_path = run_dir / RUN_FILES["config"]
    if not cfg_path.exists():
        raise FileNotFoundError(f"{run_dir} is not a gzmorph run directory (no {RUN_FILES['config']})")
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', not {which!r}")
    stored = json.loads(cfg_path.read_text())
    # config.json is the TrainConfig plus facts about the run (PCA, data, sizes).
    known = {f.name for f in fields(TrainConfig)}
    extra = {k: v for k, v in stored.items() if k not in known}
    cfg = TrainConfig.from_dict({k: v for k, v in stored.items() if k in known})
    path = run_dir / RUN_FILES[which]
    if not path.exists():
        path = run_dir / RUN_FILES["last"]
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet ({RUN_FILES['best']} or {RUN_FILES['last']})")
    if isinstance(device, torch.device):
        dev = device
    else:
        dev = resolve_device(device).device
    ckpt = load_checkpoint(path, map_location=dev)
    tree = get_tree(cfg.tree)
    model = build_model(cfg.model, tree).to(dev)
    # A run trained with weight averaging predicts with the averaged weights.
    model.load_state_dict(ckpt.get("ema", ckpt["model"]))
    model.eval()
    return TrainedModel(model=model, tree=tree, augment=cfg.augment, pca=extra.get("pca", {}),
                        image_size=cfg.image_size, config=cfg, step=int(ckpt["step"]), run_dir=run_dir)


def run_config(run_dir: str | Path) -> TrainConfig:
    """The training configuration stored in a run directory (a base for fine-tuning it)."""
    path = Path(run_dir) / RUN_FILES["config"]
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a gzmorph run directory (no {RUN_FILES['config']})")
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig.from_dict({k: v for k, v in json.loads(path.read_text()).items() if k in known})


def init_weights(model: torch.nn.Module, cfg: TrainConfig, tree: Tree) -> dict[str, Any]:
    """Load the best weights of run ``cfg.init_from`` into ``model`` (fine-tuning).

    The run must have the same network and tree; returns what was loaded (run, step)
    for the new run's record.
    """
    init = load_run(cfg.init_from, "best", device="cpu")
    if init.config.model.to_dict() != cfg.model.to_dict():
        raise ValueError(f"--init-from {cfg.init_from}: that run trained another network "
                         f"({init.config.model.to_dict()}), not {cfg.model.to_dict()}; use its preset or "
                         "leave --preset out to take its configuration")
    if init.tree.to_dict() != tree.to_dict():
        raise ValueError(f"--init-from {cfg.init_from}: that run predicts tree {init.tree.name!r} with other "
                         f"answers than tree {tree.name!r}")
    model.load_state_dict(init.model.state_dict())
    return {"run": str(Path(cfg.init_from).resolve()), "step": init.step}
