"""Training: the paper's recipe and a fast large-batch recipe, with exact resume.

The whole (decoded, downscaled) training set sits in one uint8 tensor on the
training device, so augmentation and viewpoint extraction run on batches there and
nothing waits on a data loader.  Every random draw of step ``s`` (which images,
their perturbations, dropout) comes from generators seeded by ``(seed, s)``, so a
run resumed from a checkpoint at step ``s`` continues exactly as an uninterrupted
run would, without saving RNG states.
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm.auto import tqdm

from gzmorph.data.pixscale import HEADER
from gzmorph.errors import RunError
from gzmorph.metrics import masked_mse, masked_sums
from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model, to_channels_last
from gzmorph.nn.survey_augment import augment_survey
from gzmorph.models.resolve import resolve_model
from gzmorph.runtime import Runtime, load_checkpoint, refuse_overwrite, resolve_device, seed_everything
from gzmorph.training.averaging import WeightAverage
from gzmorph.training.finetune import FineTuning, check_init, prepare_finetuning
from gzmorph.training.losses import dirichlet_multinomial_nll
from gzmorph.training.distributed import Dist, all_sum, launch, setup
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.training.options import RunOptions
from gzmorph.models.metrics_log import append_metrics, read_metrics, truncate_metrics
from gzmorph.models.rundir import RUN_FILES, claim_run_dir, init_weights, read_run, save_checkpoint, save_run
from gzmorph.training.header_scale import RECORD_KEY
from gzmorph.training.trainset import load_training_data
from gzmorph.tree import get_tree

__all__ = ["RunOptions", "train", "learning_rate"]


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
    idx: list[int] = []
    while len(idx) < cfg.batch_size:
        epoch, pos = divmod(start + len(idx), n)
        idx.extend(_epoch_order(n, cfg.seed, epoch)[pos : pos + cfg.batch_size - len(idx)])
    # Each rank takes its contiguous shard of the global batch.
    per = cfg.batch_size // world
    return torch.tensor(idx[rank * per : (rank + 1) * per])


@functools.lru_cache(maxsize=2)
def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The seeded order of the training examples in ``epoch`` (cached: asked every step)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(_step_seed(seed, epoch, 1))).tolist()


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig, groups: list[dict] | None = None
                    ) -> torch.optim.Optimizer:
    # groups: the fine-tuning parameter groups (frozen ones left out, each with its lr_scale)
    params = groups if groups is not None else model.parameters()
    if cfg.optimizer == "nesterov":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.inference_mode()
def validation_sums(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
                    rt: Runtime, geometry: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer column, the sum of squared errors and the count of the available label entries.

    One identity view per image; float64 ``(n_answers,)`` tensors on the device (summed
    over processes by the caller; the overall RMSE is ``sqrt(sse.sum() / count.sum())``).
    ``geometry`` ``(N, 4)``: the images' recentring (:func:`gzmorph.nn.augment.place`).
    """
    model.eval()
    sq = torch.zeros(labels.shape[1], dtype=torch.float64, device=rt.device)
    count = torch.zeros_like(sq)
    for i in range(0, len(images), cfg.eval_batch_size):
        x = images[i : i + cfg.eval_batch_size]
        g = None if geometry is None else geometry[i : i + len(x)]
        crops = aug.render_crops(x, aug.place(aug.fixed_transforms(len(x)), g).to(rt.device), cfg.augment, None)
        with rt.autocast_context():
            pred = model(crops).float()
        batch_sq, batch_count = masked_sums(pred, labels[i : i + len(x)], axis=0)
        sq += batch_sq.double()
        count += batch_count.double()
    return sq, count


def question_rmse(sq: torch.Tensor, count: torch.Tensor, tree: Any) -> dict[str, float | None]:
    """Validation RMSE of each question from per-column sums (None: no label of that question)."""
    sq, count = sq.cpu().numpy(), count.cpu().numpy()
    out: dict[str, float | None] = {}
    for q, sl in zip(tree.questions, tree.slices):
        n = float(count[sl].sum())
        out[q.name] = math.sqrt(float(sq[sl].sum()) / n) if n > 0 else None
    return out


