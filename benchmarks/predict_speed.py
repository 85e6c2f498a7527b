"""End-to-end prediction speed: JPEG files on disk -> output file, in images/s.

Measures, for each TTA set, ``gzmorph.inference.predict.predict_to_file`` on the first N images of
a folder (decode in worker processes + crops + network + Parquet/CSV writing), and,
to show where the time goes, the decode rate alone (``iter_decoded``, same workers)
and the network rate alone on already-decoded images (same ensemble and TTA).

Without ``--model`` an untrained network of ``--preset`` is used: speed does not depend
on the weights.  On CUDA (``--device cuda``) prediction uses bf16 autocast and
channels_last (``gzmorph.runtime``); use ``--batch-size 256`` or more there.

Examples::

    python benchmarks/predict_speed.py --preset small --n 1000 --tta none
    python benchmarks/predict_speed.py --preset paper --n 300 --tta none paper --n-tta 20
    python benchmarks/predict_speed.py --device cuda --batch-size 512 --n 5000 --n-tta 500 --preset paper
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
import pandas as pd
import torch

from gzmorph.inference.ensemble import Ensemble
from gzmorph.data.images import iter_decoded
from gzmorph.nn.model import GalaxyNet
from gzmorph.inference.job import prediction_runtime
from gzmorph.inference.predict import PredictConfig, predict_to_file
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import save_checkpoint, save_run
from gzmorph.tree import GZ2

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "gz2-kaggle-5k" / "images_training_rev1"


def untrained_run(folder: Path, preset: str, image_size: int | None) -> Path:
    """A run directory with an untrained network of ``preset`` (the layout `train` writes)."""
    cfg = get_preset(preset).override(image_size=image_size)
    torch.manual_seed(0)
    model = GalaxyNet(cfg.model, GZ2)
    save_run(folder, cfg, {"pca": {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}})
    save_checkpoint(folder / "checkpoints" / "best.pt", model, 0, cfg)
    return folder


def decode_rate(paths: list[str], size: int, workers: int | None) -> float:
    t0 = time.perf_counter()
    for _ in iter_decoded(paths, size=size, workers=workers):
        pass
    return len(paths) / (time.perf_counter() - t0)


def network_rate(ensemble: Ensemble, images: np.ndarray, batch_size: int) -> float:
    ensemble(images[:batch_size])  # warm-up (cuDNN autotuning, allocator)
    if ensemble.runtime.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        ensemble(images[i : i + batch_size])
    if ensemble.runtime.is_cuda:
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - t0)


def bench(args: argparse.Namespace, run_dirs: list[Path], paths: list[str], tta: str, out_dir: Path,
          net_images: int) -> dict:
    cfg = PredictConfig(tta=tta, batch_size=args.batch_size, device=args.device, precision=args.precision,
                        workers=args.workers, threads=args.threads, compile=args.compile,
                        progress=not args.no_progress)
    ensemble = Ensemble.load(run_dirs, prediction_runtime(cfg), tta, compile=args.compile)
    catalog = out_dir / f"catalog-{len(paths)}.csv"
    pd.DataFrame({"GalaxyID": [Path(p).stem for p in paths], "path": paths}).to_csv(catalog, index=False)
    out = out_dir / f"pred-{tta}.{args.format}"
    summary = predict_to_file(run_dirs, catalog, out, config=cfg)
    sample = np.stack([img for _, img, _ in iter_decoded(paths[:net_images], size=ensemble.image_size,
                                                         workers=args.workers)])
    return {
        "tta": tta, "n_transforms": len(ensemble.transforms), "images": len(paths),
        "end_to_end_img_s": round(len(paths) / summary.seconds, 2),
        "decode_only_img_s": round(decode_rate(paths, ensemble.image_size, args.workers), 1),
        "network_only_img_s": round(network_rate(ensemble, sample, args.batch_size), 2),
        "predicted": summary.n_predicted, "failed": summary.n_failed,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEGs")
    p.add_argument("--model", nargs="+", type=Path, help="run directories (default: an untrained --preset)")
    p.add_argument("--preset", default="small", help="training preset whose network is timed without --model")
    p.add_argument("--image-size", type=int, default=None, help="decode size of the untrained run (preset's)")
    p.add_argument("--tta", nargs="+", default=["none", "paper"], choices=["none", "rot", "paper"])
    p.add_argument("--n", type=int, default=500, help="images for --tta none")
    p.add_argument("--n-tta", type=int, default=20, help="images for the other TTA sets")
    p.add_argument("--net-images", type=int, default=256, help="images for the network-only rate")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: automatic)")
    p.add_argument("--device", default="cpu", help="cpu, cuda (bf16 autocast + channels_last) or auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: fp32 on CPU, bf16 autocast + channels_last on CUDA; bf16: also on CPU")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the networks (end-to-end includes the compile time)")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)  # also for the decode-only and network-only rates
    files = sorted(args.images.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no JPEGs in {args.images}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run_dirs = args.model or [untrained_run(tmp / "run", args.preset, args.image_size)]
        for tta in args.tta:
            n = args.n if tta == "none" else args.n_tta
            res = bench(args, run_dirs, [str(f) for f in files[:n]], tta, tmp, min(args.net_images, n))
            res.update(model="+".join(str(m) for m in args.model) if args.model else f"untrained {args.preset}",
                       device=args.device, precision=args.precision, compile=args.compile,
                       batch_size=args.batch_size, workers=args.workers,
                       torch_threads=torch.get_num_threads(), cpus=os.cpu_count(), host=platform.node())
            print(json.dumps(res), flush=True)
            results.append(res)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
