"""``gzmorph mock``: write a synthetic Galaxy Zoo 2 dataset in the Kaggle layout."""

from __future__ import annotations

import argparse
import time

HELP = "generate a synthetic Galaxy Zoo 2 dataset (SDSS-like images + crowd-simulated labels)"
DESCRIPTION = (
    "Render N labelled training galaxies (and M unlabelled test galaxies) as SDSS-like gri JPEGs and "
    "simulate 40-50 volunteers answering the GZ2 decision tree for each. DIR gets the Kaggle layout "
    "(images_training_rev1/, images_test_rev1/, training_solutions_rev1.csv with the 37 answer columns) "
    "that every gzmorph command reads, plus truth.csv with the true parameters of every galaxy and "
    "test_solutions_rev1.csv with the test labels. The same seed gives identical files whatever the "
    "number of workers."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, required=True, metavar="N", help="number of labelled training galaxies")
    parser.add_argument("--n-test", type=int, default=0, metavar="M", help="number of test galaxies")
    parser.add_argument("--out", required=True, metavar="DIR", help="new/empty folder, or a previous mock dataset")
    parser.add_argument("--seed", type=int, default=0, help="random seed (non-negative)")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes; automatic when not given (one per core, in-process for small jobs)")
    parser.add_argument("--size", type=int, default=424, help="image side in pixels")
    parser.add_argument("--format", choices=["jpeg", "fits"], default="jpeg",
                        help="GZ2-like JPEGs, or multi-band survey FITS cutouts with galaxies off centre and of "
                             "known sizes (truth.csv: x_true, y_true, r90_true; pip install 'gzmorph[survey]')")
    parser.add_argument("--survey", choices=["legacy", "sdss", "hsc"], default="legacy",
                        help="--format fits: bands, pixel scale, PSF, noise and units of the cutouts")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from gzmorph.mock import generate

    start = time.perf_counter()
    out = generate(args.out, n=args.n, n_test=args.n_test, seed=args.seed, workers=args.workers,
                   progress=not args.no_progress, size=args.size, format=args.format, survey=args.survey)
    total = args.n + args.n_test
    elapsed = time.perf_counter() - start
    print(f"mock dataset: {out} ({args.n} training + {args.n_test} test galaxies, "
          f"{elapsed:.1f} s, {total / elapsed:.1f} images/s)")
    return 0
