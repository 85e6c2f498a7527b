"""``gzmorph evaluate``: score predictions against crowd labels and write the report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "score predictions against crowd labels: RMSE, accuracy vs agreement, precision/recall, triage, HTML report"
DESCRIPTION = (
    "Join PREDICTIONS (a CSV or Parquet file with an id column and the tree's answer columns) with the "
    "labels of CATALOG (a Kaggle-layout directory or a CSV/Parquet catalog) on the ids and write to "
    "REPORT_DIR: report.html (self-contained), metrics.json, per_question.csv, precision_recall.csv, "
    "triage.csv, accuracy_bins.csv, triage_curves.csv, unmatched_ids.csv, plots/*.png and "
    "triage_thresholds.json (for `gzmorph predict --triage-thresholds`). Only the answer columns the "
    "labels have are scored; the report lists the questions without labels."
)


RENAME = {"n_bins": "bins"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from gzmorph.evaluation.evaluate import EvaluationConfig
    from gzmorph.options import add_config_options, add_data_options

    parser.add_argument("--predictions", required=True, metavar="FILE", help="prediction CSV or Parquet file")
    parser.add_argument("--labels", required=True, metavar="CATALOG",
                        help="labelled catalog: Kaggle directory or CSV/Parquet file")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report and tables")
    add_data_options(parser, ("id_column", "tree"))
    add_config_options(parser, EvaluationConfig, rename=RENAME)
    parser.add_argument("--title", default=None, help="title of the HTML report")
    parser.add_argument("--drop-bad-rows", action="store_true",
                        help="leave out prediction rows that are not probabilities (empty, non-numeric, outside "
                             "[0, 1]) instead of refusing the file; counted and listed in dropped_rows.csv")
    parser.add_argument("--before", default=None, metavar="FILE",
                        help="uncalibrated predictions of the same galaxies (predict --calibration off): the "
                             "report shows calibration before and after")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.data.catalog import KAGGLE_LABELS
    from gzmorph.evaluation.report import OUTPUT_FILES, OUTPUT_FOLDERS
    from gzmorph.runtime import refuse_overwrite
    from gzmorph.evaluation.evaluate import EvaluationConfig, evaluate
    from gzmorph.options import config_values, data_options
    from gzmorph.tree import get_tree

    cfg = build(EvaluationConfig, config_values(args, EvaluationConfig, rename=RENAME))
    out = Path(args.out)
    refuse_overwrite([args.predictions, args.labels, Path(args.labels) / KAGGLE_LABELS,
                      *([args.before] if args.before else [])],
                     files=[out, *(out / name for name in OUTPUT_FILES)],
                     folders=[out / name for name in OUTPUT_FOLDERS])
    data = data_options(args)
    ev = evaluate(args.predictions, args.labels, out=args.out, tree=get_tree(data.tree),
                  id_column=data.id_column, title=args.title, drop_bad_rows=args.drop_bad_rows, before=args.before,
                  **cfg.to_dict())
    if len(ev.dropped_rows):
        print(f"{len(ev.dropped_rows)} bad prediction rows left out (listed in dropped_rows.csv)")
    print(f"{ev.n_matched} images matched; RMSE {ev.rmse:.4f} over {len(ev.rmse_columns)} answer columns")
    for side, ids in (("predictions", ev.only_in_predictions), ("labels", ev.only_in_labels)):
        if len(ids):
            print(f"  {len(ids)} ids only in the {side} (not evaluated; see unmatched_ids.csv)")
    for r in ev.per_question[ev.per_question["labelled"]].itertuples():
        tri = "no threshold reaches the target" if r.threshold > 1 else f"model alone on {r.coverage:.1%}"
        print(f"  {r.question}: RMSE {r.rmse:.4f}, accuracy {r.accuracy:.3f} on {r.n_reached} images, {tri}")
    if ev.missing_questions:
        print(f"  not evaluated (no labels): {', '.join(ev.missing_questions)}")
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0
