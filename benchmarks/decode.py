"""Decode throughput of gzmorph.data.decode and gzmorph.data.pool on real JPEGs.

Measures, on one core (in-process, no pool), images/s for a full-resolution decode, a
draft (DCT-scaled) decode to 212 px, the default 141 px decode (draft + box resize),
and for comparison 141 px without draft (full decode then resize); then the total
throughput of the parallel streaming decoder (``iter_decoded``) over all cores.
Files are read once beforehand so the page cache is warm and disk speed is not measured.

Usage::

    python benchmarks/decode.py [--data ../shared/data/gz2-kaggle-5k/images_training_rev1]
                                [--n 1000] [--repeat 3] [--workers N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from gzmorph.data.decode import decode
from gzmorph.data.pool import default_workers, iter_decoded

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/gz2-kaggle-5k/images_training_rev1"


def _no_draft_141(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((141, 141), Image.Resampling.BOX))


def _rate(fn, paths: list[str], repeat: int) -> tuple[float, float, float]:
    """(best, median) wall-clock images/s of ``fn`` over ``paths``, and the best images
    per CPU-second of this process, which time-slicing on a loaded machine does not dilute."""
    rates, cpu_rates = [], []
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        for p in paths:
            fn(p)
        rates.append(len(paths) / (time.perf_counter() - start))
        cpu_rates.append(len(paths) / max(time.process_time() - cpu, 1e-9))
    return max(rates), statistics.median(rates), max(cpu_rates)


def _parallel_rate(paths: list[str], workers: int, size: int) -> float:
    start = time.perf_counter()
    n = sum(1 for _, image, _, _ in iter_decoded(paths, size=size, workers=workers) if image is not None)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of JPEGs")
    parser.add_argument("--n", type=int, default=1000, help="images for the one-core measurements")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers(), help="processes for the parallel run")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    all_paths = sorted(str(p) for p in args.data.glob("*.jpg"))
    if not all_paths:
        raise SystemExit(f"no .jpg files in {args.data}")
    paths = all_paths[: args.n]
    for p in all_paths:
        Path(p).read_bytes()  # warm the page cache
    native = decode(paths[0], size=None).shape[0]
    print(f"{len(all_paths)} JPEGs in {args.data} ({native}px); one-core runs on {len(paths)}, "
          f"best/median of {args.repeat}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}, "
          f"{platform.processor() or platform.machine()}")

    cases = [
        (f"full resolution ({native}px)", lambda p: decode(p, size=None)),
        (f"draft {native}->{native // 2}", lambda p: decode(p, size=native // 2)),
        ("default 141 (draft + box resize)", lambda p: decode(p, size=141)),
        ("141 without draft (full decode + box resize)", _no_draft_141),
    ]
    results = {}
    print("\n| decode | images/s, one process (best) | median | images per CPU-second |\n|---|---:|---:|---:|")
    for name, fn in cases:
        fn(paths[0])
        best, median, per_cpu_s = _rate(fn, paths, args.repeat)
        results[name] = {"best": best, "median": median, "per_cpu_second": per_cpu_s}
        print(f"| {name} | {best:,.0f} | {median:,.0f} | {per_cpu_s:,.0f} |")

    rate = _parallel_rate(all_paths, args.workers, 141)
    results[f"iter_decoded 141, {args.workers} workers"] = {"total": rate}
    print(f"\niter_decoded, size 141, {args.workers} worker processes, {len(all_paths)} images: "
          f"{rate:,.0f} images/s total (includes pool start-up and transfer to the main process)")
    if args.json:
        args.json.write_text(json.dumps({"n": len(paths), "native": native, "results": results}, indent=2))


if __name__ == "__main__":
    main()
