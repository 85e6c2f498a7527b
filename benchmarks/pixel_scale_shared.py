"""Real GZ2 galaxies shown as another survey would: does ``--pixel-scale`` / ``--adapt-bn`` undo it?  (issue 22)

A sanity measurement on the shared data, not the cross-survey benchmark (that one, on mock
surveys, is ``benchmarks/cross_survey.py``).  The images of a labelled catalog (the
development split) are re-made in a temporary folder (never kept) as:

* ``tight``: the central half of each 424-px JPEG (212 px at the GZ2 median 0.09"/px, a
  19" field: every galaxy twice as large in the frame as the network learnt);
* ``tight-coarse``: the same field at half the resolution (106 px, 0.18"/px);
* ``blurred``: the whole image, with a wider PSF (Gaussian, sigma 2 px at 424), more
  noise (sigma 6 counts) and a darker stretch (gamma 1.4): other statistics, same geometry.

Each is predicted with a trained run, plain and with the options, and scored by the
RMSE over the columns the labels have (RMSE17 on the shared data).

Run::

    python benchmarks/pixel_scale_shared.py --model /work/runs/p4m-dev --labels /work/runs/dev500.csv \\
        --images ../shared/data/gz2-kaggle-5k/images_training_rev1
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from gzmorph.inference.predict import predict


def variants(labels: pd.DataFrame, images: Path, root: Path, seed: int = 0) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    out = {name: root / name for name in ("original", "tight", "tight-coarse", "blurred")}
    for folder in out.values():
        folder.mkdir()
    for gid in labels["GalaxyID"]:
        im = Image.open(images / f"{gid}.jpg").convert("RGB")
        im.save(out["original"] / f"{gid}.png")
        tight = im.crop((106, 106, 318, 318))
        tight.save(out["tight"] / f"{gid}.png")
        tight.resize((106, 106), Image.Resampling.BOX).save(out["tight-coarse"] / f"{gid}.png")
        blurred = np.asarray(im.filter(ImageFilter.GaussianBlur(2)), dtype=np.float64)
        blurred = 255 * (np.clip(blurred + rng.normal(0, 6, blurred.shape), 0, 255) / 255) ** 1.4
        Image.fromarray(np.round(blurred).astype(np.uint8)).save(out["blurred"] / f"{gid}.png")
    return out


def rmse(pred: pd.DataFrame, labels: pd.DataFrame) -> float:
    cols = [c for c in labels.columns if c.startswith("Class")]
    merged = labels[["GalaxyID", *cols]].merge(pred[["GalaxyID", *cols]], on="GalaxyID", suffixes=("", "_p"))
    a = merged[cols].to_numpy(dtype=np.float64)
    b = merged[[f"{c}_p" for c in cols]].to_numpy(dtype=np.float64)
    mask = ~np.isnan(a)
    return float(np.sqrt(np.mean((a[mask] - b[mask]) ** 2)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--labels", required=True, type=Path, help="catalog with GalaxyID and answer columns")
    ap.add_argument("--images", required=True, type=Path, help="the 424-px JPEGs")
    ap.add_argument("--tta", default="none")
    args = ap.parse_args()
    labels = pd.read_csv(args.labels)
    cases = [("original", {}), ("tight", {}), ("tight", {"pixel_scale": 0.09}),
             ("tight-coarse", {}), ("tight-coarse", {"pixel_scale": 0.18}),
             ("blurred", {}), ("blurred", {"adapt_bn": True}),
             ("tight", {"pixel_scale": 0.09, "adapt_bn": True})]
    print(f"load {os.getloadavg()[0]:.1f}; {len(labels)} galaxies; model {args.model}; tta {args.tta}")
    with tempfile.TemporaryDirectory() as tmp:
        folders = variants(labels, args.images, Path(tmp))
        for name, opts in cases:
            t0 = time.monotonic()
            frame = predict(args.model, str(folders[name]), tta=args.tta, progress=False, device="cpu", **opts)
            what = ", ".join(f"{k}={v}" for k, v in opts.items()) or "plain"
            print(f"| {name} | {what} | {rmse(frame, labels):.4f} | {time.monotonic() - t0:.0f} s |", flush=True)
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
