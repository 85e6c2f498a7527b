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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN_DIR", help="run directory from `gzmorph train`")
    parser.add_argument("--images", required=True, metavar="IMAGES", help="catalog, image folder or cache")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the figures and analysis.html")
    parser.add_argument("--labels", default=None, metavar="CATALOG",
                        help="labels for the error figure (default: those that come with IMAGES)")
    parser.add_argument("--id-column", default="GalaxyID", help="id column of a labels catalog")
    parser.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint to load")
    parser.add_argument("--max-images", type=int, default=2000, help="analyse a random sample of at most this many")
    parser.add_argument("--units", type=int, default=8, help="hidden units shown")
    parser.add_argument("--examples", type=int, default=6, help="most / least activating images per unit")
    parser.add_argument("--errors", type=int, default=8, help="images with the highest / lowest error shown")
    parser.add_argument("--example-id", default=None, help="id of the image whose activations are drawn")
    parser.add_argument("--viewpoint", type=int, default=0, help="which of its 16 viewpoints")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="seed of the image sample")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.evaluation.analyze import AnalyzeConfig, analyze

    cfg = build(AnalyzeConfig, dict(max_images=args.max_images, n_units=args.units, n_examples=args.examples,
                                    n_errors=args.errors, example_id=args.example_id, viewpoint=args.viewpoint,
                                    batch_size=args.batch_size, seed=args.seed))
    path = analyze(args.model, args.images, args.out, labels=args.labels, config=cfg, which=args.which,
                   device=args.device, id_column=args.id_column, workers=args.workers,
                   progress=not args.no_progress)
    print(f"analysis: {path}")
    return 0
