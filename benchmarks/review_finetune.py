"""Does fine-tuning on expert answers for the flagged galaxies help? A small mock-data check.

1. mock data: N training galaxies and a pool of P unlabelled "new" galaxies (crowd labels kept aside);
2. train the `small` preset on the training galaxies (the base run);
3. predict the pool; the flagged galaxies (``needs_expert``; with ``--top K`` the first K
   of the review queue) are split by id parity into A (sent to the experts) and B (held out);
4. simulated experts answer A: the mock's crowd labels (default), or ``--reviewers K``
   simulated reviewers walking the tree through the review store (answers drawn from the
   crowd's per-question distribution) and exported with ``gzmorph.review.export``;
5. fine-tune the base run (``init_from``) on the training catalog plus A's expert labels,
   and, as the control, on the training catalog alone with the same recipe;
6. RMSE against the crowd labels on the flagged (galaxy, question) cells of A and of B.

Example: ``python benchmarks/review_finetune.py --out /tmp/rft``
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.data.catalog import open_catalog
from gzmorph.mock import generate
from gzmorph.inference.predict import predict
from gzmorph.training.recipes import get_preset
from gzmorph.review.db import ReviewStore
from gzmorph.review.export import export_labels
from gzmorph.review.queue import build_queue
from gzmorph.review.walk import next_question
from gzmorph.models.rundir import run_config
from gzmorph.training.train import train
from gzmorph.tree import GZ2


def simulate_reviews(db: Path, crowd: pd.DataFrame, pool_dir: Path, k: int, seed: int) -> pd.DataFrame:
    """K reviewers per galaxy walk the tree, each answer drawn from the crowd's distribution."""
    store = ReviewStore(db, GZ2, meta={"catalog": str(pool_dir), "split": "test", "id_column": "GalaxyID"})
    rng = np.random.default_rng(seed)
    norm = pd.DataFrame(GZ2.normalise(crowd[GZ2.columns].to_numpy()), columns=GZ2.columns, index=crowd.index)
    for gid, row in norm.iterrows():
        for r in range(k):
            answers: dict[str, str] = {}
            while (q := next_question(GZ2, answers)) is not None:
                p = np.nan_to_num(row[list(GZ2.question(q).columns)].to_numpy(np.float64))
                a = GZ2.question(q).columns[rng.choice(len(p), p=p / p.sum())] if p.sum() > 0 else "?"
                store.record_answer(str(gid), f"expert{r}", q, a, "base")
                answers[q] = a
    return export_labels(db)


def flagged_rmse(preds: pd.DataFrame, truth: pd.DataFrame, ids: list) -> float:
    """RMSE over the answer columns of the flagged questions of ``ids``."""
    sq, n = 0.0, 0
    for q in GZ2.questions:
        rows = [i for i in ids if preds.at[i, f"{q.name}_needs_expert"]]
        if rows:
            d = preds.loc[rows, list(q.columns)].to_numpy(np.float64) - truth.loc[rows, list(q.columns)].to_numpy()
            sq, n = sq + float(np.nansum(d**2)), n + int(np.isfinite(d).sum())
    return float(np.sqrt(sq / max(n, 1)))


def expert_catalog(args, out: Path, data: Path, truth: pd.DataFrame, seen: list[int], pool) -> pd.DataFrame:
    """The training catalog plus the expert labels of the reviewed galaxies (written to mixed.csv)."""
    train_cat = open_catalog(data).to_frame()
    train_cat.to_csv(out / "original.csv", index=False)
    if args.reviewers:
        expert = simulate_reviews(out / "review.sqlite", truth.loc[seen], data / "images_test_rev1",
                                  args.reviewers, args.seed)
    else:
        paths = dict(zip(pool.ids.tolist(), pool.paths))
        expert = truth.loc[seen].reset_index()
        expert.insert(1, "path", [paths[i] for i in seen])
    mixed = pd.concat([train_cat, expert[train_cat.columns]], ignore_index=True)
    mixed.to_csv(out / "mixed.csv", index=False)
    return mixed


def scores(p: pd.DataFrame, base: pd.DataFrame, truth: pd.DataFrame, seen: list, held: list) -> dict[str, float]:
    """RMSEs of predictions ``p`` on the cells the base run flagged, and on the whole pool."""
    flags = [f"{q.name}_needs_expert" for q in GZ2.questions]
    p = p.reindex(base.index)
    p[flags] = base[flags]
    diff = p[GZ2.columns].to_numpy() - truth.loc[p.index, GZ2.columns].to_numpy()
    return {"flagged_reviewed": flagged_rmse(p, truth, seen), "flagged_held_out": flagged_rmse(p, truth, held),
            "all_pool": float(np.sqrt(np.nanmean(diff**2)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=600, help="training galaxies")
    ap.add_argument("--pool", type=int, default=1000, help="new galaxies predicted and triaged")
    ap.add_argument("--examples", type=int, default=8000, help="examples of the base run")
    ap.add_argument("--finetune-examples", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=5e-4, help="fine-tuning learning rate")
    ap.add_argument("--reviewers", type=int, default=0, help="0: crowd labels as the expert answers")
    ap.add_argument("--top", type=int, default=0,
                    help="only the first TOP galaxies of the review queue (0: every flagged galaxy)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, t0 = Path(args.out), time.monotonic()
    data = out / "data"
    if not (data / "test_solutions_rev1.csv").exists():
        generate(data, n=args.n, n_test=args.pool, seed=args.seed, size=141, progress=False)
    base_cfg = get_preset("small").override(examples=args.examples, seed=args.seed)
    if not (out / "base" / "checkpoints" / "last.pt").exists():
        train(base_cfg, data, out / "base", device="cpu", progress=False)
    pool = open_catalog(data, split="test")
    preds = predict([out / "base"], pool, device="cpu", progress=False).set_index("GalaxyID")
    truth = pd.read_csv(data / "test_solutions_rev1.csv").set_index("GalaxyID")
    queue = build_queue(preds, GZ2)  # most doubtful first, as the reviewers get them
    flagged = [int(i) for i in (queue.index[:args.top] if args.top else queue.index)]
    seen, held = [i for i in flagged if i % 2 == 0], [i for i in flagged if i % 2 == 1]
    expert_catalog(args, out, data, truth, seen, pool)
    # A random validation split: by id, the last 10% would be the reviewed galaxies themselves.
    ft = run_config(out / "base").override(examples=args.finetune_examples, lr=args.lr, warmup_examples=0,
                                           clip_examples=0, eval_every=args.finetune_examples,
                                           split_seed=args.seed, init_from=str(out / "base"))
    report = {"pool": len(pool), "top": args.top, "n_flagged": len(flagged), "n_reviewed": len(seen), "n_held_out": len(held),
              "reviewers": args.reviewers or "crowd labels", "base": scores(preds, preds, truth, seen, held)}
    for name, catalog in (("control", out / "original.csv"), ("expert", out / "mixed.csv")):
        run = out / f"ft-{name}-top{args.top}-r{args.reviewers}"
        if not (run / "checkpoints" / "last.pt").exists():
            train(ft, catalog, run, device="cpu", progress=False)
        tuned = predict([run], pool, device="cpu", progress=False, which="last").set_index("GalaxyID")
        report[name] = scores(tuned, preds, truth, seen, held)
    report["seconds"] = round(time.monotonic() - t0, 1)
    print(json.dumps(report, indent=2))
    (out / f"result-top{args.top}-r{args.reviewers}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
