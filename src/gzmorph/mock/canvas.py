"""A three-band (g, r, i) image under construction: maps, point splats, PSF, noise, stretch.

Values are surface brightness in sky-noise units per 424-px pixel, so the same
galaxy looks the same whatever the rendered ``size``: lengths given in 424-px units
are scaled by ``size / 424`` and a point of flux ``F`` adds ``F * scale**2`` to one
rendered pixel.  The canvas is padded to a size with small prime factors (the FFT of
424 = 8 x 53 is twice as slow as that of 432) and the padding also keeps the PSF blur
from wrapping light across the image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["Canvas", "sed", "REFERENCE_SIZE"]

#: The image size (pixels) in which every length of :class:`~gzmorph.mock.GalaxyParams` is given.
REFERENCE_SIZE = 424
# Lupton asinh stretch: linear below ~BETA sky-noise units, logarithmic above.  With
# the sky noise at 1 this gives ~6/255 of noise per channel before JPEG compression
# (~3/255 after, as measured on the Kaggle images) and galaxy cores near saturation,
# as in the SDSS gri composites of Galaxy Zoo.
_BETA = 10.0
_SOFT = 0.235
_GAIN = 8.0  # sky-noise units per photon-ish count: Poisson noise on bright parts


def sed(colour: float) -> np.ndarray:
    """``(3,)`` float32 g, r, i flux fractions (mean 1) of a source of colour ``colour``.

    ``colour`` is a g-i-like index: about 0.8 for old red bulges, 0.3 for disks,
    below 0 for star-forming knots.
    """
    v = np.array([10 ** (-0.22 * colour), 1.0, 10 ** (0.12 * colour)], dtype=np.float64)
    return (3.0 * v / v.sum()).astype(np.float32)


def _good_fft_size(n: int) -> int:
    """Smallest m >= n whose prime factors are 2, 3 and 5."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cached x and y pixel-centre coordinates (424-px units, origin at the image centre) and |k|^2."""
    pad = _good_fft_size(size + max(8, size // 32))
    c = (size - 1) / 2.0
    axis = ((np.arange(pad, dtype=np.float32) - c) * (REFERENCE_SIZE / size)).astype(np.float32)
    # Wrap the padding to negative coordinates: it then stands for pixels just beyond
    # the left/top edges as well as the right/bottom ones, symmetric around the image.
    axis[size + (pad - size) // 2 :] -= pad * (REFERENCE_SIZE / size)
    fy = np.fft.fftfreq(pad).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(pad).astype(np.float32)[None, :]
    k2 = fx**2 + fy**2
    for a in (axis, k2):
        a.flags.writeable = False  # shared by every canvas of this size
    return axis, axis, k2


class Canvas:
    """Float32 ``(3, P, P)`` g, r, i planes; the image is the top-left ``size x size``.

    Parameters
    ----------
    size : int
        Side of the rendered image in pixels.
    """

    def __init__(self, size: int) -> None:
        if size < 16:
            raise ValueError(f"image size must be at least 16 pixels, got {size}")
        self.size = int(size)
        self.scale = self.size / REFERENCE_SIZE
        xs, ys, self._k2 = _grid(self.size)
        self.pad = xs.shape[0]
        self.x = xs[None, :]  # (1, P): broadcasts against y to the full grid
        self.y = ys[:, None]  # (P, 1)
        self.bands = np.zeros((3, self.pad, self.pad), dtype=np.float32)

    # ----------------------------------------------------------------- drawing
    def add(self, sb: np.ndarray, colour: float | np.ndarray) -> None:
        """Add a ``(P, P)`` surface-brightness map with a colour index or a ``(3,)`` SED."""
        s = sed(colour) if np.ndim(colour) == 0 else np.asarray(colour, dtype=np.float32)
        self.bands += sb[None, :, :] * s[:, None, None]

    def add_flux(self, shape: np.ndarray, flux: float, colour: float | np.ndarray) -> None:
        """Add an unnormalised ``(P, P)`` profile scaled to total ``flux`` (numerically)."""
        total = float(shape.sum(dtype=np.float64))
        if total > 0 and flux > 0:
            self.add(shape * np.float32(flux * self.scale**2 / total), colour)

    def splat(self, x: np.ndarray, y: np.ndarray, flux: np.ndarray, colour: float | np.ndarray) -> None:
        """Add point sources at 424-px coordinates ``x, y`` (bilinear, sub-pixel exact).

        ``flux`` is per point (scalar or ``(N,)``); ``colour`` a colour index, a ``(3,)``
        SED or an ``(N, 3)`` SED per point.  Points off the padded canvas are dropped.
        """
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.asarray(y, dtype=np.float64).ravel()
        flux = np.broadcast_to(np.asarray(flux, dtype=np.float64), x.shape) * self.scale**2
        c = (self.size - 1) / 2.0
        px, py = x * self.scale + c, y * self.scale + c
        # Pixels just beyond the left/top edges live at the end of the padded axes.
        lo = -(self.pad - self.size) // 2
        keep = (px >= lo) & (px < self.pad + lo - 1) & (py >= lo) & (py < self.pad + lo - 1)
        px, py, flux = px[keep], py[keep], flux[keep]
        x0, y0 = np.floor(px), np.floor(py)
        fx, fy = px - x0, py - y0
        x0, y0 = x0.astype(np.int64) % self.pad, y0.astype(np.int64) % self.pad
        x1, y1 = (x0 + 1) % self.pad, (y0 + 1) % self.pad
        idx = np.concatenate([y0 * self.pad + x0, y0 * self.pad + x1, y1 * self.pad + x0, y1 * self.pad + x1])
        wf = np.concatenate([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy]) * np.tile(flux, 4)
        if np.ndim(colour) == 2:
            seds = np.tile(np.asarray(colour, dtype=np.float64)[keep], (4, 1))  # (4N, 3): per bilinear weight
        else:
            s = sed(colour) if np.ndim(colour) == 0 else np.asarray(colour, dtype=np.float64)
            seds = np.broadcast_to(s, (idx.size, 3))
        flat = self.bands.reshape(3, -1)  # (3, P, P) -> (3, P*P), a view
        for b in range(3):
            np.add.at(flat[b], idx, (wf * seds[:, b]).astype(np.float32))

    # ------------------------------------------------------------ observation
    def blur(self, fwhm: float, wing: float = 0.12) -> None:
        """Convolve with a Gaussian core plus a 3x wider Gaussian wing (a Moffat-like PSF).

        ``fwhm`` is in 424-px units.  The transfer function is analytic, so the blur
        costs one real FFT pair of the three planes.  torch's FFT is used because
        numpy's is 3-4x slower on float32 planes of this size (measured 2.2 vs 8 ms).
        """
        sigma = fwhm / 2.3548 * self.scale
        k2 = self._k2
        h = (1 - wing) * np.exp(-2 * math.pi**2 * sigma**2 * k2) + wing * np.exp(-18 * math.pi**2 * sigma**2 * k2)
        f = torch.fft.rfft2(torch.from_numpy(self.bands))
        f *= torch.from_numpy(h.astype(np.float32))
        self.bands = torch.fft.irfft2(f, s=(self.pad, self.pad)).numpy()

    def observe(self, rng: np.random.Generator, sky_noise: float) -> np.ndarray:
        """Sky + Poisson-like noise on the image part; returns ``(3, size, size)`` float32.

        A pixel of the rendered image averages ``1 / scale**2`` reference pixels, so
        its noise is ``scale`` times the reference noise.  The normal deviates come
        from a torch generator seeded by ``rng`` (3x faster than numpy's, and as
        reproducible).
        """
        img = self.bands[:, : self.size, : self.size]
        var = np.float32(sky_noise**2) + np.maximum(img, 0.0) / np.float32(_GAIN)
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        noise = torch.randn(img.shape, generator=gen, dtype=torch.float32).numpy()
        return img + noise * np.sqrt(var) * np.float32(self.scale)

    @staticmethod
    def stretch(bands: np.ndarray, pedestal: np.ndarray | None = None, beta: float = _BETA,
                soft: float = _SOFT) -> np.ndarray:
        """Lupton et al. (2004) asinh colour composite: i, r, g -> R, G, B as ``uint8 (H, W, 3)``.

        The stretch acts on the mean intensity and scales the three bands alike, so
        colours survive in bright cores; a pixel whose brightest channel exceeds 1 is
        scaled down instead of clipped (no colour shift at saturation).  ``beta`` (the
        linear range, sky-noise units) and ``soft`` (the gain) default to the SDSS-like
        look; :mod:`gzmorph.mock.surveys` gives other surveys theirs.
        """
        i_mean = bands.mean(axis=0)
        small = np.abs(i_mean) < 1e-6
        safe = np.where(small, 1.0, i_mean)
        fac = np.where(small, soft / beta, soft * np.arcsinh(safe / beta) / safe)
        rgb = bands[::-1] * fac[None]  # (3, H, W) in R, G, B order
        rgb /= np.maximum(rgb.max(axis=0, keepdims=True), 1.0)
        if pedestal is not None:
            rgb += np.asarray(pedestal, dtype=np.float32)[:, None, None]
        rgb = np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5
        return np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))  # (3, H, W) -> (H, W, 3)
