"""Throughput of the network: training steps and forward passes, in images per second.

A training step is everything the training loop does per batch on the device:
sample the perturbations, render the two crops of every image (affine warp),
extract the 16 viewpoints, forward, loss, backward and a momentum-SGD update.  A
forward pass renders fixed crops and predicts in eval mode without gradients.
Images are random uint8 arrays already on the device (the training set lives there).

Examples
--------
CPU (fp32 eager)::

    python benchmarks/model_speed.py --device cpu --presets small paper --threads 2

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
from gzmorph.nn.model import MODEL_PRESETS, GalaxyNet, count_parameters
from gzmorph.runtime import Runtime, resolve_device

_CPU_BATCH = {"small": 32, "paper": 16}


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


def bench_preset(name: str, batch: int, args: argparse.Namespace, rt: Runtime) -> list[dict]:
    """Training-step and forward throughput of one preset."""
    cfg = aug.AugmentConfig()
    pca = {"eigenvector": [0.68, 0.56, 0.47], "eigenvalue": 0.0175}
    model = GalaxyNet(MODEL_PRESETS[name]).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    fwd = torch.compile(model) if args.compile else model
    images = torch.randint(0, 256, (batch, args.image_size, args.image_size, 3), dtype=torch.uint8,
                           device=rt.device)
    labels = torch.rand(batch, model.tree.n_answers, device=rt.device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
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

    fixed = aug.fixed_transforms(batch).to(rt.device)

    @torch.no_grad()
    def forward() -> None:
        model.eval()
        crops = aug.render_crops(images, fixed, cfg, None)
        with rt.autocast_context():
            fwd(crops)

    rows = []
    for mode, fn in (("train step", train_step), ("forward", forward)):
        sec = _timed(fn, args.steps, args.warmup, rt)
        rows.append({"preset": name, "params": count_parameters(model), "mode": mode, "batch": batch,
                     "img_per_s": batch / sec, "ms_per_batch": 1000 * sec})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--presets", nargs="+", default=["small", "paper"], choices=sorted(MODEL_PRESETS))
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size for every preset (default: small 32 / paper 16 on CPU, 512 on CUDA)")
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
    rt = resolve_device(args.device, fast=not args.no_fast)
    device_name = torch.cuda.get_device_name(rt.device) if rt.is_cuda else platform.processor() or "cpu"
    info = {"device": str(rt.device), "device_name": device_name, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "autocast_bf16": rt.autocast, "channels_last": rt.channels_last,
            "compile": args.compile, "image_size": args.image_size}
    print(" ".join(f"{k}={v}" for k, v in info.items()))
    rows = []
    for name in args.presets:
        batch = args.batch_size or (512 if rt.is_cuda else _CPU_BATCH.get(name, 16))
        for row in bench_preset(name, batch, args, rt):
            rows.append(row)
            print(f"{row['preset']:>12} {row['mode']:>10}  batch {row['batch']:4d}  "
                  f"{row['img_per_s']:9.1f} img/s  ({row['ms_per_batch']:.1f} ms/batch)", flush=True)
    print("\n| preset | params | mode | batch | img/s |\n|---|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['params'] / 1e6:.2f}M | {r['mode']} | {r['batch']} | {r['img_per_s']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