def train(cfg: TrainConfig, data: str | Path, out: str | Path, options: RunOptions | None = None,
          **kwargs: Any) -> dict[str, Any]:
    """Train a network and write a run directory.

    Parameters
    ----------
    cfg : TrainConfig
        What is trained.
    data : path
        Kaggle directory, CSV/Parquet catalog or image cache (``gzmorph prepare``).
    out : path
        Run directory: ``config.json``, ``metrics.jsonl``, ``checkpoints/{last,best}.pt``.
    options : RunOptions, optional
        How the run is carried out (device, resume, workers, time budget, DDP
        processes, catalog columns, FITS composite), or its fields as keyword
        arguments (``device="cpu", workers=0``...).

    Returns
    -------
    dict
        ``step``, ``examples``, ``best_val_rmse``, ``last_val_rmse``, ``seconds``, ``finished`` and,
        when trained in this process, ``model`` (the network after the last step).
    """
    opts = options or RunOptions(**kwargs)
    device, resume, workers, progress = opts.device, opts.resume, opts.workers, opts.progress
    stretch = opts.stretch
    out = Path(out)
    check_init(cfg)  # freezing needs pretrained weights: say so before any work
    refuse_overwrite([data], folders=[out])  # the run's files must never replace the data
    claim_run_dir(out, resume)  # before any work and before starting processes
    if opts.processes > 1:
        launch(train, opts.processes, cfg, data, out, replace(opts, processes=1))
        return _result_from_run(out)
    ckpt, header_field, start = None, None, None
    if resume:
        cfg, ckpt, header_field = _resumed(cfg, out)
    elif cfg.init_from:
        # fine-tuning: start from that run's best weights (or a model package's, or a Hub model's),
        # loaded before the data so a bad --init-from fails before any decoding
        start = resolve_model(cfg.init_from, "best", device="cpu", purpose="fine-tuned")
    if start is not None and cfg.pixel_scale == HEADER:
        # Fine-tuning on FITS cutouts: show them at the field the starting network learned
        # galaxies at, not at their own median, or its features would see every galaxy resized.
        header_field = start.config.field
        print(f"fine-tuning from {cfg.init_from}: the cutouts are shown at its field {header_field:.4g}\"")
    rt = resolve_device(device, precision=cfg.precision)
    d = setup(rt.device.type)
    if d.enabled and rt.is_cuda:
        rt = resolve_device(f"cuda:{d.local_rank}", precision=cfg.precision)
        torch.cuda.set_device(rt.device)
    if cfg.batch_size % d.world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {d.world} processes")
    seed_everything(cfg.seed)
    tree = get_tree(cfg.tree)
    # Store the tree itself, so the run stays loadable when a tree file moves.
    cfg = cfg.override(tree=tree.to_dict())
    ds = load_training_data(data, cfg, tree, out, workers=workers, progress=progress and d.is_main,
                            id_column=opts.id_column, path_column=opts.path_column, stretch=stretch,
                            header_field=header_field)
    if cfg.pixel_scale == HEADER:  # the run stores the field it trained at as a number (training/header_scale.py)
        cfg = cfg.override(pixel_scale=ds.header_scale["pixel_scale"], pixel_scale_side=ds.header_scale["side"])
    facts = {"pca": ds.pca, "source": str(data), "source_path": _resolved(data),
             "fingerprint": ds.fingerprint, "n_train": len(ds.train_images), "n_val": len(ds.val_images),
             "label_columns": ds.label_columns, "processes": d.world, "n_unlabelled_dropped": ds.n_unlabelled,
             **({"stretch": stretch.to_dict()} if stretch is not None else {}),
             **({"n_not_recentred": ds.n_not_recentred} if cfg.augment.recentre else {}),
             **({RECORD_KEY: ds.header_scale} if ds.header_scale is not None else {})}
    if ckpt is not None:
        facts["data_history"] = _resumed_data(out, facts, int(ckpt["step"]), opts.new_data)
    model = build_model(cfg.model, tree).to(rt.device)
    if rt.channels_last:
        model = to_channels_last(model)
    tuning = prepare_finetuning(model, cfg)  # frozen stages, per-group learning rates
    optimizer = _make_optimizer(model, cfg, tuning.param_groups)
    step, best, init = 0, math.inf, None
    if start is not None:
        init = init_weights(model, cfg, tree, start)
    elif ckpt is not None and cfg.init_from:  # resumed: keep the record of the first start
        init = read_run(out)[1].get("init")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step, best = int(ckpt["step"]), float(ckpt["best_val_rmse"])
    ema = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    if ema is not None and ckpt is not None:
        ema.model.load_state_dict(ckpt["ema"])
    if d.is_main:
        save_run(out, cfg, {**facts, **({"init": init} if init else {}),
                            **({"finetuning": tuning.summary()} if tuning.param_groups else {})})
        truncate_metrics(out, step)
    fwd: torch.nn.Module = model
    if d.enabled:
        # The only buffers are the tree's constant index tensors: nothing to broadcast.
        fwd = DDP(model, device_ids=[rt.device.index] if rt.is_cuda else None, broadcast_buffers=False)
    if cfg.compile == "always" or (cfg.compile == "cuda" and rt.is_cuda):
        fwd = torch.compile(fwd)
    return _loop(cfg, model, fwd, optimizer, ds, rt, d, out, step, best, opts.max_minutes, progress and d.is_main,
                 ema, tuning)


