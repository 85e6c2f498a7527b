"""Throughput of the mock Galaxy Zoo generator (``gzmorph.mock.generate``).

For each worker count, generates ``--n`` galaxies (params, render, JPEG write, crowd
labels, CSVs) into a temporary folder and reports wall-clock images/s, the CPU time
per image (this process plus its workers, load-independent), and the time spent in
one render alone (in-process, one torch thread).  ``--size`` selects the image side.

Usage::

    python benchmarks/mock_speed.py [--n 2000] [--workers 1 2] [--size 424] [--repeat 1] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gzmorph.mock import generate, render_galaxy, sample_params


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _generate_rate(n: int, workers: int, size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cpu0, t0 = _cpu_seconds(), time.perf_counter()
        generate(Path(tmp) / "gz", n=n, seed=0, workers=workers, progress=False, size=size)
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0  # children count once they have exited (the pool is closed)
    return {"workers": workers, "wall_s": wall, "images_per_s": n / wall, "cpu_ms_per_image": 1000 * cpu / n}


def _render_ms(size: int, k: int = 100) -> float:
    """Median in-process time of one render (params + image, no JPEG) over ``k`` galaxies."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    times = []
    for _ in range(k):
        t0 = time.process_time()
        render_galaxy(sample_params(rng), rng, size)
        times.append(time.process_time() - t0)
    return 1000 * float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="galaxies per run")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to measure")
    parser.add_argument("--size", type=int, default=424, help="image side in pixels")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (best is reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpu = platform.processor() or platform.machine()
    print(f"# mock generator, n={args.n}, size={args.size}, {cores} cores, {cpu}, "
          f"load average {os.getloadavg()[0]:.1f}")
    render = _render_ms(args.size)
    print(f"one render (CPU time, median of 100): {render:.1f} ms")
    rows = []
    for w in args.workers:
        runs = [_generate_rate(args.n, w, args.size) for _ in range(args.repeat)]
        best = max(runs, key=lambda r: r["images_per_s"])
        rows.append(best)
        print(f"workers={w}: {best['images_per_s']:.1f} images/s ({best['wall_s']:.1f} s wall), "
              f"{best['cpu_ms_per_image']:.1f} ms CPU per image")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "size": args.size, "cores": cores, "render_ms": render,
                                         "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
