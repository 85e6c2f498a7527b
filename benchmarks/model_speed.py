"""Throughput of the network: training steps and forward passes, in images per second.

A training step is everything the training loop does per batch on the device:
sample the perturbations, render the crops of every image (affine warp), the
network (16 viewpoints for the paper's family), loss, backward and the preset's
optimizer update (with its weight average, if any).  A forward pass renders fixed
crops and predicts in eval mode without gradients.  Images are random uint8 arrays
already on the device (the training set lives there).  Presets are the training
presets of :mod:`gzmorph.recipes` (model, crop size, batch size, optimizer).

``--paths`` measures the speed paths one by one: ``fp32``, ``bf16`` (autocast),
``cl`` (channels_last) and ``compile`` (``torch.compile`` of the model, with its
start-up time reported), joined with ``+``.

Examples
--------
CPU, every speed path of the CPU presets::

    python benchmarks/model_speed.py --device cpu --presets small p4m cyclic paper --threads 2 \
        --paths fp32 bf16 fp32+cl bf16+cl fp32+compile bf16+compile

GPU (bf16 autocast + channels_last, optionally compiled)::

    python benchmarks/model_speed.py --device cuda --presets small paper --batch-size 512 --compile
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model, count_parameters
from gzmorph.training.recipes import PRESETS, get_preset
from gzmorph.runtime import Runtime, resolve_device
from gzmorph.training.averaging import WeightAverage


def _sync(rt: Runtime) -> None:
    if rt.is_cuda:
        torch.cuda.synchronize(rt.device)


def _timed(fn, steps: int, warmup: int, rt: Runtime) -> float:
    """Seconds per call of ``fn`` over ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    _sync(rt)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    _sync(rt)
    return (time.perf_counter() - t0) / steps


def _runtime(args: argparse.Namespace, path: str | None) -> tuple[Runtime, bool]:
    """The runtime of one speed path (``None``: the device's defaults) and whether to compile."""
    if path is None:
        return resolve_device(args.device, fast=not args.no_fast), args.compile
    parts = set(path.split("+"))
    unknown = parts - {"fp32", "bf16", "cl", "compile"}
    if unknown or not parts & {"fp32", "bf16"}:
        raise SystemExit(f"bad --paths entry {path!r}: join fp32 or bf16 with optional cl and compile by '+'")
    base = resolve_device(args.device, precision="bf16" if "bf16" in parts else "fp32")
    return Runtime(device=base.device, autocast="bf16" in parts, channels_last="cl" in parts), "compile" in parts


def bench_preset(name: str, batch: int, args: argparse.Namespace, rt: Runtime, compile_: bool) -> list[dict]:
    """Training-step and forward throughput of one preset."""
    preset = get_preset(name)
    cfg = preset.augment
    pca = {"eigenvector": [0.68, 0.56, 0.47], "eigenvalue": 0.0175}
    torch.manual_seed(0)
    model = build_model(preset.model).to(rt.device)
    if rt.channels_last:
        model = model.to_channels_last() if hasattr(model, "to_channels_last") else \
            model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if compile_ else model
    images = torch.randint(0, 256, (batch, args.image_size, args.image_size, 3), dtype=torch.uint8,
                           device=rt.device)
    labels = torch.rand(batch, model.tree.n_answers, device=rt.device)
    if preset.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=preset.weight_decay)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    ema = WeightAverage(model, preset.ema_decay) if preset.ema_decay else None
    gen = torch.Generator().manual_seed(0)

    def train_step() -> None:
        model.train()
        t = aug.sample_transforms(batch, cfg, gen).to(rt.device)
        crops = aug.render_crops(images, t, cfg, pca)
        with rt.autocast_context():
            pred = fwd(crops)
        loss = F.mse_loss(pred.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model, 100)

    fixed = aug.fixed_transforms(batch).to(rt.device)

    @torch.no_grad()
    def forward() -> None:
        model.eval()
        crops = aug.render_crops(images, fixed, cfg, None)
        with rt.autocast_context():
            fwd(crops)

    rows = []
    for mode, fn in (("train step", train_step), ("forward", forward)):
        t0 = time.perf_counter()
        fn()  # the first call holds the compilation, if any
        first = time.perf_counter() - t0
        sec = _timed(fn, args.steps, args.warmup, rt)
        rows.append({"preset": name, "params": count_parameters(model), "mode": mode, "batch": batch,
                     "img_per_s": batch / sec, "ms_per_batch": 1000 * sec, "first_call_s": round(first, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--presets", nargs="+", default=["small", "paper"], choices=sorted(PRESETS))
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size for every preset (default: the preset's on CPU, 512 on CUDA)")
    p.add_argument("--paths", nargs="+", default=None,
                   help="speed paths to compare, e.g. fp32 bf16 bf16+cl bf16+compile (default: the device's)")
    p.add_argument("--image-size", type=int, default=141, help="side of the source images in pixels")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation, cudnn autotune)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--no-fast", action="store_true", help="on CUDA: no bf16 autocast, no channels_last")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rt, _ = _runtime(args, None)
    device_name = torch.cuda.get_device_name(rt.device) if rt.is_cuda else platform.processor() or "cpu"
    info = {"device": str(rt.device), "device_name": device_name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "image_size": args.image_size}
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    for path in args.paths or [None]:
        rt, compile_ = _runtime(args, path)
        label = path or f"{'bf16' if rt.autocast else 'fp32'}{'+cl' if rt.channels_last else ''}" \
                        f"{'+compile' if compile_ else ''}"
        for name in args.presets:
            batch = args.batch_size or (512 if rt.is_cuda else get_preset(name).batch_size)
            for row in bench_preset(name, batch, args, rt, compile_):
                rows.append({**row, "path": label})
                print(f"{row['preset']:>12} {label:>14} {row['mode']:>10}  batch {row['batch']:4d}  "
                      f"{row['img_per_s']:9.1f} img/s  ({row['ms_per_batch']:.1f} ms/batch, "
                      f"first call {row['first_call_s']} s)", flush=True)
    print("\n| preset | params | path | mode | batch | img/s | first call (s) |\n|---|---:|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['path']} | {r['mode']} | {r['batch']} | "
              f"{r['img_per_s']:.1f} | {r['first_call_s']} |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
