"""``gzmorph demo``: the whole job on generated data, nothing else needed."""

from __future__ import annotations

import argparse

HELP = "generate mock galaxies, train, predict, evaluate and write the report (the README's first command)"


RENAME = {"n_galaxies": "n"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from gzmorph.demo import DemoConfig
    from gzmorph.options import add_config_options

    p.add_argument("--out", default="gzmorph-demo", help="folder for the data, run, predictions and report")
    add_config_options(p, DemoConfig, rename=RENAME)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.options import config_values
    from gzmorph.demo import DemoConfig, format_summary, run_demo

    cfg = build(DemoConfig, config_values(args, DemoConfig, rename=RENAME))
    summary = run_demo(args.out, cfg, progress=not args.no_progress)
    print()
    print(format_summary(summary))
    return 0
