"""Forward rate of one network on the CPU in fp32/bf16, eager/compiled (batch of fixed crops).

Usage: ``python benchmarks/forward_modes.py [--preset paper] [--batch 64] [--repeat 6]``
"""

from __future__ import annotations

import argparse
import time

import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.model import GalaxyNet


def rate(fn, crops: torch.Tensor, repeat: int) -> float:
    with torch.inference_mode():
        fn(crops)
        fn(crops)  # warm-up (and compilation)
        t = time.perf_counter()
        for _ in range(repeat):
            fn(crops)
        return len(crops) * repeat / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="paper")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=6)
    args = p.parse_args()
    torch.manual_seed(0)
    images = torch.randint(0, 255, (args.batch, 141, 141, 3), dtype=torch.uint8)
    crops = aug.render_crops(images, aug.fixed_transforms(args.batch), aug.AugmentConfig())
    fp32 = GalaxyNet(args.preset).eval()
    nhwc = GalaxyNet(args.preset).eval().to(memory_format=torch.channels_last)
    nhwc.load_state_dict(fp32.state_dict())

    def bf16(net):
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(x)
        return run

    modes = {"fp32 eager": fp32, "bf16 + channels_last eager": bf16(nhwc),
             "fp32 compiled": torch.compile(fp32), "bf16 + channels_last compiled": bf16(torch.compile(nhwc))}
    for name, fn in modes.items():
        print(f"{args.preset:>8} {name:<32} {rate(fn, crops, args.repeat):8.1f} img/s", flush=True)


if __name__ == "__main__":
    main()
