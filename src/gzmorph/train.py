"""Training: the paper's recipe and a fast large-batch recipe, with exact resume.

The whole (decoded, downscaled) training set sits in one uint8 tensor on the
training device, so augmentation and viewpoint extraction run on batches there and
nothing waits on a data loader.  Every random draw of step ``s`` (which images,
their perturbations, dropout) comes from generators seeded by ``(seed, s)``, so a
run resumed from a checkpoint at step ``s`` continues exactly as an uninterrupted
run would, without saving RNG states.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from gzmorph import augment as aug
from gzmorph.model import GalaxyNet
from gzmorph.recipes import PRESETS, TrainConfig, get_preset
from gzmorph.runs import RUN_FILES, TrainedModel, load_run, load_training_data
from gzmorph.runtime import Runtime, atomic_save, load_checkpoint, resolve_device, seed_everything, write_json
from gzmorph.tree import get_tree

__all__ = ["TrainConfig", "PRESETS", "get_preset", "train", "load_run", "TrainedModel", "masked_mse"]


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the label entries that are present (not NaN)."""
    mask = ~torch.isnan(target)
    diff = torch.where(mask, pred.float() - torch.nan_to_num(target), torch.zeros((), device=pred.device))
    return diff.square().sum() / mask.sum().clamp_min(1)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate at ``step`` (optimizer steps, each of ``batch_size`` examples)."""
    seen = step * cfg.batch_size
    warm = min(1.0, (seen + cfg.batch_size) / cfg.warmup_examples) if cfg.warmup_examples else 1.0
    if cfg.schedule == "step":
        n_decays = sum(seen >= m * cfg.examples for m in cfg.lr_milestones)
        return cfg.lr * warm * cfg.lr_decay**n_decays
    progress = min(1.0, seen / cfg.examples)
    return cfg.lr * warm * 0.5 * (1 + math.cos(math.pi * progress))


def _step_seed(seed: int, step: int, stream: int) -> int:
    # Distinct, reproducible seeds per (run seed, step, purpose).
    return (seed * 1_000_003 + step * 7_919 + stream * 104_729) % (2**63 - 1)


def _batch_indices(n: int, cfg: TrainConfig, step: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of the examples of ``step``: epochs are seeded permutations of the training set."""
    start = step * cfg.batch_size
    idx = []
    while len(idx) < cfg.batch_size:
        epoch, pos = divmod(start + len(idx), n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(cfg.seed, epoch, 1)))
        idx.extend(perm[pos : pos + cfg.batch_size - len(idx)].tolist())
    # Each rank takes its contiguous shard of the global batch.
    per = cfg.batch_size // world
    return torch.tensor(idx[rank * per : (rank + 1) * per])


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "nesterov":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.inference_mode()
def evaluate_rmse(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                  pca: dict | None, rt: Runtime) -> float:
    """RMSE over the available label entries, one fixed (identity) view per image."""
    model.eval()
    sq, count = 0.0, 0
    for i in range(0, len(images), cfg.eval_batch_size):
        x = images[i : i + cfg.eval_batch_size]
        crops = aug.render_crops(x, aug.fixed_transforms(len(x)).to(rt.device), cfg.augment, None)
        with rt.autocast_context():
            pred = model(crops).float()
        y = labels[i : i + len(x)]
        mask = ~torch.isnan(y)
        sq += float((pred - torch.nan_to_num(y)).square()[mask].sum())
        count += int(mask.sum())
    return math.sqrt(sq / max(count, 1))


def _save(path: Path, model, optimizer, step: int, cfg: TrainConfig, best: float) -> None:
    atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "best_val_rmse": best, "config": cfg.to_dict()}, path)


