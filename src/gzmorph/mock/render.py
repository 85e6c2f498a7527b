"""Render a mock galaxy as an SDSS-like gri colour composite.

Why numpy and not GalSim: GalSim (2.8.5) draws exact PSF-convolved Sersic profiles,
but only the smooth components (arms, bars, dust lanes, knots and artefacts need our
own code and a blur anyway), and it was the slower option, measured in CPU time on
the development machine for 424-px images: 11 ms per galaxy for a PSF-convolved
bulge + disk with a fixed Sersic index, 18 ms with five cached indices and 60 ms with
a continuous index (it builds a Hankel table per index).  Here both profiles cost
about 1 ms with numpy, one FFT blur of the whole scene (every component and field
source at once) about 2 ms, and the complete image about 10 ms.  Analytic profiles
sampled at pixel centres are accurate enough once blurred by the PSF (5-18 px FWHM:
the Kaggle cutouts scale with each galaxy's Petrosian radius, so seeing spans ~10 px
on average, as measured on their field stars), and no compiled dependency is added.

A scene is built in linear g, r, i surface brightness (sky-noise units): the galaxy
by its kind, then field stars and small background galaxies, then PSF blur, sky and
Poisson-like noise, and finally the Lupton asinh stretch (i, r, g -> R, G, B).
"""

from __future__ import annotations

import math

import numpy as np

from gzmorph.mock.canvas import Canvas, sed
from gzmorph.mock.features import draw_arc, draw_clumps, draw_disk, draw_smooth, draw_tail, sersic_sb, frame
from gzmorph.mock.params import GalaxyParams

__all__ = ["render_galaxy", "draw_scene", "add_defects"]


def _star(cv: Canvas, rng: np.random.Generator, x: float, y: float, flux: float, colour: float,
          psf_fwhm: float) -> None:
    """A point source; bright ones get a halo and diffraction spikes along the image axes."""
    cv.splat(np.array([x]), np.array([y]), flux, colour)
    if flux < 3e4:
        return
    # Halo: the PSF's power-law aureole, which the Gaussian PSF model lacks.
    rc = 2.5 * psf_fwhm
    r2 = ((cv.x - np.float32(x)) ** 2 + (cv.y - np.float32(y)) ** 2) / np.float32(rc * rc)
    cv.add_flux((1 + r2) ** -1.5, 0.2 * flux, colour)
    length = 4.0 * flux**0.25 * psf_fwhm / 4
    tilt = math.radians(rng.normal(0, 2))
    d = np.concatenate([np.linspace(-length, -1, 400), np.linspace(1, length, 400)])
    w = 1 / (1 + (np.abs(d) / (0.15 * length)) ** 2)
    w *= 0.05 * flux / (2 * w.sum())
    for a in (tilt, tilt + math.pi / 2):
        cv.splat(x + d * math.cos(a), y + d * math.sin(a), w, colour)


def _artifact(cv: Canvas, p: GalaxyParams, rng: np.random.Generator) -> None:
    """The defect that makes an image a 'star or artifact': satellite trail or ghost.

    Dead columns are added after the blur (:func:`_dead_column`): they are detector
    defects, not light.
    """
    if p.artifact == "trail":
        ang = rng.uniform(0, math.pi)
        off = rng.normal(0, 20)
        t = np.linspace(-320, 320, 6000)
        x, y = t * math.cos(ang) - off * math.sin(ang), t * math.sin(ang) + off * math.cos(ang)
        # A satellite crosses the g, r and i exposures at different times: offset dashes.
        for b, shift in enumerate((-6.0, 0.0, 6.0)):
            colour = np.zeros(3, dtype=np.float32)
            colour[b] = 3.0
            cv.splat(x + shift * math.cos(ang), y + shift * math.sin(ang), rng.uniform(1.5, 5), colour)
    elif p.artifact == "ghost":
        cx, cy = rng.normal(0, 25, 2)
        rad = rng.uniform(60, 140)
        r = np.hypot(cv.x - np.float32(cx), cv.y - np.float32(cy)) / np.float32(rad)
        donut = np.exp(-0.5 * ((r - 0.8) / 0.15) ** 2) + 0.5 * (r < 0.8)
        cv.add(donut.astype(np.float32) * np.float32(rng.uniform(4, 10)), rng.uniform(-0.5, 1.5))


