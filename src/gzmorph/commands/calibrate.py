"""``gzmorph calibrate``: fit calibrated probabilities, intervals and triage on a calibration split."""

from __future__ import annotations

import argparse

HELP = "fit calibration (probabilities, intervals, triage thresholds) on a calibration split and store it in the run"
DESCRIPTION = (
    "Fit on PREDICTIONS (from `gzmorph predict --calibration off` with RUN) of galaxies carved from the training "
    "data, never the split you report on, against their crowd labels (with vote counts when the catalog has "
    "them): a temperature per question, the probability that the most likely answer is the crowd's, "
    "beta-binomial intervals with vote noise, and triage thresholds on that probability. Writes "
    "RUN/calibration.json, which `gzmorph predict` then applies."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="RUN", help="run directory to calibrate (written into)")
    parser.add_argument("--predictions", required=True, metavar="FILE",
                        help="uncalibrated predictions of the calibration split (CSV or Parquet)")
    parser.add_argument("--labels", required=True, metavar="CATALOG",
                        help="the calibration split's labels: Kaggle directory or CSV/Parquet catalog")
    parser.add_argument("--id-column", default="GalaxyID", help="id column of the predictions and the catalog")
    parser.add_argument("--level", type=float, default=0.8, help="central level of the intervals (default 0.8)")
    parser.add_argument("--target-accuracy", type=float, default=0.99,
                        help="triage: accuracy of the galaxies the model answers alone (default 0.99)")
    parser.add_argument("--assumed-votes", type=int, default=None,
                        help="volunteers per galaxy for the vote noise when the labels have no counts (default 40)")


def run(args: argparse.Namespace) -> int:
    from gzmorph.errors import ConfigError
    from gzmorph.evaluation.calibrate import calibrate

    if not 0 < args.level < 1:
        raise ConfigError(f"--level must be in (0, 1), got {args.level}")
    if not 0 < args.target_accuracy <= 1:
        raise ConfigError(f"--target-accuracy must be in (0, 1], got {args.target_accuracy}")
    if args.assumed_votes is not None and args.assumed_votes < 1:
        raise ConfigError(f"--assumed-votes must be at least 1, got {args.assumed_votes}")
    cal = calibrate(args.model, args.predictions, args.labels, id_column=args.id_column, level=args.level,
                    target_accuracy=args.target_accuracy, assumed_votes=args.assumed_votes)
    print(f"calibrated on {cal.fitted_on['n_galaxies']} galaxies ({cal.votes} votes per galaxy, "
          f"{cal.fitted_on['votes_from']}) -> {args.model}/calibration.json")
    for q, t in cal.temperature.items():
        thr = cal.thresholds.get(q)
        tri = "all to experts" if thr is None or thr > 1 else f"p_correct >= {thr:.3f}"
        print(f"  {q}: temperature {t:.3f}, triage {tri}")
    for q, why in cal.skipped.items():
        print(f"  {q}: not calibrated ({why})")
    return 0
