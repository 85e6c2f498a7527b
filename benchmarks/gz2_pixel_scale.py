"""How fine are the pixels of the GZ2/Kaggle JPEGs, in SDSS pixels?  (issue 22: what the default pixel scale means)

The GZ2 images were cut from SDSS imaging (0.396"/px) at 0.02 x petroR90_r arcsec per
pixel, per galaxy, so most were *enlarged* from SDSS's pixels.  Enlarging white sky
noise by a factor ``u`` correlates it over about ``u`` pixels: the width of the sky's
autocorrelation measures ``u``, and ``0.396 / u`` is the image's scale in arcsec/px.

Measured on the sky of the four 48-px corners of each image (corners holding a source
are skipped): the lag where the autocorrelation (mean of x and y) falls to 0.5.  The
lag is turned into ``u`` by a calibration on synthetic sky: white noise at SDSS pixels
with the images' own sky level and noise, enlarged ``u`` times (bilinear, as a
resampling cutout service would), clipped to 8 bits and JPEG-encoded at the Kaggle
files' quality (75, read from their quantisation tables), then measured the same way.

Run (reads the shared data, training split only; writes nothing)::

    python benchmarks/gz2_pixel_scale.py --images ../shared/data/gz2-kaggle-5k/images_training_rev1 --n 1000
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
from PIL import Image

CORNER = 48
SDSS = 0.396


def half_width(patch: np.ndarray) -> float:
    """Lag (px) where the autocorrelation of a zero-mean patch, mean of x and y, falls to 0.5."""
    x = patch - patch.mean()
    n = x.shape[0]
    f = np.fft.rfft2(x, s=(2 * n, 2 * n))
    acf = np.fft.irfft2(np.abs(f) ** 2, s=(2 * n, 2 * n))
    if acf[0, 0] <= 0:
        return float("nan")
    line = 0.5 * (acf[0, : n // 2] + acf[: n // 2, 0]) / acf[0, 0]
    below = np.flatnonzero(line < 0.5)
    if not len(below):
        return float("nan")
    k = int(below[0])
    return float(k - 1 + (line[k - 1] - 0.5) / (line[k - 1] - line[k]))


def sky_patches(image: np.ndarray) -> list[np.ndarray]:
    """The corners of a grey image that hold only sky (no pixel above median + 6 robust sigma)."""
    out = []
    for sl in ((slice(0, CORNER), slice(0, CORNER)), (slice(0, CORNER), slice(-CORNER, None)),
               (slice(-CORNER, None), slice(0, CORNER)), (slice(-CORNER, None), slice(-CORNER, None))):
        p = image[sl]
        med = np.median(p)
        sigma = 1.4826 * np.median(np.abs(p - med))
        if sigma > 0 and p.max() <= med + 6 * sigma:
            out.append(p)
    return out


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64).sum(-1)


KERNELS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "lanczos": Image.Resampling.LANCZOS}


def synthetic(u: float, level: float, noise: float, rng: np.random.Generator, side: int = 424,
              kernel: str = "bilinear") -> np.ndarray:
    """Sky at SDSS pixels enlarged ``u`` times, 8 bits, JPEG quality 75: ``(side, side, 3)`` uint8."""
    coarse = max(8, int(np.ceil(side / u)) + 2)
    sky = rng.normal(0.0, 1.0, (coarse, coarse)).astype(np.float32)
    big = np.asarray(Image.fromarray(sky, "F").resize((int(round(coarse * u)),) * 2, KERNELS[kernel]))
    big = big[:side, :side]
    big = level + noise * big / big.std()
    rgb = np.clip(np.round(np.repeat(big[..., None], 3, -1)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=75)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def calibration(level: float, noise: float, kernel: str = "bilinear", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Half-width of the synthetic sky's autocorrelation for enlargements ``u`` (monotone)."""
    rng = np.random.default_rng(seed)
    us = np.geomspace(1.0, 12.0, 25)
    widths = []
    for u in us:
        ws = [half_width(p) for _ in range(6) for p in sky_patches(grey(synthetic(u, level, noise, rng,
                                                                                    kernel=kernel)))]
        widths.append(np.nanmedian(ws))
    return us, np.maximum.accumulate(np.asarray(widths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", required=True, type=Path)
    ap.add_argument("--n", type=int, default=1000, help="images, lowest GalaxyIDs first (the training split)")
    ap.add_argument("--kernel", choices=sorted(KERNELS), nargs="+", default=["bilinear"],
                    help="resampling kernels assumed for the enlargement (one calibration each)")
    args = ap.parse_args()
    paths = sorted(args.images.glob("*.jpg"))[: args.n]
    widths, levels, noises = [], [], []
    for path in paths:
        patches = sky_patches(grey(np.asarray(Image.open(path).convert("RGB"))))
        if not patches:
            continue
        widths.append(np.median([half_width(p) for p in patches]))
        levels.append(np.median([np.median(p) for p in patches]) / 3)
        noises.append(np.median([p.std() for p in patches]) / 3)
    widths = np.asarray(widths)
    widths = widths[np.isfinite(widths)]
    print(f"{len(widths)} of {len(paths)} images with sky corners; sky level {np.median(levels):.1f}, "
          f"noise {np.median(noises):.1f} (per channel, 8-bit); autocorrelation half-width: median "
          f"{np.median(widths):.2f} px")
    for kernel in args.kernel:
        us, cal = calibration(float(np.median(levels)), float(np.median(noises)), kernel)
        u = np.interp(widths, cal, us)
        q = np.percentile(SDSS / u, [10, 25, 50, 75, 90])
        print(f"{kernel}: calibration u->width " + " ".join(f"{a:.2f}->{w:.2f}" for a, w in zip(us[::4], cal[::4])))
        print(f"  enlargement u median {np.median(u):.2f}; pixel scale at 424 px (arcsec/px), percentiles "
              "10/25/50/75/90: " + " ".join(f"{v:.3f}" for v in q))
        print(f"  field at 424 px: median {424 * q[2]:.1f}\"; implied petroR90_r (scale / 0.02): median "
              f"{q[2] / 0.02:.1f}\"")


if __name__ == "__main__":
    main()