def _dead_column(img: np.ndarray, rng: np.random.Generator, scale: float, level: float) -> None:
    """A stuck detector column: a straight vertical line through the finished image."""
    x0 = int(np.clip(img.shape[2] / 2 + rng.normal(0, 60 * scale), 0, img.shape[2] - 1))
    width = max(1, int(round(rng.uniform(1, 3) * scale)))
    colour = np.float32(level) * np.asarray([rng.uniform(0.3, 1.0) for _ in range(3)], dtype=np.float32)
    img[:, :, x0 : x0 + width] += colour[:, None, None]


def _field(cv: Canvas, p: GalaxyParams, rng: np.random.Generator) -> None:
    """Foreground stars and small background galaxies scattered over the field."""
    n = rng.poisson(14)
    xy = rng.uniform(-230, 230, (n, 2))
    flux = np.exp(rng.uniform(math.log(20), math.log(1e4), n))
    seds = np.stack([sed(c) for c in rng.uniform(-1.0, 2.5, n)]) if n else np.zeros((0, 3))
    cv.splat(xy[:, 0], xy[:, 1], flux, seds)
    if rng.random() < 0.08:  # an occasional bright star away from the galaxy
        ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(110, 230)
        _star(cv, rng, rad * math.cos(ang), rad * math.sin(ang), math.exp(rng.uniform(11, 14)),
              rng.uniform(-0.3, 1.5), p.psf_fwhm)
    # Background galaxies: point clouds drawn from exponential disks (radius ~ Gamma(2, h)),
    # kept away from the target so that its own light stays clean.
    centres = rng.uniform(-230, 230, (rng.poisson(4), 2))
    centres = centres[np.hypot(centres[:, 0] - p.dx, centres[:, 1] - p.dy) > 2.5 * p.r_eff]
    g, k = len(centres), 400
    if g == 0:
        return
    h, q, ang = rng.uniform(1.0, 5.0, g), rng.uniform(0.3, 1.0, g), rng.uniform(0, math.pi, g)
    r, th = rng.gamma(2.0, 1.0, (g, k)) * h[:, None], rng.uniform(0, 2 * math.pi, (g, k))
    u, v = r * np.cos(th), r * np.sin(th) * q[:, None]
    ca, sa = np.cos(ang)[:, None], np.sin(ang)[:, None]
    x, y = centres[:, :1] + u * ca - v * sa, centres[:, 1:] + u * sa + v * ca  # (G, K)
    flux = np.repeat(np.exp(rng.uniform(math.log(100), math.log(8e3), g)) / k, k)
    seds = np.repeat(np.stack([sed(c) for c in rng.uniform(0.2, 1.2, g)]), k, axis=0)  # (G*K, 3)
    cv.splat(x.ravel(), y.ravel(), flux, seds)


