"""Prediction forward rate: onnxruntime against torch eager and compiled, fp32 and bf16.

Every mode runs the same network (one fresh preset network, same weights) on the same
batch of crops (rendered once from random uint8 images by ``render_crops``), in one
process, with the same number of threads; the ONNX graph is the one ``gzmorph export
--format onnx`` writes.  onnxruntime's CPU provider has no bf16 kernels, so ONNX runs
fp32 only.

Usage: ``python benchmarks/onnx_speed.py [--presets small p4m paper] [--batch 64] [--repeat 6] [--threads 2]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model
from gzmorph.models.onnx import load_onnx
from gzmorph.sharing.onnx_model import export_onnx
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import TrainedModel
from gzmorph.tree import GZ2


def rate(fn, crops: torch.Tensor, repeat: int) -> tuple[float, float]:
    """(images/s over ``repeat`` timed calls, seconds of the first call: warm-up/compilation)."""
    with torch.inference_mode():
        t = time.perf_counter()
        fn(crops)
        first = time.perf_counter() - t
        fn(crops)
        t = time.perf_counter()
        for _ in range(repeat):
            fn(crops)
        return len(crops) * repeat / (time.perf_counter() - t), first


def bf16(net):
    def run(x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return net(x)
    return run


def modes(preset: str, folder: Path) -> dict:
    cfg = get_preset(preset)
    torch.manual_seed(0)
    net = build_model(cfg.model, GZ2).eval()
    trained = TrainedModel(model=net, tree=GZ2, augment=cfg.augment, pca={}, image_size=cfg.image_size, config=cfg,
                           step=0, run_dir=folder / preset)
    t = time.perf_counter()
    export_onnx(trained, folder / f"{preset}.onnx")
    print(f"{preset:>8} ONNX export {time.perf_counter() - t:.1f} s", flush=True)
    onnx_net = load_onnx(folder / f"{preset}.onnx").model
    return {"onnxruntime fp32": onnx_net, "torch eager fp32": net, "torch eager bf16": bf16(net),
            "torch compiled fp32": torch.compile(net), "torch compiled bf16": bf16(torch.compile(net)), "cfg": cfg}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["small", "p4m"])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=6)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)  # onnxruntime takes torch's thread count (OnnxNet)
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            fns = modes(preset, Path(tmp))
            cfg = fns.pop("cfg")
            images = torch.randint(0, 255, (args.batch, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))
            crops = aug.render_crops(images, aug.fixed_transforms(args.batch), cfg.augment)
            for name, fn in fns.items():
                r, first = rate(fn, crops, args.repeat)
                print(f"{preset:>8} {name:<22} {r:8.1f} img/s   (first call {first:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
