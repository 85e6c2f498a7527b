"""Figure of mock FITS cutouts before and after recentring: ``docs/fits_recentring.png``.

Usage::

    python benchmarks/fits_figure.py --out docs/fits_recentring.png

Generates a few mock Legacy-Surveys-like grz cutouts (``gzmorph mock --format fits``),
makes their ``legacy-grz`` composites, measures each galaxy with
:mod:`gzmorph.data.recentre` and shows, per galaxy, the cutout as given (with the
true centre, +, and the measured one, x) and the image the network's crops are then
taken from: recentred and rescaled to the GZ2 convention (side = 8.48 R90) in the
same single warp as training and prediction (:func:`gzmorph.nn.augment.place`).
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from gzmorph.data.composite import STRETCH_PRESETS  # noqa: E402
from gzmorph.data.decode import DecodeOptions, decode_measured  # noqa: E402
from gzmorph.mock import generate  # noqa: E402
from gzmorph.nn import augment as aug  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/fits_recentring.png")
    parser.add_argument("--n", type=int, default=6)
    parser.add_argument("--size", type=int, default=160, help="cutout side in pixels")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    options = DecodeOptions(STRETCH_PRESETS["legacy-grz"], recentre=True)
    # The whole (virtual) GZ2-convention image, not the 207/424 crop: crop_fraction 1.
    full = replace(aug.AugmentConfig(), crop_fraction=1.0, out_size=args.size)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, n=args.n, seed=args.seed, size=args.size, format="fits", progress=False)
        truth = pd.read_csv(Path(tmp) / "truth.csv")
        fig, axes = plt.subplots(2, args.n, figsize=(2.2 * args.n, 4.6))
        for k, row in truth.iterrows():
            path = Path(tmp) / "images_training_rev1" / f"{row.GalaxyID}.fits"
            image, geom = decode_measured(path, size=None, options=options)
            side = image.shape[0]
            c = (side - 1) / 2
            t = aug.place(aug.fixed_transforms(1), geom[None])
            crop = aug.render_crops(torch.from_numpy(image[None]), t, full)[0, 0]  # (3, S, S)
            axes[0, k].imshow(image)
            axes[0, k].plot(row.x_true, row.y_true, "+", color="cyan", ms=10)
            axes[0, k].plot(c + geom[0] * side, c + geom[1] * side, "x", color="red", ms=8)
            axes[0, k].set_title(f"R90 {row.r90_true:.1f} px", fontsize=8)
            axes[1, k].imshow(crop.permute(1, 2, 0).numpy())
            axes[1, k].set_title(f"zoom {geom[2]:.2f}", fontsize=8)
        for ax in axes.ravel():
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, 0].set_ylabel("cutout (legacy-grz)", fontsize=8)
        axes[1, 0].set_ylabel("recentred, GZ2 scale", fontsize=8)
        fig.tight_layout()
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
