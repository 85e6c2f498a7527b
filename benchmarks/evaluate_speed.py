"""Time `gzmorph.evaluation.evaluate.evaluate` (metrics only, and with every output file + report).

Generated data: tree-consistent GZ2 crowd labels for N images and predictions equal to
the labels plus Gaussian noise (clipped), written as a Parquet prediction file and a
labels CSV with the 17 answer columns of the Kaggle 5k subset (5 scored questions) or
all 37 (--all-columns).

    python benchmarks/evaluate_speed.py --n 61578 --repeats 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.evaluation.evaluate import evaluate
from gzmorph.tree import GZ2

KAGGLE_5K_QUESTIONS = ("Class1.", "Class2.", "Class6.", "Class7.", "Class8.")


def make_tables(n: int, noise: float, all_columns: bool, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    probs = np.zeros((n, GZ2.n_answers))
    for q, sl, parent in zip(GZ2.questions, GZ2.slices, GZ2.parent_answer):
        scale = 1.0 if parent < 0 else probs[:, parent : parent + 1]
        probs[:, sl] = rng.dirichlet(np.full(len(q.columns), 0.5), size=n) * scale
    ids = np.arange(100_000, 100_000 + n)
    preds = pd.DataFrame(np.clip(probs + rng.normal(0, noise, probs.shape), 0, 1).astype(np.float32),
                         columns=GZ2.columns)
    preds.insert(0, "GalaxyID", ids)
    cols = GZ2.columns if all_columns else [c for c in GZ2.columns if c.startswith(KAGGLE_5K_QUESTIONS)]
    labels = pd.DataFrame(probs, columns=GZ2.columns)[cols]
    labels.insert(0, "GalaxyID", ids)
    return preds, labels


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=61578, help="images")
    parser.add_argument("--noise", type=float, default=0.08, help="std of the prediction noise")
    parser.add_argument("--all-columns", action="store_true", help="label all 37 columns (11 questions)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    preds, labels = make_tables(args.n, args.noise, args.all_columns)
    with tempfile.TemporaryDirectory() as tmp:
        pred_path, label_path = Path(tmp) / "predictions.parquet", Path(tmp) / "labels.csv"
        preds.to_parquet(pred_path)
        labels.to_csv(label_path, index=False)
        t_metrics = best_of(args.repeats, lambda: evaluate(preds, labels))
        t_files = best_of(args.repeats, lambda: evaluate(pred_path, label_path, out=Path(tmp) / "report"))
        ev = evaluate(preds, labels)
        size = sum(p.stat().st_size for p in (Path(tmp) / "report").rglob("*") if p.is_file())
        html = (Path(tmp) / "report" / "report.html").stat().st_size
    print(f"N={args.n} images, {len(ev.rmse_columns)} labelled columns, {len(ev.evaluated_questions)} scored questions"
          f" (RMSE {ev.rmse:.4f})")
    print(f"metrics from DataFrames:               {t_metrics:.2f} s  (best of {args.repeats})")
    print(f"from files + all outputs + report:     {t_files:.2f} s  (best of {args.repeats})")
    print(f"output folder {size / 1e6:.2f} MB, report.html {html / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