def train(cfg: TrainConfig, data: str | Path, out: str | Path, *, device: str | None = "auto",
          resume: bool = False, workers: int | None = None, max_minutes: float | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Train a network and write a run directory.

    Parameters
    ----------
    cfg : TrainConfig
    data : path
        Kaggle directory, CSV/Parquet catalog or image cache (``gzmorph prepare``).
    out : path
        Run directory: ``config.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt``.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    resume : bool
        Continue from ``checkpoints/last.pt`` (the stored config wins).
    max_minutes : float, optional
        Wall-time budget; the run stops cleanly (checkpoint written) when it is spent.

    Returns
    -------
    dict
        ``step``, ``examples``, ``best_val_rmse``, ``last_val_rmse``, ``seconds``.
    """
    out = Path(out)
    last_path = out / RUN_FILES["last"]
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path)
        cfg = TrainConfig.from_dict(ckpt["config"])
    elif (out / RUN_FILES["config"]).exists() and not resume:
        raise FileExistsError(f"{out} already holds a run; use --resume to continue it or another --out")
    else:
        ckpt = None
    rt = resolve_device(device)
    seed_everything(cfg.seed)
    tree = get_tree(cfg.tree)
    # Store the tree itself, so the run stays loadable when a tree file moves.
    cfg = cfg.override(tree=tree.to_dict())
    ds = load_training_data(data, cfg, tree, out, workers=workers, progress=progress)
    model = GalaxyNet(cfg.model, tree).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, cfg)
    step, best = 0, math.inf
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt["best_val_rmse"])
    write_json({**cfg.to_dict(), "pca": ds.pca, "data": str(data), "n_train": len(ds.train_images),
                "n_val": len(ds.val_images), "label_columns": ds.label_columns}, out / RUN_FILES["config"])
    fwd = torch.compile(model) if (cfg.compile and rt.is_cuda) else model
    return _loop(cfg, model, fwd, optimizer, ds, rt, out, step, best, max_minutes, progress)


def _loop(cfg, model, fwd, optimizer, ds, rt: Runtime, out: Path, step: int, best: float,
          max_minutes: float | None, progress: bool) -> dict[str, Any]:
    images, labels = ds.train_images.to(rt.device), ds.train_labels.to(rt.device)
    val_images, val_labels = ds.val_images.to(rt.device), ds.val_labels.to(rt.device)
    eval_steps = max(1, cfg.eval_every // cfg.batch_size)
    t0, running, n_running, last_val = time.monotonic(), 0.0, 0, math.nan
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    metrics = open(out / RUN_FILES["metrics"], "a")
    try:
        while step < cfg.steps:
            loss = _train_step(cfg, model, fwd, optimizer, images, labels, ds.pca, rt, step)
            running, n_running, step = running + loss, n_running + 1, step + 1
            bar.update(1)
            timeout = max_minutes is not None and time.monotonic() - t0 > 60 * max_minutes
            if step % eval_steps == 0 or step == cfg.steps or timeout:
                last_val = evaluate_rmse(fwd, val_images, val_labels, cfg, ds.pca, rt)
                record = {"step": step, "examples": step * cfg.batch_size, "lr": learning_rate(cfg, step - 1),
                          "train_loss": float(running) / max(n_running, 1), "val_rmse": last_val,
                          "seconds": round(time.monotonic() - t0, 2)}
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                running, n_running = 0.0, 0
                if last_val < best:
                    best = last_val
                    _save(out / RUN_FILES["best"], model, optimizer, step, cfg, best)
                _save(out / RUN_FILES["last"], model, optimizer, step, cfg, best)
                bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_rmse=f"{last_val:.4f}")
            if timeout:
                break
    finally:
        metrics.close()
        bar.close()
    return {"step": step, "examples": step * cfg.batch_size, "best_val_rmse": best, "last_val_rmse": last_val,
            "seconds": time.monotonic() - t0, "finished": step >= cfg.steps}


def _train_step(cfg, model, fwd, optimizer, images, labels, pca, rt: Runtime, step: int,
                rank: int = 0, world: int = 1) -> torch.Tensor:
    model.train()
    idx = _batch_indices(len(images), cfg, step, rank, world).to(images.device)
    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step, 2 + rank))
    t = aug.sample_transforms(len(idx), cfg.augment, gen).to(rt.device)
    crops = aug.render_crops(images[idx], t, cfg.augment, pca)  # (B, 2, 3, 69, 69)
    torch.manual_seed(_step_seed(cfg.seed, step, 3 + rank))  # dropout stream of this step
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step)
    with rt.autocast_context():
        pred = fwd(crops, constrain=step * cfg.batch_size >= cfg.clip_examples)
    loss = masked_mse(pred, labels[idx])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()  # stays on the device: no host sync per step
