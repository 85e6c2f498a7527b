"""Active learning, simulated: labels needed per acquisition policy, crowd labels as the oracle.

    nice -n 5 python benchmarks/active_learning.py --out /tmp/al \
        --train /work/runs/train4500.csv --val /work/runs/val500.csv \
        --policies random,today,bald --seeds 0,1,2 --start 500 --step 500 --max 2500

    python benchmarks/active_learning.py --out /tmp/al-smoke --mock --start 40 --step 20 --max 80 \
        --base-examples 400 --finetune-examples 200     # a smoke test on generated galaxies

Loop, for every policy and seed:

1. ``--start`` galaxies drawn at random (the seed) from the training pool are labelled
   (the crowd's vote fractions: the oracle); the rest is the unlabelled pool;
2. a base run of ``--preset`` trains on them (for ``bald``: two members, seeds s and
   s + 1000, whose disagreement is the BALD score); the start labels and the base run
   depend only on the seed, so every policy of a seed starts from the same run
   (``base-s<seed>``, trained once: a paired comparison);
3. each round the pool is predicted, the policy's ``--step`` best galaxies
   (:mod:`gzmorph.review.acquisition`; ``today`` takes the flagged queue of
   :func:`gzmorph.review.queue.build_queue` then the rest by the same doubt) get their
   labels, and the run is fine-tuned on all labels so far (``init_from`` the previous
   round, ``--finetune-examples``);
4. RMSE over the labelled answer columns of ``--val`` (17 for the 5k split) after each round.

Writes ``results.csv`` (policy, seed, labels, rmse), ``summary.csv`` (per policy and seed:
labels needed to reach random's mean RMSE at ``--max`` labels, linearly interpolated;
NaN if never reached) and ``curves.png``.  A finished loop leaves ``<policy>-s<seed>/rows.json``;
rerunning the same command skips it (so an interrupted benchmark goes on where it stopped).  Never tune on the validation galaxies: the
policies have no parameters fitted here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.inference.predict import predict
from gzmorph.metrics import masked_rmse
from gzmorph.models.rundir import run_config
from gzmorph.review.acquisition import bald, predictive_uncertainty
from gzmorph.review.queue import build_queue
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train
from gzmorph.tree import GZ2


def mock_split(out: Path, n_train: int, n_val: int, seed: int = 0) -> tuple[Path, Path]:
    """Generated galaxies as a training pool and a validation catalogue (CSV with paths)."""
    from gzmorph.mock import generate

    root = generate(out / "mock", n=n_train + n_val, seed=seed, size=48, progress=False)
    labels = pd.read_csv(root / "training_solutions_rev1.csv")
    labels["path"] = [str(root / "images_training_rev1" / f"{g}.jpg") for g in labels["GalaxyID"]]
    labels.iloc[:n_train].to_csv(out / "train.csv", index=False)
    labels.iloc[n_train:].to_csv(out / "val.csv", index=False)
    return out / "train.csv", out / "val.csv"


def acquire(policy: str, runs: list[Path], pool: pd.DataFrame, pool_csv: Path, step: int,
            rng: np.random.Generator) -> list:
    """The ids of the ``step`` pool galaxies ``policy`` asks labels for."""
    if policy == "random":
        return list(rng.choice(pool["GalaxyID"].to_numpy(), size=min(step, len(pool)), replace=False))
    pool.to_csv(pool_csv, index=False)
    members = [predict([r], pool_csv, device="cpu", progress=False, which="last") for r in runs]
    preds = members[0].set_index(members[0]["GalaxyID"].astype(str))
    probs = np.stack([m[GZ2.columns].to_numpy(np.float64) for m in members])  # (M, N, A)
    if policy == "bald":
        score = bald(probs, GZ2)
    elif policy == "uncertainty":
        score = predictive_uncertainty(probs.mean(0), GZ2)
    else:  # today: the flagged queue, then the others by the same doubt
        queue = build_queue(preds, GZ2)
        names = [q.name for q in GZ2.questions]
        doubt = (preds[[f"{n}_reach" for n in names]].to_numpy() *
                 (1 - preds[[f"{n}_confidence" for n in names]].to_numpy())).max(axis=1)
        rest = preds.index[~preds.index.isin(queue.index)][np.argsort(-doubt[~preds.index.isin(queue.index)],
                                                                     kind="stable")]
        return [int(g) for g in [*queue.index, *rest][:step]]
    order = np.argsort(-score, kind="stable")[:step]
    return list(members[0]["GalaxyID"].to_numpy()[order])


def rmse(run: Path, val_csv: Path, val: pd.DataFrame, columns: list[str]) -> float:
    preds = predict([run], val_csv, device="cpu", progress=False, which="last").set_index("GalaxyID")
    truth = val.set_index("GalaxyID").loc[preds.index, columns].to_numpy(np.float64)
    return masked_rmse(preds[columns].to_numpy(np.float64), truth)


def base_run(a: argparse.Namespace, data: Path, seed: int) -> Path:
    """The run trained on the start labels of ``seed`` (shared by every policy; trained once)."""
    run, done = a.out / f"base-s{seed}", a.out / f"base-s{seed}.done"
    if not done.is_file():
        cfg = get_preset(a.preset).override(examples=a.base_examples, seed=seed, val_fraction=a.val_fraction,
                                            eval_every=a.base_examples)
        train(cfg, data, run, device="cpu", progress=False)
        done.touch()
    return run


def one_loop(a: argparse.Namespace, policy: str, seed: int, train_pool: pd.DataFrame, val_csv: Path,
             val: pd.DataFrame, columns: list[str]) -> list[dict]:
    work = a.out / f"{policy}-s{seed}"
    if (work / "rows.json").is_file():
        return json.loads((work / "rows.json").read_text())
    rng = np.random.default_rng(seed)
    labelled = list(rng.choice(train_pool["GalaxyID"].to_numpy(), size=a.start, replace=False))
    work.mkdir(parents=True, exist_ok=True)
    member_seeds = [seed, seed + 1000] if policy == "bald" else [seed]
    runs, rows, n_round = [], [], 0
    while True:
        data = work / f"labels-{n_round}.csv"
        train_pool[train_pool["GalaxyID"].isin(labelled)].to_csv(data, index=False)
        new_runs = []
        for m, s in enumerate(member_seeds):
            if n_round == 0:
                new_runs.append(base_run(a, data, s))
                continue
            run = work / f"round{n_round}-m{m}"
            cfg = run_config(runs[m]).override(examples=a.finetune_examples, warmup_examples=0, clip_examples=0,
                                               eval_every=a.finetune_examples, init_from=str(runs[m]), seed=s)
            train(cfg, data, run, device="cpu", progress=False)
            new_runs.append(run)
        runs = new_runs
        rows.append({"policy": policy, "seed": seed, "labels": len(labelled),
                     "rmse": rmse(runs[0], val_csv, val, columns), "time": time.time()})
        print(rows[-1], flush=True)
        if len(labelled) >= a.max:
            (work / "rows.json").write_text(json.dumps(rows))
            return rows
        pool = train_pool[~train_pool["GalaxyID"].isin(labelled)].reset_index(drop=True)
        labelled += acquire(policy, runs, pool, work / "pool.csv", min(a.step, a.max - len(labelled)), rng)
        n_round += 1


def labels_needed(results: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per policy and seed, the labels at which RMSE first reaches ``target`` (interpolated)."""
    rows = []
    for (policy, seed), g in results.groupby(["policy", "seed"]):
        x, y = g["labels"].to_numpy(float), g["rmse"].to_numpy(float)
        hit = np.flatnonzero(y <= target)
        need = np.nan
        if len(hit):
            i = hit[0]
            need = x[0] if i == 0 else x[i - 1] + (y[i - 1] - target) / (y[i - 1] - y[i]) * (x[i] - x[i - 1])
        rows.append({"policy": policy, "seed": seed, "labels_needed": need})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train", default="/work/runs/train4500.csv")
    ap.add_argument("--val", default="/work/runs/val500.csv")
    ap.add_argument("--mock", action="store_true", help="generated galaxies instead (smoke test)")
    ap.add_argument("--policies", default="random,today,bald")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--start", type=int, default=500)
    ap.add_argument("--step", type=int, default=500)
    ap.add_argument("--max", type=int, default=2500)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--base-examples", type=int, default=20000)
    ap.add_argument("--finetune-examples", type=int, default=6000)
    ap.add_argument("--val-fraction", type=float, default=0.05, help="of the labels, for train()'s own checks")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    train_csv, val_csv = mock_split(a.out, 4 * a.max, a.max // 2) if a.mock else (a.train, a.val)
    train_pool, val = pd.read_csv(train_csv), pd.read_csv(val_csv)
    columns = [c for c in GZ2.columns if c in val and val[c].notna().any()]
    results = pd.DataFrame([row for policy in a.policies.split(",") for seed in map(int, a.seeds.split(","))
                            for row in one_loop(a, policy, seed, train_pool, Path(val_csv), val, columns)])
    results.to_csv(a.out / "results.csv", index=False)
    final = results[results["labels"] == results["labels"].max()]
    target = final[final["policy"] == "random"]["rmse"].mean() if "random" in set(results["policy"]) else np.nan
    summary = labels_needed(results, target)
    summary.to_csv(a.out / "summary.csv", index=False)
    print(f"target: random's mean RMSE at {results['labels'].max()} labels = {target:.4f}")
    print(summary.groupby("policy")["labels_needed"].agg(["mean", "std", "min", "max"]).to_string())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for policy, g in results.groupby("policy"):
        m = g.groupby("labels")["rmse"].agg(["mean", "std"])
        ax.errorbar(m.index, m["mean"], yerr=m["std"].fillna(0), label=policy, capsize=3)
    ax.set_xlabel("labelled galaxies")
    ax.set_ylabel(f"RMSE ({len(columns)} answers, validation)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "curves.png", dpi=120)


if __name__ == "__main__":
    main()
