"""The true parameters of one mock galaxy and how they are drawn.

Lengths are in pixels of a 424-pixel image (the Kaggle size) whatever size is rendered,
angles in degrees, fluxes in units of the sky noise of one 424-pixel pixel.  The
distributions follow the Galaxy Zoo 2 / Kaggle images loosely: about a third smooth
galaxies, 55% disks (a quarter of them close to edge-on), a few percent irregulars,
mergers, stars and artefacts; half-light radii log-normal around 22 px so that most
galaxies fit well inside the central 207-px crop and some overflow it; a PSF of ~10 px
FWHM (5-18 px), as measured on the field stars of the Kaggle images, whose pixel scale
follows each galaxy's Petrosian radius, so small galaxies are poorly resolved.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gzmorph.config import Config

__all__ = ["GalaxyParams", "sample_params", "KINDS", "ODD_FEATURES", "BULGE_SHAPES", "WINDINGS", "ARTIFACTS"]

KINDS = ("smooth", "disk", "irregular", "merger", "star", "artifact")
_KIND_P = (0.33, 0.56, 0.04, 0.04, 0.015, 0.015)
#: Odd features in the order of the GZ2 question 8 answers, plus "none".
ODD_FEATURES = ("none", "ring", "lens", "disturbed", "irregular", "other", "merger", "dust_lane")
BULGE_SHAPES = ("rounded", "boxy", "none")
WINDINGS = ("none", "tight", "medium", "loose")
ARTIFACTS = ("none", "trail", "column", "ghost")
# Pitch-angle range (degrees) of each winding class; gaps between classes keep the
# class readable from the image, the labels still blur the boundaries.
_PITCH = {"tight": (7.0, 13.0), "medium": (16.0, 23.0), "loose": (27.0, 40.0)}
# Probability of 1, 2, 3, 4, 5, 6 arms: two-armed spirals dominate, as in GZ2.
_ARMS_P = (0.12, 0.38, 0.18, 0.14, 0.10, 0.08)


@dataclass(frozen=True)
class GalaxyParams(Config):
    """True parameters of one mock galaxy; every visible property the labels use.

    ``kind`` picks the renderer (``KINDS``); ``odd`` the odd feature of question 8
    (``ODD_FEATURES``).  Unused fields of a kind are zero (``"none"`` for strings).
    Companion (``comp_*``) fields describe the second galaxy of a merger, ``star_*``
    the bright star of a star image or of the ``"other"`` odd feature.
    """

    kind: str = "smooth"
    odd: str = "none"
    dx: float = 0.0
    dy: float = 0.0
    r_eff: float = 16.0
    flux: float = 3e4
    pa: float = 0.0
    axis_ratio: float = 1.0
    sersic_n: float = 4.0
    bulge_frac: float = 1.0
    bulge_shape: str = "rounded"
    bulge_r: float = 16.0
    bulge_q: float = 1.0
    inclination: float = 0.0
    disk_h: float = 0.0
    bar: float = 0.0
    bar_length: float = 0.0
    bar_angle: float = 0.0
    n_arms: int = 0
    winding: str = "none"
    pitch: float = 0.0
    arm_strength: float = 0.0
    ring: float = 0.0
    ring_radius: float = 0.0
    dust: float = 0.0
    disturbance: float = 0.0
    comp_dx: float = 0.0
    comp_dy: float = 0.0
    comp_r_eff: float = 0.0
    comp_flux: float = 0.0
    comp_n: float = 1.0
    star_dx: float = 0.0
    star_dy: float = 0.0
    star_flux: float = 0.0
    artifact: str = "none"
    bulge_colour: float = 0.75
    disk_colour: float = 0.35
    psf_fwhm: float = 4.0
    sky_noise: float = 1.0

    def __post_init__(self) -> None:
        for name, allowed in (("kind", KINDS), ("odd", ODD_FEATURES), ("bulge_shape", BULGE_SHAPES),
                              ("winding", WINDINGS), ("artifact", ARTIFACTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"GalaxyParams.{name}={getattr(self, name)!r}: expected one of {allowed}")
        for name in ("r_eff", "psf_fwhm", "sky_noise"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GalaxyParams.{name} must be positive, got {getattr(self, name)}")
        for name in ("axis_ratio", "bulge_frac", "bulge_q", "bar", "arm_strength", "ring", "dust", "disturbance"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"GalaxyParams.{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.inclination <= 90.0:
            raise ValueError(f"GalaxyParams.inclination must be in [0, 90] degrees, got {self.inclination}")
        if self.n_arms < 0 or (self.n_arms > 0) != (self.winding != "none"):
            raise ValueError(f"GalaxyParams: n_arms={self.n_arms} and winding={self.winding!r} disagree")
        if self.flux < 0 or self.comp_flux < 0 or self.star_flux < 0:
            raise ValueError("GalaxyParams: fluxes must be non-negative")

    @property
    def surface_brightness(self) -> float:
        """Mean surface brightness inside ``r_eff`` in sky-noise units per pixel."""
        return self.flux / (2.0 * math.pi * self.r_eff**2)

    @property
    def face_on(self) -> float:
        """How much of the disk-plane structure (arms, bar) shows: 1 up to i=63 deg, 0 beyond 81 deg.

        Both the renderer and the label model use it, so a structure the volunteers
        cannot see is also absent from the image.
        """
        if self.disk_h <= 0:
            return 0.0
        return float(np.clip((math.cos(math.radians(self.inclination)) - 0.15) / 0.3, 0.0, 1.0))


def _common(rng: np.random.Generator, r_med: float = 22.0) -> dict[str, Any]:
    """Position, size, brightness, observing conditions and colours."""
    # Mostly within a pixel or two of the centre; one in ten off by up to ~8 px.
    off = rng.normal(0.0, 1.0, 2) * (4.0 if rng.random() < 0.1 else 1.2)
    r_eff = float(np.clip(r_med * math.exp(rng.normal(0.0, 0.45)), 3.0, 90.0))
    sb = float(math.exp(rng.normal(math.log(50.0), 0.5)))  # mean SB inside r_eff / sky noise
    return dict(
        dx=float(off[0]), dy=float(off[1]), r_eff=r_eff, flux=sb * 2.0 * math.pi * r_eff**2,
        pa=float(rng.uniform(0.0, 180.0)), psf_fwhm=float(np.clip(10.0 * math.exp(rng.normal(0.0, 0.3)), 4.0, 18.0)),
        sky_noise=float(rng.uniform(0.8, 1.6)), bulge_colour=float(rng.uniform(0.6, 0.9)),
        disk_colour=float(rng.uniform(0.15, 0.45)),
    )


def _smooth(rng: np.random.Generator) -> dict[str, Any]:
    d = _common(rng)
    q = float(np.clip(rng.beta(4.0, 1.6), 0.25, 1.0))
    odd = str(rng.choice(["none", "lens", "ring", "disturbed", "other"], p=[0.78, 0.07, 0.04, 0.05, 0.06]))
    d.update(kind="smooth", odd=odd, axis_ratio=q, sersic_n=float(rng.uniform(2.0, 5.0)), bulge_frac=1.0,
             bulge_shape="rounded", bulge_r=d["r_eff"], bulge_q=q)
    if odd == "ring":
        d.update(ring=float(rng.uniform(0.5, 1.0)), ring_radius=float(d["r_eff"] * rng.uniform(1.5, 2.5)))
    return d


def _disk(rng: np.random.Generator) -> dict[str, Any]:
    d = _common(rng, r_med=24.0)
    cos_i = rng.uniform(0.03, 1.0)
    incl = math.degrees(math.acos(cos_i))
    q0 = rng.uniform(0.08, 0.16)  # intrinsic thickness of the disk
    q = math.sqrt(cos_i**2 + (q0 * math.sin(math.acos(cos_i))) ** 2)
    shape = str(rng.choice(BULGE_SHAPES, p=[0.6, 0.2, 0.2]))
    bt = float(rng.uniform(0.0, 0.04)) if shape == "none" else float(rng.beta(1.5, 3.0) * 0.85 + 0.03)
    spiral = rng.random() < 0.7
    n_arms = int(rng.choice(np.arange(1, 7), p=_ARMS_P)) if spiral else 0
    winding = str(rng.choice(["tight", "medium", "loose"])) if spiral else "none"
    pitch = float(rng.uniform(*_PITCH[winding])) if spiral else 0.0
    bar = float(rng.uniform(0.4, 1.0)) if rng.random() < 0.35 else 0.0
    disk_h = d["r_eff"] / 1.68
    odd = str(rng.choice(["none", "ring", "disturbed", "other", "lens"], p=[0.72, 0.14, 0.07, 0.05, 0.02]))
    dust = float(rng.uniform(0.2, 1.0)) if incl > 70 else 0.0
    if odd == "none" and incl > 78 and dust > 0.5:
        odd = "dust_lane"
    d.update(
        kind="disk", odd=odd, axis_ratio=float(q), sersic_n=float(rng.uniform(1.5, 4.5)), bulge_frac=bt,
        bulge_shape=shape, bulge_r=float(d["r_eff"] * rng.uniform(0.15, 0.4)),
        bulge_q=float(rng.uniform(0.55, 0.75) if shape == "boxy" else rng.uniform(0.75, 1.0)),
        inclination=float(incl), disk_h=float(disk_h), bar=bar,
        bar_length=float(disk_h * rng.uniform(0.8, 1.6)) if bar else 0.0,
        bar_angle=float(rng.uniform(0.0, 180.0)) if bar else 0.0, n_arms=n_arms, winding=winding, pitch=pitch,
        arm_strength=float(rng.uniform(0.3, 1.0)) if spiral else 0.0, dust=dust,
    )
    if odd == "ring":
        d.update(ring=float(rng.uniform(0.5, 1.0)), ring_radius=float(disk_h * rng.uniform(1.5, 2.6)))
    return d


def _irregular(rng: np.random.Generator) -> dict[str, Any]:
    d = _common(rng, r_med=20.0)
    d.update(kind="irregular", odd="irregular", axis_ratio=float(rng.uniform(0.4, 1.0)), sersic_n=1.0,
             bulge_frac=0.0, bulge_shape="none", bulge_r=0.0, disk_h=float(d["r_eff"] / 1.68),
             disturbance=float(rng.uniform(0.5, 1.0)), disk_colour=float(rng.uniform(0.05, 0.25)))
    d["flux"] *= 0.4  # irregulars are low surface brightness
    return d


def _merger(rng: np.random.Generator) -> dict[str, Any]:
    d = _smooth(rng) if rng.random() < 0.5 else _disk(rng)
    sep = (d["r_eff"] * rng.uniform(0.8, 2.0))
    ang = rng.uniform(0.0, 2.0 * math.pi)
    d.update(kind="merger", odd="merger", n_arms=0, winding="none", pitch=0.0, arm_strength=0.0, bar=0.0,
             bar_length=0.0, ring=0.0, ring_radius=0.0, disturbance=float(rng.uniform(0.4, 1.0)),
             comp_dx=float(sep * math.cos(ang)), comp_dy=float(sep * math.sin(ang)),
             comp_r_eff=float(d["r_eff"] * rng.uniform(0.4, 1.0)),
             comp_flux=float(d["flux"] * rng.uniform(0.25, 1.0)), comp_n=float(rng.uniform(1.0, 4.0)))
    return d


def _star(rng: np.random.Generator) -> dict[str, Any]:
    d = _common(rng, r_med=6.0)  # a small faint background galaxy may share the field
    d.update(kind="star", odd="none", sersic_n=2.0, bulge_frac=1.0, bulge_r=d["r_eff"], flux=d["flux"] * 0.1,
             star_flux=float(math.exp(rng.uniform(math.log(2e5), math.log(3e6)))),
             star_dx=float(d["dx"]), star_dy=float(d["dy"]))
    return d


def _artifact(rng: np.random.Generator) -> dict[str, Any]:
    d = _common(rng, r_med=6.0)
    d.update(kind="artifact", odd="none", sersic_n=2.0, bulge_frac=1.0, bulge_r=d["r_eff"], flux=d["flux"] * 0.1,
             artifact=str(rng.choice(["trail", "column", "ghost"])))
    return d


_SAMPLERS = {"smooth": _smooth, "disk": _disk, "irregular": _irregular, "merger": _merger,
             "star": _star, "artifact": _artifact}


def sample_params(rng: np.random.Generator, kind: str | None = None) -> GalaxyParams:
    """Draw the true parameters of one galaxy.

    Parameters
    ----------
    rng : numpy.random.Generator
    kind : str, optional
        Force one of ``KINDS``; by default drawn with the mock's mixture.

    Returns
    -------
    GalaxyParams
    """
    if kind is None:
        kind = str(rng.choice(KINDS, p=_KIND_P))
    if kind not in _SAMPLERS:
        raise ValueError(f"unknown galaxy kind {kind!r}: expected one of {KINDS}")
    d = _SAMPLERS[kind](rng)
    if d["odd"] == "disturbed":
        d["disturbance"] = float(rng.uniform(0.4, 1.0))
    if d["odd"] == "other":
        # A bright foreground star sitting on the galaxy: GZ2's typical "other".
        ang = rng.uniform(0.0, 2.0 * math.pi)
        rad = d["r_eff"] * rng.uniform(0.5, 1.5)
        d.update(star_dx=float(d["dx"] + rad * math.cos(ang)), star_dy=float(d["dy"] + rad * math.sin(ang)),
                 star_flux=float(d["flux"] * rng.uniform(0.3, 1.0)))
    return GalaxyParams(**d)
