"""Galaxy components drawn on a :class:`~gzmorph.mock.canvas.Canvas`.

Smooth profiles (Sersic bulges, exponential disks) are evaluated analytically on the
pixel grid and normalised by their analytic total flux, so galaxies larger than the
image keep the right surface brightness.  Structures without a closed-form flux
(bars, spiral arms, rings) are normalised numerically.  Patchy light (star-forming
knots, irregular clumps, tidal tails, lensed arcs) is drawn as clouds of point
sources that the PSF blur turns into smooth light.  All lengths are 424-px units.
"""

from __future__ import annotations

import math

import numpy as np

from gzmorph.mock.canvas import Canvas, sed
from gzmorph.mock.params import GalaxyParams

__all__ = ["frame", "warp", "sersic_sb", "draw_disk", "draw_smooth", "draw_tail", "draw_arc", "draw_clumps",
           "to_image"]

_ARM_COLOUR = -0.15
_KNOT_COLOUR = -0.45


def frame(cv: Canvas, cx: float, cy: float, pa_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """``(P, P)`` coordinates along the major (``u``) and minor (``v``) axes of a galaxy."""
    c, s = math.cos(math.radians(pa_deg)), math.sin(math.radians(pa_deg))
    x, y = cv.x - np.float32(cx), cv.y - np.float32(cy)
    return x * np.float32(c) + y * np.float32(s), y * np.float32(c) - x * np.float32(s)


def to_image(u: np.ndarray, v: np.ndarray, cx: float, cy: float, pa_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`frame` for point coordinates."""
    c, s = math.cos(math.radians(pa_deg)), math.sin(math.radians(pa_deg))
    return cx + u * c - v * s, cy + u * s + v * c


def warp(u: np.ndarray, v: np.ndarray, amount: float, r_eff: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Lopsided distortion: outer isophotes shift towards ``angle``, the core stays put."""
    if amount <= 0:
        return u, v
    r = np.hypot(u, v)
    shift = np.float32(0.45 * amount) * r * r / (r + np.float32(r_eff))
    return u - shift * np.float32(math.cos(angle)), v - shift * np.float32(math.sin(angle))


def _b_n(n: float) -> float:
    # Ciotti & Bertin (1999): b_n such that r_e encloses half the light.
    return 2 * n - 1 / 3 + 4 / (405 * n) + 46 / (25515 * n * n)


def sersic_sb(cv: Canvas, u: np.ndarray, v: np.ndarray, flux: float, r_e: float, n: float, q: float,
              boxiness: float = 2.0) -> np.ndarray:
    """``(P, P)`` surface brightness of a Sersic profile with total ``flux``.

    ``boxiness`` is the exponent ``c`` of the generalised ellipse ``|u|^c + |v/q|^c``:
    2 for elliptical isophotes, about 3 for boxy (peanut) bulges.
    """
    b = _b_n(n)
    # The isophote area of a generalised ellipse is 4 Gamma(1+1/c)^2 / Gamma(1+2/c) (pi for c=2).
    area = 4 * math.gamma(1 + 1 / boxiness) ** 2 / math.gamma(1 + 2 / boxiness)
    total_at_ie = area * q * r_e**2 * 2 * n * math.exp(b) * b ** (-2 * n) * math.gamma(2 * n)
    i_e = flux / total_at_ie
    if boxiness == 2.0:
        r = np.sqrt(u * u + (v / np.float32(q)) ** 2)
    else:
        r = (np.abs(u) ** boxiness + np.abs(v / np.float32(q)) ** boxiness) ** (1 / boxiness)
    # Clamp at half a rendered pixel: a point-sampled cusp would overshoot the flux.
    r = np.maximum(r, np.float32(0.5 / cv.scale)) / np.float32(r_e)
    return np.float32(i_e) * np.exp(np.float32(-b) * (r ** np.float32(1 / n) - 1))


def draw_smooth(cv: Canvas, p: GalaxyParams, rng: np.random.Generator, cx: float, cy: float,
                flux: float) -> None:
    """An elliptical / bulge-only galaxy, optionally ringed or lopsided."""
    u, v = frame(cv, cx, cy, p.pa)
    u, v = warp(u, v, p.disturbance, p.r_eff, rng.uniform(0, 2 * math.pi))
    cv.add(sersic_sb(cv, u, v, flux * (1 - 0.2 * p.ring), p.r_eff, p.sersic_n, p.axis_ratio), p.bulge_colour)
    if p.ring > 0:
        rr = np.hypot(u, v / np.float32(p.axis_ratio))
        shape = np.exp(-0.5 * ((rr - np.float32(p.ring_radius)) / np.float32(0.12 * p.ring_radius)) ** 2)
        cv.add_flux(shape, 0.2 * p.ring * flux, p.disk_colour)


def _spiral(p: GalaxyParams, r: np.ndarray, th: np.ndarray, phase0: float, r_in: float) -> np.ndarray:
    """Logarithmic spiral arms in the disk plane: crests where m(theta - ln R / tan p) = 2 pi k."""
    m = p.n_arms
    tan_p = math.tan(math.radians(p.pitch))
    phase = m * (th - np.log(np.maximum(r, 1e-3) / np.float32(p.disk_h)) / np.float32(tan_p)) + np.float32(phase0)
    # Sharpness so that an arm is ~0.3 rad wide whatever the arm count.
    k = max(1.2, 24.0 / m**2)
    arms = ((1 + np.cos(phase)) * 0.5) ** np.float32(k)
    env = np.exp(-r / np.float32(1.3 * p.disk_h)) * (1 - np.exp(-((r / np.float32(r_in)) ** 3)))
    return arms * env


def _knots(cv: Canvas, p: GalaxyParams, rng: np.random.Generator, cx: float, cy: float, phase0: float,
           r_in: float, flux: float) -> None:
    """Star-forming knots strung along the arm crests."""
    n = int(rng.integers(15, 45))
    r = r_in + rng.gamma(2.0, 0.9 * p.disk_h, n)
    arm = rng.integers(0, p.n_arms, n)
    th = (2 * math.pi * arm - phase0) / p.n_arms + np.log(r / p.disk_h) / math.tan(math.radians(p.pitch))
    th += rng.normal(0, 0.08, n)
    u, v = r * np.cos(th), r * np.sin(th) * p.axis_ratio
    x, y = to_image(u, v, cx, cy, p.pa)
    cv.splat(x, y, flux * rng.dirichlet(np.ones(n)), _KNOT_COLOUR)


def _dust(p: GalaxyParams, u: np.ndarray, v: np.ndarray, side: float) -> np.ndarray:
    """``(P, P)`` dust-lane optical depth profile of an inclined disk (peak 1)."""
    q_h = p.axis_ratio * p.disk_h
    width = np.float32(0.35 * q_h + 1.2)
    offset = np.float32(side * 0.35 * q_h * max(0.0, (90 - p.inclination) / 20))
    return np.exp(-0.5 * ((v - offset) / width) ** 2 - (u / np.float32(2.5 * p.disk_h)) ** 2)


def draw_disk(cv: Canvas, p: GalaxyParams, rng: np.random.Generator, cx: float, cy: float, flux: float,
              structure: bool = True) -> None:
    """Bulge + exponential disk, with bar, spiral arms, ring and dust lane when ``structure``."""
    u, v = frame(cv, cx, cy, p.pa)
    u, v = warp(u, v, p.disturbance, p.r_eff, rng.uniform(0, 2 * math.pi))
    q = p.axis_ratio
    f_bulge, f_disk = flux * p.bulge_frac, flux * (1 - p.bulge_frac)
    f_arms = f_disk * 0.5 * p.arm_strength * p.face_on if structure and p.n_arms else 0.0
    f_bar = f_disk * 0.3 * p.bar * p.face_on if structure else 0.0
    f_ring = f_disk * 0.3 * p.ring if structure else 0.0
    f_smooth = f_disk - f_arms - f_bar - f_ring
    box = 3.0 if p.bulge_shape == "boxy" else 2.0
    bulge = sersic_sb(cv, u, v, f_bulge, max(p.bulge_r, 1.0), p.sersic_n, p.bulge_q, box) if f_bulge > 0 else 0.0
    disk = sersic_sb(cv, u, v, f_smooth, 1.678 * p.disk_h, 1.0, q)
    s_b, s_d = sed(p.bulge_colour), sed(p.disk_colour)
    if structure and p.dust > 0:
        lane = _dust(p, u, v, float(rng.choice([-1.0, 1.0])))
        # Dust reddens: it removes more g than i light.
        for b, k in enumerate((1.0, 0.8, 0.6)):
            cv.bands[b] += (bulge * s_b[b] + disk * s_d[b]) * (1 - np.float32(0.9 * p.dust * k) * lane)
    else:
        cv.add(disk, s_d)
        if f_bulge > 0:
            cv.add(bulge, s_b)
    if not structure:
        return
    up, vp = u, v / np.float32(q)  # deprojected onto the disk plane
    r = np.hypot(up, vp)
    if f_bar > 0:
        ca, sa = math.cos(math.radians(p.bar_angle)), math.sin(math.radians(p.bar_angle))
        ub, vb = up * np.float32(ca) + vp * np.float32(sa), vp * np.float32(ca) - up * np.float32(sa)
        m2 = (ub / np.float32(p.bar_length)) ** 2 + (vb / np.float32(0.28 * p.bar_length)) ** 2
        cv.add_flux(np.maximum(1 - m2, 0) ** 2, f_bar, 0.5 * (p.bulge_colour + p.disk_colour))
    if f_ring > 0:
        ring = np.exp(-0.5 * ((r - np.float32(p.ring_radius)) / np.float32(0.1 * p.ring_radius)) ** 2)
        cv.add_flux(ring, f_ring, p.disk_colour - 0.2)
    if f_arms > 0:
        phase0 = rng.uniform(0, 2 * math.pi)
        r_in = max(p.bar_length, 1.5 * p.bulge_r, 0.4 * p.disk_h)
        cv.add_flux(_spiral(p, r, np.arctan2(vp, up), phase0, r_in), 0.95 * f_arms, _ARM_COLOUR)
        _knots(cv, p, rng, cx, cy, phase0, r_in, 0.05 * f_arms)


def draw_tail(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, r0: float, flux: float,
              angle: float, bend: float, colour: float = 0.2, n: int = 10000) -> None:
    """A curved tidal tail of length ~3 ``r0`` starting at radius ``r0`` towards ``angle``."""
    t = rng.random(n) ** 0.7  # denser near the galaxy
    rad = r0 * (0.7 + 3.0 * t)
    th = angle + bend * t
    width = 0.12 * rad + 1.0
    x = cx + rad * np.cos(th) + rng.normal(0, 1, n) * width
    y = cy + rad * np.sin(th) + rng.normal(0, 1, n) * width
    cv.splat(x, y, flux / n, colour)


def draw_arc(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, radius: float, flux: float,
             n: int = 2500) -> None:
    """A thin tangential arc, as a strongly lensed background galaxy (plus a counter-image)."""
    th0 = rng.uniform(0, 2 * math.pi)
    span = math.radians(rng.uniform(40, 110))
    th = th0 + span * (rng.random(n) - 0.5)
    # The arc is brightest in the middle and fades to its ends.
    w = np.cos((th - th0) / span * math.pi) ** 2
    rad = radius + rng.normal(0, 0.8, n)
    cv.splat(cx + rad * np.cos(th), cy + rad * np.sin(th), 0.85 * flux * w / w.sum(), -0.4)
    cv.splat(np.array([cx - 0.6 * radius * math.cos(th0)]), np.array([cy - 0.6 * radius * math.sin(th0)]),
             0.15 * flux, -0.4)


def draw_clumps(cv: Canvas, rng: np.random.Generator, cx: float, cy: float, spread: float, flux: float,
                colour: float, n_clumps: int, per_clump: int = 500) -> None:
    """Bright star-forming clumps scattered irregularly over a region of size ``spread``."""
    centres = rng.normal(0, spread, (n_clumps, 2))
    sizes = rng.uniform(1.5, 4.0, n_clumps) * max(1.0, spread / 8)
    share = rng.dirichlet(np.full(n_clumps, 1.5))
    pts = rng.normal(0, 1, (n_clumps, per_clump, 2)) * sizes[:, None, None] + centres[:, None, :]
    fl = np.repeat(flux * share / per_clump, per_clump)
    cv.splat(cx + pts[..., 0].ravel(), cy + pts[..., 1].ravel(), fl, colour)  # (C, K) -> (C*K,)
