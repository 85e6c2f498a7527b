"""Retrieval precision@10 of "same most likely answer" on a labelled catalogue: embeddings vs raw pixels.

    nice -n 5 python benchmarks/discovery_retrieval.py --catalog /work/runs/val500.csv \
        --model /work/runs/p4m-dev [--model OTHER_RUN ...] --out /tmp/retrieval

For every question (default Q1, Q2, Q7) the galaxies the crowd reaches (reach >= 0.5)
form the pool; each one's 10 nearest other pool galaxies (cosine distance) are found
and precision@10 is the share of them whose crowd's most likely answer to the
question is the query's.  Representations: each ``--model``'s ``gzmorph embed``
vectors (pooled features before the head; written through the prediction job) and raw
pixels (the image decoded at ``--pixels`` px, flattened).  The chance level is the sum
of squared answer shares.  Also checks the embedding of every image turned by 90
degrees against the original's (max abs difference; 0 up to float rounding for p4m).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.data.decode import decode
from gzmorph.discovery.embed import embed_images, embed_to_file, read_embeddings
from gzmorph.tree import GZ2


def precision_at(x: np.ndarray, answers: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest other rows (cosine) with the same answer."""
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = x @ x.T  # (N, N)
    np.fill_diagonal(sims, -np.inf)
    nearest = np.argsort(-sims, axis=1)[:, :k]  # (N, k)
    return float((answers[nearest] == answers[:, None]).mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--catalog", default="/work/runs/val500.csv")
    ap.add_argument("--model", action="append", default=[], help="runs to embed (none: raw pixels only)")
    ap.add_argument("--which", default="best")
    ap.add_argument("--questions", default="Q1,Q2,Q7")
    ap.add_argument("--pixels", type=int, default=32)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    cat = pd.read_csv(a.catalog)
    labels = cat.reindex(columns=GZ2.columns).to_numpy(np.float64)  # NaN: answers the catalogue lacks
    reach = GZ2.reach(labels)  # (N, Q)
    reps: dict[str, np.ndarray] = {}
    turned_diff: dict[str, float] = {}
    pixels = np.stack([decode(p, a.pixels) for p in cat["path"]])  # (N, s, s, 3)
    reps[f"raw pixels ({a.pixels} px)"] = pixels.reshape(len(cat), -1).astype(np.float32)  # (N, s*s*3)
    for model in a.model:
        out = a.out / f"{Path(model).name}.parquet"
        embed_to_file(model, a.catalog, out, which=a.which, progress=False)
        emb = read_embeddings(out)
        assert list(map(int, emb.ids)) == cat["GalaxyID"].tolist()
        reps[f"{Path(model).name} ({emb.meta['kind'].split(':')[0]}, {emb.vectors.shape[1]} dims)"] = emb.vectors
        images = np.stack([decode(p, emb.meta["image_size"]) for p in cat["path"][:64]])
        a0 = embed_images(model, images, which=a.which)
        a90 = embed_images(model, np.rot90(images, 1, axes=(1, 2)).copy(), which=a.which)
        turned_diff[Path(model).name] = float(np.abs(a0 - a90).max() / max(np.abs(a0).max(), 1e-12))
    rows = []
    for qname in a.questions.split(","):
        q = GZ2.question(qname)
        qi = [x.name for x in GZ2.questions].index(qname)
        pool = reach[:, qi] >= 0.5
        answers = labels[pool][:, [GZ2.columns.index(c) for c in q.columns]].argmax(axis=1)
        shares = np.bincount(answers, minlength=len(q.columns)) / len(answers)
        row = {"question": qname, "pool": int(pool.sum()), "chance": float((shares**2).sum())}
        for name, x in reps.items():
            row[name] = precision_at(x[pool], answers)
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("max |f(turned 90) - f(image)| / max |f|, 64 images:", json.dumps(turned_diff))
    table.to_csv(a.out / "retrieval.csv", index=False)


if __name__ == "__main__":
    main()
