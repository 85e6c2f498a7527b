"""Run directories: the one writer and the one reader of their format.

The validation records (``metrics.jsonl``) have their own owner,
:mod:`gzmorph.models.metrics_log`.

A run directory holds ``config.json``, ``metrics.jsonl``, ``checkpoints/last.pt`` and
``checkpoints/best.pt``, and ``skipped.csv`` when images could not be decoded.
``config.json`` separates the training configuration from facts about the data::

    {"format": 2, "train": {...TrainConfig...}, "data": {"pca": ..., "source": ..., ...}}

Runs written before format 2 (one flat object, the TrainConfig fields next to the
facts) still load.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gzmorph.errors import RunError
from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.runtime import atomic_save, load_checkpoint, resolve_device, write_json
from gzmorph.tree import Tree, get_tree

__all__ = ["RUN_FILES", "RUN_FORMAT", "save_run", "read_run", "run_config", "write_skipped", "save_checkpoint", "TrainedModel",
           "load_run", "init_weights"]

RUN_FILES = {
    "config": "config.json",
    "metrics": "metrics.jsonl",
    "last": "checkpoints/last.pt",
    "best": "checkpoints/best.pt",
    "skipped": "skipped.csv",
}
RUN_FORMAT = 2


def save_run(run_dir: str | Path, cfg: TrainConfig, data: dict[str, Any]) -> Path:
    """Write ``config.json``: the resolved training config and the facts about its data.

    Parameters
    ----------
    run_dir : path
    cfg : TrainConfig
        Resolved (the tree stored as data, so the run loads after a tree file moves).
    data : dict
        Facts about the data: ``pca`` (needed to predict), ``source``, ``n_train``,
        ``n_val``, ``label_columns``, ``processes``...
    """
    path = Path(run_dir) / RUN_FILES["config"]
    write_json({"format": RUN_FORMAT, "train": cfg.to_dict(), "data": dict(data)}, path)
    return path


def read_run(run_dir: str | Path) -> tuple[TrainConfig, dict[str, Any]]:
    """The training config and the data facts of a run directory (any format)."""
    path = Path(run_dir) / RUN_FILES["config"]
    if not path.exists():
        raise RunError(f"{run_dir} is not a gzmorph run directory (no {RUN_FILES['config']})")
    try:
        stored = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(stored, dict):
        raise RunError(f"{path}: expected a JSON object, found {type(stored).__name__}")
    try:
        if "train" in stored:
            return TrainConfig.from_dict(stored["train"]), dict(stored.get("data", {}))
        # Format 1: the TrainConfig fields and the facts side by side.
        facts = ("pca", "data", "n_train", "n_val", "label_columns", "processes")
        data = {("source" if k == "data" else k): v for k, v in stored.items() if k in facts}
        return TrainConfig.from_dict({k: v for k, v in stored.items() if k not in facts}), data
    except (ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{path}: not a valid run configuration ({exc})") from None


def write_skipped(run_dir: str | Path, id_column: str, rows: list[tuple[Any, Any, str]]) -> Path:
    """Write ``skipped.csv``: the training images that could not be decoded (id, path, reason)."""
    path = Path(run_dir) / RUN_FILES["skipped"]
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([id_column, "path", "reason"])
        writer.writerows(rows)
    return path


def run_config(run_dir: str | Path) -> TrainConfig:
    """The training configuration stored in a run directory (a base for fine-tuning it)."""
    return read_run(run_dir)[0]


def save_checkpoint(path: str | Path, model: torch.nn.Module, step: int, cfg: TrainConfig,
                    optimizer: torch.optim.Optimizer | None = None, best: float = math.inf,
                    ema: torch.nn.Module | None = None) -> None:
    """Write a checkpoint atomically: model, optimizer, step, best validation RMSE, config.

    ``ema`` is the network with the averaged weights (``TrainConfig.ema_decay``), which
    prediction uses; ``model`` keeps the raw weights that training resumes from.
    """
    state = {"model": model.state_dict(), "step": step, "best_val_rmse": best, "config": cfg.to_dict()}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if ema is not None:
        state["ema"] = ema.state_dict()
    atomic_save(state, path)


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
    label_columns: list[str] | None = None  # answer columns it was trained on (None: unknown, all)
    stretch: dict[str, Any] | None = None  # colour composite of the FITS cutouts it was trained on (Stretch.to_dict)


def load_run(run_dir: str | Path, which: str = "best", device: str | torch.device | None = "auto") -> TrainedModel:
    """Load a run directory written by :func:`gzmorph.training.train.train`.

    ``which`` is ``"best"`` (lowest validation RMSE; falls back to ``"last"`` when the
    run never validated) or ``"last"``.  The model is returned in eval mode.
    """
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', not {which!r}")
    cfg, data = read_run(run_dir)
    path = run_dir / RUN_FILES[which]
    if not path.exists():
        path = run_dir / RUN_FILES["last"]
    if not path.exists():
        raise RunError(f"{run_dir} has no checkpoint yet ({RUN_FILES['best']} or {RUN_FILES['last']})")
    dev = device if isinstance(device, torch.device) else resolve_device(device).device
    ckpt = load_checkpoint(path, map_location=dev)
    tree = get_tree(cfg.tree)
    model = build_model(cfg.model, tree).to(dev)
    try:
        # A run trained with weight averaging predicts with the averaged weights.
        model.load_state_dict(ckpt.get("ema", ckpt["model"]))
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"{path}: its weights do not fit the network of {run_dir / RUN_FILES['config']} "
                       f"({first})") from None
    model.eval()
    return TrainedModel(model=model, tree=tree, augment=cfg.augment, pca=data.get("pca", {}),
                        image_size=cfg.image_size, config=cfg, step=int(ckpt["step"]), run_dir=run_dir,
                        label_columns=data.get("label_columns"), stretch=data.get("stretch"))


def init_weights(model: torch.nn.Module, cfg: TrainConfig, tree: Tree,
                 init: TrainedModel | None = None) -> dict[str, Any]:
    """Load the best weights of run ``cfg.init_from`` into ``model`` (fine-tuning).

    The run must have the same network and tree; returns what was loaded (run, step)
    for the new run's record.  ``init`` is that model already loaded (a model package
    or a Hub model, by :func:`gzmorph.models.resolve.resolve_model`).
    """
    init = init if init is not None else load_run(cfg.init_from, "best", device="cpu")
    if init.config.model.to_dict() != cfg.model.to_dict():
        raise RunError(f"--init-from {cfg.init_from}: that run trained another network "
                       f"({init.config.model.to_dict()}), not {cfg.model.to_dict()}; use its preset or "
                       "leave --preset out to take its configuration")
    if init.tree.to_dict() != tree.to_dict():
        raise RunError(f"--init-from {cfg.init_from}: that run predicts tree {init.tree.name!r} with other "
                       f"answers than tree {tree.name!r}")
    model.load_state_dict(init.model.state_dict())
    source = cfg.init_from if str(cfg.init_from).startswith("hf:") else str(Path(cfg.init_from).resolve())
    return {"run": source, "step": init.step}
