"""``gzmorph analyze``: the paper's Section 9 figures for a trained run."""

from __future__ import annotations

import argparse

HELP = "figures of what a trained network learned: filters, activations, hidden units, best/worst images"
DESCRIPTION = (
    "Load the run RUN_DIR and a set of IMAGES (Kaggle directory, CSV/Parquet catalog, image folder or "
    "cache from `gzmorph prepare`) and write to DIR the figures of Dieleman et al. (2015), Section 9: "
    "first-layer filters, the activations of every layer for one viewpoint, the images that activate "
    "units of the last hidden layer most and least, and (with labels) the images with the highest and "
    "lowest prediction error; all linked from DIR/analysis.html."
)


RENAME = {"n_units": "units", "n_examples": "examples", "n_errors": "errors"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gzmorph.evaluation.analyze import AnalyzeConfig
    from gzmorph.options import add_config_options, add_data_options

    parser.add_argument("--model", required=True, metavar="MODEL",
                        help="run directory from `gzmorph train`, model package from `gzmorph export`, or "
                             "hf:ORG/NAME[@REVISION]")
    parser.add_argument("--images", required=True, metavar="IMAGES", help="catalog, image folder or cache")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and analysis.html")
    parser.add_argument("--labels", default=None, metavar="CATALOG",
                        help="labels for the error figure (default: those that come with IMAGES)")
    parser.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint to load")
    add_config_options(parser, AnalyzeConfig, rename=RENAME)
    add_data_options(parser, ("id_column", "device", "workers"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.evaluation.analyze import AnalyzeConfig, analyze
    from gzmorph.options import config_values, data_options

    cfg = build(AnalyzeConfig, config_values(args, AnalyzeConfig, rename=RENAME))
    data = data_options(args)
    path = analyze(args.model, args.images, args.out, labels=args.labels, config=cfg, which=args.which,
                   device=data.device, id_column=data.id_column, workers=data.workers,
                   progress=not args.no_progress)
    print(f"analysis: {path}")
    return 0