def _resumed(cfg: TrainConfig, out: Path) -> tuple[TrainConfig, dict[str, Any], float | None]:
    """The stored configuration and last checkpoint of the run to resume (warning about new values given).

    The third value is the run's field when it trained at its FITS headers' scales
    (:mod:`gzmorph.training.header_scale`): the resumed run shows its images at that field.
    """
    ckpt = load_checkpoint(out / RUN_FILES["last"])
    stored = TrainConfig.from_dict(ckpt["config"])
    header_field = stored.field if RECORD_KEY in read_run(out)[1] else None
    # "header" given again on resume is where the stored number came from: not a new value.
    same = ("pixel_scale", "pixel_scale_side") if cfg.pixel_scale == HEADER and header_field else ()
    changed = sorted(k for k, v in cfg.to_dict().items() if k != "tree" and k not in same and stored.to_dict()[k] != v)
    if changed:
        warnings.warn(f"resuming {out} with its stored configuration; ignoring the new values of "
                      f"{', '.join(changed)}", stacklevel=3)
    return stored, ckpt, header_field


def _resolved(data: Any) -> str:
    # A path given as data, resolved (the same data from another working directory);
    # an opened catalog or cache is described by its str.
    return str(Path(data).resolve()) if isinstance(data, (str, os.PathLike)) else str(data)


def _resumed_data(out: Path, facts: dict[str, Any], step: int, new_data: bool) -> list[dict[str, Any]]:
    """Refuse resuming on other data unless ``new_data``; return the run's data history.

    The data is the same when its resolved path and its fingerprint (ids and labels)
    are; a run resumed on new data records the data it left at the resumed step.
    """
    old = read_run(out)[1]
    history = list(old.get("data_history", []))
    old_path = old.get("source_path") or str(Path(str(old.get("source", ""))).resolve())
    changed = [what for what, differs in (
        (f"path {old_path} -> {facts['source_path']}", old_path != facts["source_path"]),
        ("ids or labels (fingerprint)", old.get("fingerprint", facts["fingerprint"]) != facts["fingerprint"]))
        if differs]
    if not changed:
        return history
    if not new_data:
        raise RunError(f"cannot resume {out} on other data ({'; '.join(changed)}): it would go on training "
                       "on data the run did not start with; resume with the original --data, or pass "
                       "--new-data to continue on this data (recorded in config.json)")
    warnings.warn(f"resuming {out} at step {step} on new data ({'; '.join(changed)}); recorded in config.json",
                  stacklevel=3)
    return [*history, {"source": old.get("source"), "source_path": old_path,
                       "fingerprint": old.get("fingerprint"), "until_step": step}]


