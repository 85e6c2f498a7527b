"""Prediction speed on survey FITS cutouts against JPEGs, with and without recentring.

Usage::

    python benchmarks/survey_speed.py --jpegs ../shared/data/gz2-kaggle-5k/images_training_rev1 --n 300

Writes ``--n`` mock Legacy-Surveys-like grz cutouts (``gzmorph mock --format fits``,
``--fits-size`` px at 0.262"/px) to a temporary folder, takes the first ``--n`` JPEGs
of ``--jpegs``, and times ``predict_to_file`` with the ``small`` network (random
weights: the speed does not depend on them) at its default image size, one pass, on
the CPU, for: JPEG, JPEG + recentring, FITS (``legacy-grz`` composite), FITS +
recentring.  Prints one JSON line per case (images/s over the whole job, decode and
measurement included, and the CPU milliseconds per image, which a busy machine distorts
less than the wall time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from gzmorph.data.composite import STRETCH_PRESETS
from gzmorph.inference.predict import predict_to_file
from gzmorph.mock import generate
from gzmorph.nn.model import build_model
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import save_checkpoint, save_run
from gzmorph.tree import GZ2


def small_run(path: Path) -> Path:
    cfg = get_preset("small")
    save_run(path, cfg, {"pca": {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}})
    save_checkpoint(path / "checkpoints" / "best.pt", build_model(cfg.model, GZ2), 0, cfg)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jpegs", required=True, help="folder of JPEGs (e.g. the shared 424-px Kaggle images)")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--fits-size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = small_run(tmp / "run")
        jpegs = tmp / "jpegs"
        jpegs.mkdir()
        for src in sorted(Path(args.jpegs).glob("*.jpg"))[: args.n]:
            os.symlink(src.resolve(), jpegs / src.name)
        t0 = time.perf_counter()
        generate(tmp / "fits", n=args.n, seed=0, size=args.fits_size, format="fits", progress=False)
        fits_dir = tmp / "fits" / "images_training_rev1"
        print(json.dumps({"mock_fits_seconds": round(time.perf_counter() - t0, 1)}))
        cases = [("jpeg", jpegs, None, False), ("jpeg+recentre", jpegs, None, True),
                 ("fits", fits_dir, STRETCH_PRESETS["legacy-grz"], False),
                 ("fits+recentre", fits_dir, STRETCH_PRESETS["legacy-grz"], True)]
        for name, folder, stretch, recentre in cases:
            out = tmp / f"{name}.parquet"
            cpu0 = time.process_time()  # CPU time of this process (all its threads): less sensitive to load
            summary = predict_to_file(run, folder, out, device="cpu", progress=False, stretch=stretch,
                                      recentre=recentre, batch_size=args.batch_size)
            print(json.dumps({"case": name, "n": summary.n_predicted, "failed": summary.n_failed,
                              "not_recentred": summary.n_not_recentred,
                              "images_per_s": round(summary.images_per_second, 1),
                              "cpu_ms_per_image": round(1000 * (time.process_time() - cpu0) / args.n, 2),
                              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                              "machine": platform.processor() or platform.machine()}))
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
