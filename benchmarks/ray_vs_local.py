"""Ray on a local cluster against the local job: throughput and identical outputs.

Usage::

    nice -n 5 python benchmarks/ray_vs_local.py --n 300

Generates ``--n`` mock GZ2 JPEGs (424 px) and ``--n`` mock Legacy-Surveys grz FITS
cutouts (``--fits-size`` px) in a temporary folder, makes a ``small`` run with random
weights (speed does not depend on them) and predicts both collections, one pass on the
CPU, with

* the local job (:func:`gzmorph.inference.predict.predict_to_file`, decoding in
  process, torch's threads);
* Ray (:func:`gzmorph.inference.ray.predict_ray`) on a cluster started here with
  ``ray.init(num_cpus=CPUS)`` before the timing (its start-up is printed apart), with
  ``A`` CPU actors of ``C`` CPUs each for every ``--actors AxC``.

JPEGs are predicted as they are; the FITS cutouts with the ``legacy-grz`` composite
and recentring.  Prints one JSON line per job: images/s over the whole job (decoding
and recentring included), the ratio to the local job, and the largest difference of
the Ray answers from the local ones (ids, error rows and ``recentred`` must match
exactly), with the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from gzmorph.data.composite import STRETCH_PRESETS
from gzmorph.inference.predict import predict_to_file
from gzmorph.inference.ray import predict_ray
from gzmorph.mock import generate
from gzmorph.models.rundir import save_checkpoint, save_run
from gzmorph.nn.model import build_model
from gzmorph.training.recipes import get_preset
from gzmorph.tree import GZ2


def small_run(path: Path) -> Path:
    cfg = get_preset("small")
    save_run(path, cfg, {"pca": {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}})
    save_checkpoint(path / "checkpoints" / "best.pt", build_model(cfg.model, GZ2), 0, cfg)
    return path


def compare(local, remote) -> float:
    """Largest answer difference of the Ray output from the local one; ids, errors and flags must match."""
    (want, want_err), (got, got_err) = local.read(), remote.read()
    assert got["GalaxyID"].tolist() == want["GalaxyID"].tolist(), "other rows"
    assert got_err["GalaxyID"].tolist() == want_err["GalaxyID"].tolist(), "other error rows"
    if "recentred" in want:
        assert got["recentred"].tolist() == want["recentred"].tolist(), "other recentring"
    return float(np.nanmax(np.abs(got[GZ2.columns].to_numpy() - want[GZ2.columns].to_numpy()), initial=0.0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--fits-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--chunk-rows", type=int, default=64, help="rows per chunk (the unit of work of an actor)")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--actors", nargs="+", default=["2x1", "1x2"], help="Ray actors as AxC (A actors of C CPUs)")
    args = p.parse_args()
    import ray

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = small_run(tmp / "run")
        t0 = time.perf_counter()
        generate(tmp / "jpeg", n=args.n, seed=0, progress=False)
        generate(tmp / "fits", n=args.n, seed=1, size=args.fits_size, format="fits", progress=False)
        print(json.dumps({"mock_seconds": round(time.perf_counter() - t0, 1)}))
        t0 = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        print(json.dumps({"ray_init_seconds": round(time.perf_counter() - t0, 1)}))
        cases = [("jpeg", tmp / "jpeg" / "images_training_rev1", {}),
                 ("fits+recentre", tmp / "fits" / "images_training_rev1",
                  {"stretch": STRETCH_PRESETS["legacy-grz"], "recentre": True})]
        common = dict(device="cpu", progress=False, batch_size=args.batch_size, chunk_rows=args.chunk_rows)
        for name, folder, options in cases:
            load = os.getloadavg()[0]
            local = predict_to_file(run, folder, tmp / f"{name}-local.parquet", workers=0, **common, **options)
            base = {"case": name, "n": local.n_inputs, "failed": local.n_failed, "cpus": os.cpu_count(),
                    "machine": platform.processor() or platform.machine()}
            print(json.dumps({**base, "job": "local", "images_per_s": round(local.images_per_second, 1),
                              "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}))
            for spec in args.actors:
                actors, cpus = spec.split("x")
                load = os.getloadavg()[0]
                remote = predict_ray(run, folder, tmp / f"{name}-ray-{spec}.parquet", actors=int(actors),
                                     gpus_per_actor=0, cpus_per_actor=float(cpus), **common, **options)
                print(json.dumps({**base, "job": f"ray {spec}", "images_per_s": round(remote.images_per_second, 1),
                                  "ratio_to_local": round(remote.images_per_second / local.images_per_second, 2),
                                  "max_abs_diff": compare(local, remote),
                                  "load_1min": [round(load, 2), round(os.getloadavg()[0], 2)]}))
        ray.shutdown()


if __name__ == "__main__":
    main()