def _galaxy(cv: Canvas, p: GalaxyParams, rng: np.random.Generator) -> None:
    """The target itself, by kind."""
    if p.kind == "star":
        return  # the star itself is drawn by render_galaxy
    if p.kind in ("smooth", "artifact"):
        draw_smooth(cv, p, rng, p.dx, p.dy, p.flux)
    elif p.kind == "disk":
        draw_disk(cv, p, rng, p.dx, p.dy, p.flux)
    elif p.kind == "irregular":
        u, v = frame(cv, p.dx, p.dy, p.pa)
        cv.add(sersic_sb(cv, u, v, 0.6 * p.flux, p.r_eff, 1.0, p.axis_ratio), p.disk_colour)
        n_clumps = int(rng.integers(5, 16))
        draw_clumps(cv, rng, p.dx, p.dy, 0.8 * p.r_eff, 0.4 * p.flux, p.disk_colour - 0.8, n_clumps)
    elif p.kind == "merger":
        if p.disk_h > 0:
            draw_disk(cv, p, rng, p.dx, p.dy, p.flux, structure=False)
        else:
            draw_smooth(cv, p, rng, p.dx, p.dy, p.flux)
        cx, cy = p.dx + p.comp_dx, p.dy + p.comp_dy
        u, v = frame(cv, cx, cy, rng.uniform(0, 180))
        cv.add(sersic_sb(cv, u, v, p.comp_flux, p.comp_r_eff, p.comp_n, rng.uniform(0.5, 1.0)),
               rng.uniform(0.3, 0.9))
        ang = math.atan2(p.comp_dy, p.comp_dx)
        bend = rng.choice([-1.0, 1.0]) * rng.uniform(0.6, 1.4)
        # One tail from each galaxy, pointing away from the other.
        for sx, sy, r0, f, a in ((p.dx, p.dy, p.r_eff, p.flux, ang + math.pi),
                                 (cx, cy, p.comp_r_eff, p.comp_flux, ang)):
            draw_tail(cv, rng, sx, sy, r0, 0.08 * p.disturbance * f, a, bend)
    if p.disturbance > 0.6 and p.kind in ("smooth", "disk"):  # weaker disturbances only warp the galaxy
        draw_tail(cv, rng, p.dx, p.dy, p.r_eff, 0.06 * p.disturbance * p.flux, rng.uniform(0, 2 * math.pi),
                  rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.2))
    if p.odd == "lens":
        draw_arc(cv, rng, p.dx, p.dy, p.r_eff * rng.uniform(1.3, 2.2), 0.06 * p.flux)


def draw_scene(cv: Canvas, p: GalaxyParams, rng: np.random.Generator) -> None:
    """Draw the galaxy, its bright star or artefact and the field sources (linear, before the PSF)."""
    _galaxy(cv, p, rng)
    if p.star_flux > 0:
        _star(cv, rng, p.star_dx, p.star_dy, p.star_flux, rng.uniform(-0.2, 1.2), p.psf_fwhm)
    if p.kind == "artifact":
        _artifact(cv, p, rng)
    _field(cv, p, rng)


def add_defects(img: np.ndarray, p: GalaxyParams, rng: np.random.Generator, scale: float) -> np.ndarray:
    """Dead columns of the observed planes, then the residual sky pedestal (returned, RGB order)."""
    if p.artifact == "column":
        _dead_column(img, rng, scale, rng.uniform(75, 300))
    elif rng.random() < 0.03:  # a faint defect in an otherwise normal image
        _dead_column(img, rng, scale, rng.uniform(3, 15))
    # Residual sky after SDSS background subtraction: slightly positive and reddish.
    return np.array([0.02, 0.018, 0.008], dtype=np.float32) * np.float32(rng.uniform(0.5, 1.5))


def render_galaxy(params: GalaxyParams, rng: np.random.Generator, size: int = 424) -> np.ndarray:
    """Render one galaxy image.

    Parameters
    ----------
    params : GalaxyParams
        The galaxy; its lengths are in 424-px units and scale with ``size``.
    rng : numpy.random.Generator
        Drives everything the labels do not depend on: field sources, arm phase,
        knot positions, noise.
    size : int
        Side of the square image in pixels.

    Returns
    -------
    numpy.ndarray
        ``uint8 (size, size, 3)`` RGB image.
    """
    p = params
    cv = Canvas(size)
    draw_scene(cv, p, rng)
    cv.blur(p.psf_fwhm)
    img = cv.observe(rng, p.sky_noise)
    pedestal = add_defects(img, p, rng, cv.scale)
    return Canvas.stretch(img, pedestal)