def _result_from_run(out: Path) -> dict[str, Any]:
    """The summary of a run written by other processes (rank 0's checkpoint and metrics)."""
    ckpt = load_checkpoint(out / RUN_FILES["last"])
    last = (read_metrics(out) or [{}])[-1]
    cfg = TrainConfig.from_dict(ckpt["config"])
    return {"step": int(ckpt["step"]), "examples": int(ckpt["step"]) * cfg.batch_size,
            "best_val_rmse": float(ckpt["best_val_rmse"]), "last_val_rmse": last.get("val_rmse", math.nan),
            "seconds": last.get("seconds", math.nan), "finished": int(ckpt["step"]) >= cfg.steps}


def _loop(cfg, model, fwd, optimizer, ds, rt: Runtime, d: Dist, out: Path, step: int, best: float,
          max_minutes: float | None, progress: bool, ema: WeightAverage | None = None,
          tuning: FineTuning | None = None) -> dict[str, Any]:
    # The count loss trains on vote counts, the paper's loss on fractions; validation scores fractions.
    targets = ds.train_votes if cfg.loss == "dirichlet-multinomial" else ds.train_labels
    images, labels = ds.train_images.to(rt.device), targets.to(rt.device)
    # Each process validates its own slice of the held-out set; the sums are combined.
    val = slice(d.rank * len(ds.val_images) // d.world, (d.rank + 1) * len(ds.val_images) // d.world)
    val_images, val_labels = ds.val_images[val].to(rt.device), ds.val_labels[val].to(rt.device)
    val_geometry = None if ds.val_geometry is None else ds.val_geometry[val]
    eval_steps = max(1, cfg.eval_every // cfg.batch_size)
    t0, running, n_running, last_val = time.monotonic(), 0.0, 0, math.nan
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, unit="step", dynamic_ncols=True)
    try:
        while step < cfg.steps:
            loss = _train_step(cfg, model, fwd, optimizer, images, labels, ds.pca, rt, d, step, ds.train_geometry,
                               tuning)
            if ema is not None:
                ema.update(model, step)
            running, n_running, step = running + loss, n_running + 1, step + 1
            bar.update(1)
            timeout = _out_of_time(t0, max_minutes, step, d, rt)
            if step % eval_steps == 0 or step == cfg.steps or timeout:
                sq, count = validation_sums(model if ema is None else ema.model, val_images, val_labels, cfg, rt,
                                            val_geometry)
                n_a = len(sq)  # one vector for every process's sums: (2 n_answers + 1,)
                totals = all_sum(torch.cat([sq, count, sq.new_tensor([float(running) / max(n_running, 1)])]),
                                 d, rt.device).cpu()
                sq, count = totals[:n_a], totals[n_a : 2 * n_a]
                last_val = math.sqrt(float(sq.sum()) / max(float(count.sum()), 1))
                record = {"step": step, "examples": step * cfg.batch_size, "lr": learning_rate(cfg, step - 1),
                          "train_loss": float(totals[-1]), "val_rmse": last_val,
                          # per question, for the model card (gzmorph.sharing.card)
                          "val_rmse_questions": question_rmse(sq, count, get_tree(cfg.tree)),
                          "seconds": round(time.monotonic() - t0, 2)}
                running, n_running = 0.0, 0
                _refuse_divergence(record, model, step, out)  # before a checkpoint keeps the broken weights
                if d.is_main:
                    append_metrics(out, record)
                    if last_val < best:
                        save_checkpoint(out / RUN_FILES["best"], model, step, cfg, optimizer, last_val, ema and ema.model)
                    save_checkpoint(out / RUN_FILES["last"], model, step, cfg, optimizer, min(best, last_val),
                                    ema and ema.model)
                best = min(best, last_val)
                d.barrier()  # nobody runs ahead of a checkpoint being written
                bar.set_postfix(loss=f"{record['train_loss']:.4f}", val_rmse=f"{last_val:.4f}")
            if timeout:
                break
    finally:
        bar.close()
    return {"step": step, "examples": step * cfg.batch_size, "best_val_rmse": best, "last_val_rmse": last_val,
            "seconds": time.monotonic() - t0, "finished": step >= cfg.steps, "model": model}


def _refuse_divergence(record: dict[str, Any], model: torch.nn.Module, step: int, out: Path) -> None:
    """Stop training, with a clear message, when the loss or the weights are no longer finite.

    Every process sees the same summed loss, so all stop together; the checkpoints keep
    the last finite state (nothing is written after the divergence).
    """
    broken = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if math.isfinite(record["train_loss"]) and math.isfinite(record["val_rmse"]) and not broken:
        return
    what = f"weights {broken[0]}" if broken else f"training loss {record['train_loss']}"
    raise RunError(f"training diverged by step {step} ({what} not finite; learning rate {record['lr']:g}): stopped; "
                   f"no checkpoint of {out} holds the diverged weights. Lower --lr (or set grad_clip) and start a new run")


def _out_of_time(t0: float, max_minutes: float | None, step: int, d: Dist, rt: Runtime) -> bool:
    """Whether the wall-time budget is spent; all processes decide together, every 10 steps.

    Checked only with a budget and only every few steps, because the collective is a
    host-device sync that would otherwise stall a GPU every step.
    """
    if max_minutes is None or step % 10:
        return False
    late = time.monotonic() - t0 > 60 * max_minutes
    return bool(all_sum([float(late)], d, rt.device)[0] > 0) if d.enabled else late


def _train_step(cfg, model, fwd, optimizer, images, labels, pca, rt: Runtime, d: Dist, step: int,
                geometry: torch.Tensor | None = None, tuning: FineTuning | None = None) -> torch.Tensor:
    model.train()
    if tuning is not None:
        tuning.keep_frozen()  # frozen stages keep their batch-norm statistics
    host_idx = _batch_indices(len(images), cfg, step, d.rank, d.world)
    # non_blocking: a blocking host-to-GPU copy would wait for the previous step to finish.
    idx = host_idx.to(images.device, non_blocking=True)
    gen = torch.Generator().manual_seed(_step_seed(cfg.seed, step, 1_000 + d.rank))
    t = aug.sample_transforms(len(idx), cfg.augment, gen)
    t = aug.place(t, None if geometry is None else geometry[host_idx]).to(rt.device)
    crops = aug.render_crops(images[idx], t, cfg.augment, pca)  # (B / world, 2, 3, 69, 69)
    # Survey-robust augmentation (off in the paper presets: then crops are returned as they are).
    crops = augment_survey(crops, cfg.augment, _step_seed(cfg.seed, step, 3_000 + d.rank))
    torch.manual_seed(_step_seed(cfg.seed, step, 2_000 + d.rank))  # dropout stream of this step and rank
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(cfg, step) * group.get("lr_scale", 1.0)
    counts = cfg.loss == "dirichlet-multinomial"
    with rt.autocast_context():
        pred = fwd(crops, constrain=step * cfg.batch_size >= cfg.clip_examples, concentrations=counts)
    target = labels[idx]
    if counts:
        # A mean over rows: the DDP gradient average is then the global-batch mean as is.
        loss = dirichlet_multinomial_nll(pred, target, get_tree(cfg.tree))
    elif d.enabled:
        # Normalise by the global count of labelled entries so the DDP gradient average
        # (a mean over processes) equals the gradient of the global-batch loss.
        local = (~torch.isnan(target)).sum()
        count = all_sum(local, d, rt.device)  # a device tensor: no host sync
        loss = masked_mse(pred, target) * local * d.world / count.to(pred.dtype).clamp_min(1)
    else:
        loss = masked_mse(pred, target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    # Per process: its share of the global-batch loss (they add up over processes).
    return loss.detach() / d.world if d.enabled else loss.detach()  # no host sync per step
