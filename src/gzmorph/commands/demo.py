"""``gzmorph demo``: the whole job on generated data, nothing else needed."""

from __future__ import annotations

import argparse

HELP = "generate mock galaxies, train, predict, evaluate and write the report (the README's first command)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="gzmorph-demo", help="folder for the data, run, predictions and report")
    p.add_argument("--minutes", type=float, default=5.0, help="training time budget (stops early if spent)")
    p.add_argument("--examples", type=int, default=40_000, help="training examples")
    p.add_argument("--n", type=int, default=3000,
                   help="mock galaxies to train on (10%% of them validate); 10%% more are made as test galaxies")
    p.add_argument("--preset", default="small", help="training preset")
    p.add_argument("--tta", default="rot", choices=["none", "rot", "paper"], help="test-time averaging")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.demo import DemoConfig, format_summary, run_demo

    cfg = build(DemoConfig, dict(n_galaxies=args.n, minutes=args.minutes, examples=args.examples,
                                 preset=args.preset, tta=args.tta, seed=args.seed, device=args.device,
                                 workers=args.workers))
    summary = run_demo(args.out, cfg, progress=not args.no_progress)
    print()
    print(format_summary(summary))
    return 0
