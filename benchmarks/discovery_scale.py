"""Index build and query time of the similarity index for N synthetic vectors, and memory.

    nice -n 5 python benchmarks/discovery_scale.py --n 1000000 --dim 64 --threads 2

Vectors: a mixture of 100 Gaussian clusters in ``dim`` dimensions (like a PCA-reduced
embedding), cosine metric.  Reports build seconds, the index's bytes, the process's
peak RSS, the time of 1,000 single-vector queries (k=10) for the exact flat index and
the HNSW graph, and HNSW's recall@10 against the exact answer.

    nice -n 5 python benchmarks/discovery_scale.py --n 200000 --kinds flat,hnsw,hnswlib,usearch

compares faiss with the other maintained HNSW libraries at the same graph settings
(M=32 links, efConstruction 40 as faiss's default, efSearch 64): ``hnswlib`` and
``usearch`` (``pip install hnswlib usearch``; not dependencies of gzmorph).
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np


def build_index(kind: str, x: np.ndarray, threads: int) -> tuple[object, object, object]:
    """(index, search(q) -> (Q, 10) ids, size() -> bytes) of one library's index over ``x``."""
    n, dim = x.shape
    if kind in ("flat", "hnsw"):
        import faiss

        index = faiss.IndexHNSWFlat(dim, 32) if kind == "hnsw" else faiss.IndexFlatL2(dim)
        if kind == "hnsw":
            index.hnsw.efSearch = 64
        index.add(x)
        return index, lambda q: index.search(q, 10)[1], lambda: len(faiss.serialize_index(index))
    if kind == "hnswlib":
        import hnswlib

        index = hnswlib.Index(space="l2", dim=dim)
        index.init_index(max_elements=n, M=32, ef_construction=40)
        index.add_items(x, np.arange(n), num_threads=threads)
        index.set_ef(64)
        index.set_num_threads(threads)
        return index, lambda q: index.knn_query(q, k=10)[0], lambda: index.index_file_size()
    if kind == "usearch":
        from usearch.index import Index

        index = Index(ndim=dim, metric="l2sq", connectivity=32, expansion_add=40, expansion_search=64)
        index.add(np.arange(n), x, threads=threads)
        return (index, lambda q: np.atleast_2d(index.search(q, 10, threads=threads).keys),
                lambda: index.serialized_length)
    raise SystemExit(f"unknown kind {kind!r}: flat, hnsw, hnswlib or usearch")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--kinds", default="flat,hnsw")
    a = p.parse_args()
    import faiss

    faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(100, a.dim)).astype(np.float32)
    x = centres[rng.integers(0, 100, a.n)] + 0.5 * rng.normal(size=(a.n, a.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(a.n, a.queries, replace=False)] + 0.01 * rng.normal(size=(a.queries, a.dim)).astype(np.float32)
    exact = None
    for kind in a.kinds.split(","):
        t0 = time.perf_counter()
        index, search, size = build_index(kind, x, a.threads)
        build = time.perf_counter() - t0
        nbytes = size()
        t0 = time.perf_counter()
        found = np.stack([search(q[i:i + 1])[0] for i in range(len(q))])
        single = (time.perf_counter() - t0) / len(q)
        t0 = time.perf_counter()
        search(q)
        batched = (time.perf_counter() - t0) / len(q)
        if kind == "flat":
            exact = found
        recall = (np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]) if exact is not None
                  else float("nan"))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{kind}: n={a.n} dim={a.dim} build {build:.1f} s, index {nbytes / 2**20:.0f} MiB, "
              f"query {single * 1e3:.2f} ms single / {batched * 1e3:.3f} ms batched (k=10), "
              f"recall@10 vs flat {recall:.3f}, peak RSS {rss:.0f} MiB", flush=True)
        del index


if __name__ == "__main__":
    main()
