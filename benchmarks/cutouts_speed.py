"""``gzmorph cutouts`` against the local service emulator with injected failures: images/s, zero lost rows.

Starts the emulator (:mod:`gzmorph.mock.cutout_server`) in its own process on
127.0.0.1, with a fraction of positions failing their first request (429, 500, slow
answers past the client's timeout, truncated bodies, short bodies, HTML pages) and a
smaller fraction failing every time.  Then, each with an empty cache:

1. one uninterrupted ``gzmorph cutouts`` job;
2. the same job SIGKILLed once about half of its rows are journalled, then resumed
   with ``--resume``.

For each it reports the wall time, images/s (rows finished / wall time, the kill and
restart included in 2) and checks that every input row is an image or an error row
(and that run 2 ends with the same images and errors as run 1).  Client and emulator
share the machine's cores.

Example::

    python benchmarks/cutouts_speed.py --n 2000 --size 128 --fail 0.08 --permanent 0.02
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SRC = Path(__file__).resolve().parents[1] / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(port: int, fail: float, permanent: float, slow: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "gzmorph.mock.cutout_server", "--port", str(port), "--rate",
                             str(fail), "--permanent", str(permanent), "--slow-seconds", str(slow)],
                            env=ENV, stdout=subprocess.PIPE, text=True)
    assert "cutout emulator" in proc.stdout.readline()
    return proc


def cutouts_argv(sky: Path, out: Path, cache: Path, url: str, args: argparse.Namespace) -> list[str]:
    return [sys.executable, "-m", "gzmorph", "cutouts", str(sky), "--out", str(out), "--cache-dir", str(cache),
            "--service", args.service, "--size", str(args.size), "--service-url", url, "--rate", "0",
            "--concurrency", str(args.concurrency), "--timeout", str(args.timeout), "--backoff", "0.2",
            "--attempts", "4", "--no-progress"]


def journalled(out: Path) -> int:
    try:
        with sqlite3.connect(out / "journal.sqlite", timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
    except sqlite3.Error:
        return 0


def outcome(out: Path, n: int) -> dict:
    catalog, errors = pd.read_parquet(out / "catalog.parquet"), pd.read_csv(out / "errors.csv")
    ids = sorted(catalog["id"].tolist() + errors["id"].tolist())
    return {"images": len(catalog), "error_rows": len(errors), "lost_rows": n - len(set(ids)),
            "ok_ids": sorted(catalog["id"].tolist()), "reasons": errors["reason"].str.split(" \\(").str[0]
            .value_counts().to_dict()}


def run_plain(sky: Path, work: Path, url: str, args) -> dict:
    out = work / "plain"
    t0 = time.perf_counter()
    subprocess.run(cutouts_argv(sky, out, work / "cache-plain", url, args), env=ENV, check=True)
    return {"seconds": time.perf_counter() - t0, **outcome(out, args.n)}


def run_killed(sky: Path, work: Path, url: str, args) -> dict:
    out, cache = work / "killed", work / "cache-killed"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cutouts_argv(sky, out, cache, url, args), env=ENV)
    while journalled(out) < args.n // 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = journalled(out)
    t1 = time.perf_counter()
    subprocess.run(cutouts_argv(sky, out, cache, url, args) + ["--resume"], env=ENV, check=True)
    t2 = time.perf_counter()
    return {"seconds": t2 - t0, "rows_at_kill": at_kill, "seconds_before_kill": t1 - t0,
            "seconds_resume": t2 - t1, **outcome(out, args.n)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--service", default="legacy-fits")
    p.add_argument("--fail", type=float, default=0.08, help="fraction of positions failing their first request")
    p.add_argument("--permanent", type=float, default=0.02, help="fraction failing every request")
    p.add_argument("--slow", type=float, default=2.0, help="seconds of a slow answer")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sky = work / "sky.csv"
        pd.DataFrame({"id": np.arange(1, args.n + 1), "ra": rng.uniform(0, 360, args.n),
                      "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, args.n)))}).to_csv(sky, index=False)
        results = {"n": args.n, "size": args.size, "service": args.service, "fail": args.fail,
                   "permanent": args.permanent, "concurrency": args.concurrency,
                   "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                   "load_1min_before": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        for name, job in (("plain", run_plain), ("kill_resume", run_killed)):
            port = free_port()
            server = start_emulator(port, args.fail, args.permanent, args.slow)  # fresh: faults restart
            try:
                results[name] = job(sky, work, f"http://127.0.0.1:{port}", args)
            finally:
                server.terminate()
                server.wait()
            r = results[name]
            r["images_per_s"] = args.n / r["seconds"]
        results["load_1min_after"] = os.getloadavg()[0]
        same = results["plain"].pop("ok_ids") == results["kill_resume"].pop("ok_ids")
        results["same_images_after_resume"] = same
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
