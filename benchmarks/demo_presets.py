"""Which preset should ``gzmorph demo`` train?  The demo's setting, preset against preset.

The demo trains on 3,000 mock galaxies within a time cap and scores 300 test galaxies it
never saw with ``--tta rot``.  This script makes that mock set once, trains each preset
on it and scores the test galaxies, recording the training's wall-clock *and* its CPU
time (user + system of this process and its children): on a shared machine the CPU time
is the fairer cost, since the wall-clock depends on what else runs.

Usage::

    python benchmarks/demo_presets.py --runs small:40000 p4m:60000 --out runs/demo_presets

Each run is one JSON line in ``OUT/results.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", default=["small:40000", "p4m:60000"], help="PRESET:EXAMPLES")
    p.add_argument("--n", type=int, default=3000, help="mock training galaxies (the demo's default)")
    p.add_argument("--tta", default="rot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("runs/demo_presets"))
    args = p.parse_args()

    from gzmorph.data.catalog import open_catalog
    from gzmorph.metrics import masked_rmse
    from gzmorph.inference.predict import predict
    from gzmorph.mock import generate
    from gzmorph.training.recipes import get_preset
    from gzmorph.training.train import train

    data = args.out / "data"
    if not (data / "test_solutions_rev1.csv").exists():
        generate(data, n=args.n, n_test=max(args.n // 10, 20), seed=args.seed, progress=False)
    test = open_catalog(data, split="test")
    labels = open_catalog(data / "test_solutions_rev1.csv")
    truth = labels.labels[[{k: i for i, k in enumerate(labels.ids.tolist())}[k] for k in test.ids.tolist()]]
    for spec in args.runs:
        preset, examples = spec.split(":")
        cfg = get_preset(preset).override(examples=int(examples), seed=args.seed)
        run = args.out / f"{preset}-{examples}"
        c0, t0, load0 = cpu_seconds(), time.monotonic(), os.getloadavg()[0]
        result = train(cfg, data, run, device="cpu", progress=False)
        record = {"preset": preset, "examples": result["examples"], "train_wall_s": round(time.monotonic() - t0, 1),
                  "train_cpu_s": round(cpu_seconds() - c0, 1), "best_val_rmse": result["best_val_rmse"],
                  "load_avg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        df = predict([run], test, tta=args.tta, device="cpu", progress=False)
        pred = df.set_index(test.id_column).loc[test.ids.tolist(), labels.tree.columns]
        record[f"test_rmse_{args.tta}"] = round(masked_rmse(pred.to_numpy(dtype=float), truth), 5)
        with open(args.out / "results.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
