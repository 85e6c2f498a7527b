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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--predictions", required=True, metavar="FILE", help="prediction CSV or Parquet file")
    parser.add_argument("--labels", required=True, metavar="CATALOG",
                        help="labelled catalog: Kaggle directory or CSV/Parquet file")
    parser.add_argument("--out", required=True, metavar="REPORT_DIR", help="folder for the report and tables")
    parser.add_argument("--id-column", default="GalaxyID", help="id column of the predictions and the catalog")
    parser.add_argument("--tree", default="gz2", help="decision tree: 'gz2' or a JSON file")
    parser.add_argument("--target-accuracy", type=float, default=0.99,
                        help="triage: accuracy the model must keep on the images it answers alone")
    parser.add_argument("--bins", type=int, default=10, help="equal-count bins of agreement / confidence")
    parser.add_argument("--min-reach", type=float, default=0.5,
                        help="score a question on images where at least this fraction of volunteers reached it")
    parser.add_argument("--title", default=None, help="title of the HTML report")


def run(args: argparse.Namespace) -> int:
    from gzmorph.config import build
    from gzmorph.evaluation.evaluate import EvaluationConfig, evaluate
    from gzmorph.tree import get_tree

    build(EvaluationConfig, dict(target_accuracy=args.target_accuracy, n_bins=args.bins, min_reach=args.min_reach))
    ev = evaluate(args.predictions, args.labels, out=args.out, tree=get_tree(args.tree),
                  id_column=args.id_column, target_accuracy=args.target_accuracy, n_bins=args.bins,
                  min_reach=args.min_reach, title=args.title)
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
