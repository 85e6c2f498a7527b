"""Accuracy on the real 5k Kaggle subset: train, then score the held-out 500 with and without TTA.

Benchmark convention (``../shared/data/README.md``): sort by GalaxyID, train on the first
4,500, validate on the last 500, RMSE over the 17 available columns ("RMSE17").

Usage::

    python benchmarks/accuracy_5k.py --preset small --examples 30000 --device cpu
    python benchmarks/accuracy_5k.py --preset fast --examples 2000000 --device cuda \\
        --data .device/gz2-kaggle-5k-141px

Prints one JSON line with the numbers (and writes it to ``RUN/benchmark.json``).

The split is scored with the ``last`` weights (the averaged ones, when the recipe keeps
an average), never ``best``: ``best`` is the checkpoint with the lowest RMSE on this same
split, so scoring it would report a number chosen on the data it reports (issue 20).
Rows of BENCHMARKS.md measured before this rule are marked there.

Development protocol (BENCHMARKS.md, "Protocol"): explore on the development split with
``--data runs/splits/train4500.csv --val-fraction 0.1111111`` (train on the first 4,000,
score the last 500 of the training split) and report on the validation split once.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from gzmorph.data.catalog import open_catalog, train_val_split
from gzmorph.inference.predict import predict
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "gz2-kaggle-5k-141px"


def rmse17(pred: np.ndarray, labels: np.ndarray) -> float:
    mask = ~np.isnan(labels)
    return float(np.sqrt(np.mean((pred[mask] - labels[mask]) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--preset", default="small")
    p.add_argument("--examples", type=int, default=30_000)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--eval-every", type=int, help="examples between validations (default: the preset's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("runs/accuracy_5k"))
    p.add_argument("--tta", nargs="+", default=["none", "rot"])
    p.add_argument("--recentre", action="store_true", help="train (and so predict) with recentring (issue 12)")
    p.add_argument("--seed", type=int, help="training seed (default: the preset's)")
    p.add_argument("--val-fraction", type=float,
                   help="held-out fraction, last by id (1/9 of train4500.csv is the development split)")
    args = p.parse_args()

    cfg = get_preset(args.preset).override(examples=args.examples, batch_size=args.batch_size,
                                           eval_every=args.eval_every, seed=args.seed,
                                           val_fraction=args.val_fraction)
    if args.recentre:
        cfg = cfg.override(augment=replace(cfg.augment, recentre=True))
    seed = "" if args.seed is None else f"-seed{args.seed}"
    run = args.out / f"{args.preset}-{args.examples}{'-recentred' if args.recentre else ''}{seed}"
    t0 = time.monotonic()
    result = train(cfg, args.data, run, device=args.device, resume=(run / "checkpoints" / "last.pt").exists())
    train_s = time.monotonic() - t0
    _, val = train_val_split(open_catalog(args.data), cfg.val_fraction)
    record = {"preset": args.preset, "recentre": cfg.augment.recentre, "examples": result["examples"], "batch_size": cfg.batch_size,
              "train_seconds": round(train_s, 1), "seed": cfg.seed, "weights": "last",
              # min over the validations of training: chosen on the split below, so optimistic
              "min_val_rmse17_during_training": result["best_val_rmse"],
              "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
              "cpu": platform.processor() or platform.machine(), "torch": torch.__version__, "n_val": len(val)}
    for tta in args.tta:
        t = time.monotonic()
        df = predict([run], val, tta=tta, device=args.device, progress=False, which="last")
        pred = df[val.tree.columns].to_numpy(dtype=np.float64)
        # Rows of the output follow the input order; align by id all the same.
        order = {k: i for i, k in enumerate(df[val.id_column].tolist())}
        pred = pred[[order[k] for k in val.ids.tolist()]]
        record[f"rmse17_tta_{tta}"] = rmse17(pred, val.labels)
        record[f"predict_seconds_tta_{tta}"] = round(time.monotonic() - t, 1)
    (run / "benchmark.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
