"""Mock survey cutouts as multi-band FITS cubes, with the true centre and size of each galaxy.

Unlike the GZ2-like JPEGs of :mod:`gzmorph.mock.render`, these look like what a survey
user holds: a cutout at the survey's pixel scale, several bands each with its own
Gaussian PSF and sky noise (in the survey's units, with a random sky pedestal that may
be negative), the galaxy off centre (up to :data:`MAX_OFFSET` of the side) and of any
size (Petrosian R90 log-uniform between 1/16 and 1/5 of the side, i.e. zooms from
about 0.6 to 1.9 to reach the GZ2 convention), plus field stars away from it.  The
galaxy is a Sersic bulge plus an exponential disk whose fractions, axis ratio, angle
and colours come from :class:`~gzmorph.mock.params.GalaxyParams`, so the crowd labels
of the JPEG mock apply loosely; the spiral arms, bars and mergers are not drawn.

The truth kept for every galaxy: its centre (pixels, 0-based) and its Petrosian R90
(pixels) measured with plain numpy apertures on the noiseless, isolated, PSF-convolved
sum of the bands, so the tests can check what :mod:`gzmorph.data.recentre` measures
from the noisy, crowded cutout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzmorph.mock.params import GalaxyParams

__all__ = ["MockSurvey", "MOCK_SURVEYS", "render_cutout", "write_cube", "true_r90", "MAX_OFFSET"]

#: Largest offset of the galaxy from the image centre, as a fraction of the side.
MAX_OFFSET = 0.15


@dataclass(frozen=True)
class MockSurvey:
    """Pixel scale, bands, PSF, noise and units of a mock survey."""

    bands: tuple[str, str, str]
    pixscale: float  # arcsec per pixel
    psf_fwhm: tuple[float, float, float]  # arcsec, per band
    noise: tuple[float, float, float]  # sky rms per pixel, nanomaggies, per band
    unit: str = "nanomaggy"
    per_nanomaggy: float = 1.0  # data units per nanomaggy


MOCK_SURVEYS: dict[str, MockSurvey] = {
    "legacy": MockSurvey(("g", "r", "z"), 0.262, (1.5, 1.3, 1.2), (0.004, 0.006, 0.015)),
    "sdss": MockSurvey(("g", "r", "i"), 0.396, (1.5, 1.3, 1.2), (0.02, 0.03, 0.05)),
    "hsc": MockSurvey(("g", "r", "i"), 0.168, (0.8, 0.75, 0.65), (0.002, 0.003, 0.004), unit="count (ZP 27)",
                      per_nanomaggy=10 ** (0.4 * (27 - 22.5))),
}


def _sed(colour: float) -> np.ndarray:
    """Band flux fractions (blue to red, mean 1) of a g-i-like colour."""
    v = np.array([10 ** (-0.3 * colour), 1.0, 10 ** (0.2 * colour)])
    return 3.0 * v / v.sum()


def _sersic(r: np.ndarray, r_eff: float, n: float) -> np.ndarray:
    b = 2.0 * n - 1.0 / 3.0 + 0.009876 / n  # Prugniel & Simien (1997)
    return np.exp(-b * ((r / r_eff) ** (1.0 / n) - 1.0))


def _profile(side: int, x0: float, y0: float, r_eff: float, n: float, q: float, pa: float) -> np.ndarray:
    yy, xx = np.mgrid[:side, :side].astype(np.float64)
    c, s = math.cos(math.radians(pa)), math.sin(math.radians(pa))
    u, v = (xx - x0) * c + (yy - y0) * s, -(xx - x0) * s + (yy - y0) * c
    sb = _sersic(np.hypot(u, v / q), r_eff, n)
    return sb / sb.sum()


def _blur(plane: np.ndarray, fwhm_px: float) -> np.ndarray:
    side = plane.shape[0]
    pad = side + 32  # keeps light from wrapping across the edges
    fy, fx = np.fft.fftfreq(pad)[:, None], np.fft.rfftfreq(pad)[None, :]
    sigma = fwhm_px / 2.3548
    kernel = np.exp(-2 * (math.pi * sigma) ** 2 * (fx**2 + fy**2))
    big = np.zeros((pad, pad))
    big[:side, :side] = plane
    return np.fft.irfft2(np.fft.rfft2(big) * kernel, s=(pad, pad))[:side, :side]


def true_r90(image: np.ndarray, x: float, y: float) -> float:
    """Petrosian R90 (pixels) of a noiseless isolated source, with plain numpy apertures.

    Apertures are sums over sub-sampled pixels (4 x 4 per pixel), independent of the
    ``sep`` photometry of :mod:`gzmorph.data.recentre`.
    """
    sub, step = 4, 0.05
    fine = np.repeat(np.repeat(image, sub, 0), sub, 1) / sub**2
    coords = (np.arange(fine.shape[0]) + 0.5) / sub - 0.5
    r = np.hypot(coords[None, :] - x, coords[:, None] - y).ravel()
    # Curve of growth from a radial histogram (0.05-px bins): linear time, no sort.
    cum = np.cumsum(np.bincount((r / step).astype(np.int64), weights=fine.ravel()))
    edges = step * np.arange(1, len(cum) + 1)

    def flux(radius: np.ndarray) -> np.ndarray:
        return np.interp(radius, edges, cum)

    radii = np.geomspace(1.0, image.shape[0], 400)
    inside = flux(radii) / (math.pi * radii**2)
    ann = (flux(1.25 * radii) - flux(0.8 * radii)) / (math.pi * (1.25**2 - 0.8**2) * radii**2)
    below = np.flatnonzero(ann / inside < 0.2)
    r_p = radii[below[0]]
    total = flux(np.array([2 * r_p]))[0]
    fine_r = np.geomspace(0.5, 2 * r_p, 2000)
    return float(fine_r[np.searchsorted(flux(fine_r), 0.9 * total)])


def render_cutout(p: GalaxyParams, rng: np.random.Generator, side: int, survey: MockSurvey
                  ) -> tuple[np.ndarray, dict[str, float]]:
    """One mock cutout: ``(3, side, side)`` float32 in the survey's units, and its truth.

    Returns
    -------
    planes : ndarray (3, side, side), float32
        Bands blue to red, with noise and a sky pedestal.
    truth : dict
        ``x_true``, ``y_true`` (pixels), ``r90_true`` (pixels), ``pixscale``.
    """
    c = (side - 1) / 2.0
    x0, y0 = c + rng.uniform(-MAX_OFFSET, MAX_OFFSET, 2) * side
    r90 = math.exp(rng.uniform(math.log(side / 16), math.log(side / 5)))
    flux = math.exp(rng.uniform(math.log(40.0), math.log(400.0)))  # nanomaggies: r ~ 16-18 mag
    bulge_frac = 1.0 if p.kind in ("smooth", "star", "artifact") else float(np.clip(p.bulge_frac, 0.05, 1.0))
    n_bulge = float(np.clip(p.sersic_n, 1.5, 4.0))
    # R90 / R_eff is about 2.3 for a disk and 3-4 for a bulge once truncated at 2 R_P.
    bulge = _profile(side, x0, y0, r90 / (2.3 + 0.4 * n_bulge), n_bulge, max(p.bulge_q, 0.5), p.pa)
    disk = _profile(side, x0, y0, r90 / 2.3, 1.0, max(p.axis_ratio, 0.2), p.pa)
    sed_b, sed_d = _sed(p.bulge_colour + 0.2), _sed(p.disk_colour)
    galaxy = np.zeros((3, side, side))
    stars = np.zeros((3, side, side))
    for _ in range(rng.poisson(4)):
        sx, sy = rng.uniform(0, side - 1, 2)
        far = math.hypot(sx - c, sy - c) > 0.3 * side and math.hypot(sx - x0, sy - y0) > 0.3 * side
        s_flux = math.exp(rng.uniform(math.log(2.0), math.log(200.0 if far else 4.0)))
        stars[:, int(round(sy)), int(round(sx))] += s_flux * _sed(rng.uniform(-0.3, 1.5))
    planes = np.empty((3, side, side), dtype=np.float32)
    for b in range(3):
        galaxy[b] = _blur(flux * (bulge_frac * sed_b[b] * bulge + (1 - bulge_frac) * sed_d[b] * disk),
                          survey.psf_fwhm[b] / survey.pixscale)
        light = galaxy[b] + _blur(stars[b], survey.psf_fwhm[b] / survey.pixscale)
        sky = rng.normal(0.0, 3 * survey.noise[b])  # the pedestal left by the survey's sky model, of either sign
        noisy = light + sky + rng.normal(0.0, survey.noise[b], (side, side))
        planes[b] = (noisy * survey.per_nanomaggy).astype(np.float32)
    truth = {"x_true": float(x0), "y_true": float(y0), "r90_true": true_r90(galaxy.sum(axis=0), x0, y0),
             "pixscale": survey.pixscale}
    return planes, truth


def write_cube(planes: np.ndarray, path: str | Path, survey: MockSurvey) -> None:
    """Write a ``(3, H, W)`` cube with the header of a Legacy Surveys cutout (``BANDS``, ``PIXSCALE``, ``CD``)."""
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.asarray(planes, dtype=np.float32))
    hdu.header["BANDS"] = "".join(survey.bands)
    for k, band in enumerate(survey.bands):
        hdu.header[f"BAND{k}"] = band
    hdu.header["PIXSCALE"] = survey.pixscale
    hdu.header["CD1_1"] = -survey.pixscale / 3600.0
    hdu.header["CD2_2"] = survey.pixscale / 3600.0
    hdu.header["BUNIT"] = survey.unit
    hdu.writeto(path, overwrite=True)
