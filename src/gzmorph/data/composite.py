"""Colour composites of multi-band survey cutouts: the Lupton et al. (2004) asinh stretch.

The Galaxy Zoo 2 images are SDSS gri composites made with the asinh stretch of Lupton
et al. (2004): the three bands are scaled, their mean intensity ``I`` is mapped through
``asinh(Q * I / stretch) / Q`` and every band is multiplied by the same factor, so
colours are kept where the bright cores saturate.  :func:`make_composite` does the same
with :func:`astropy.visualization.make_lupton_rgb`, so a FITS cutout becomes a uint8
``(H, W, 3)`` image that feeds the same pipeline as a JPEG (cache, augmentation,
test-time transforms).

A :class:`Stretch` is data: which bands (blue, green, red: shortest wavelength first),
a flux scale per band, ``q`` and ``soft`` (astropy's ``Q`` and ``stretch``, in the
data's units).  :data:`STRETCH_PRESETS` holds one per survey; they are starting points
chosen on the mock cutouts of :mod:`gzmorph.mock.fits` at each survey's usual units
(SDSS and the Legacy Surveys in nanomaggies; HSC coadds in counts of zero point 27,
i.e. 63.1 counts per nanomaggy), not fitted to the GZ2 images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gzmorph.config import Config
from gzmorph.errors import ConfigError, MissingExtraError

__all__ = ["Stretch", "STRETCH_PRESETS", "SurveyOptions", "resolve_stretch", "make_composite",
           "require_survey_extra"]

SURVEY_EXTRA = "pip install 'gzmorph[survey]'"


def require_survey_extra() -> None:
    """Raise :class:`MissingExtraError` unless astropy and sep are installed."""
    try:
        import astropy  # noqa: F401
        import sep  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"FITS cutouts and recentring need astropy and sep ({exc.name} is missing): "
                                f"{SURVEY_EXTRA}") from None


@dataclass(frozen=True)
class Stretch(Config):
    """How the bands of a cutout become an RGB composite (picklable: sent to decoding workers).

    Parameters
    ----------
    bands : tuple of str
        Three band names, shortest wavelength first: they become blue, green and red.
    scales : tuple of float
        Flux multiplier of each band (in ``bands`` order) before the stretch.
    q : float
        Softening ``Q`` of the asinh stretch (larger: more compressed bright parts).
    soft : float
        The linear range ``stretch`` of the asinh, in the data's units after scaling.
    minimum : float
        Intensity mapped to black (the sky is subtracted first, so 0).
    """

    bands: tuple[str, ...] = ("g", "r", "i")
    scales: tuple[float, ...] = (1.0, 1.0, 1.0)
    q: float = 8.0
    soft: float = 0.5
    minimum: float = 0.0

    def __post_init__(self) -> None:
        bands = tuple(str(b).strip() for b in self.bands)
        object.__setattr__(self, "bands", bands)
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))
        if len(bands) != 3 or len(set(bands)) != 3 or not all(bands):
            raise ValueError(f"bands must be three different band names (blue, green, red), got {self.bands}")
        if len(self.scales) != 3 or not all(math.isfinite(s) and s > 0 for s in self.scales):
            raise ValueError(f"scales must be three positive numbers, got {self.scales}")
        if not (math.isfinite(self.q) and self.q > 0 and math.isfinite(self.soft) and self.soft > 0):
            raise ValueError(f"q and soft must be positive, got q={self.q}, soft={self.soft}")
        if not math.isfinite(self.minimum):
            raise ValueError(f"minimum must be finite, got {self.minimum}")


#: Per-survey composites: the bands, their balance and the stretch in the survey's units.
STRETCH_PRESETS: dict[str, Stretch] = {
    # SDSS frames in nanomaggies, as the GZ2 gri composites.
    "sdss-gri": Stretch(bands=("g", "r", "i"), scales=(1.6, 1.0, 0.8), q=8.0, soft=0.4),
    # DESI Legacy Surveys cutouts (nanomaggies), deeper than SDSS: a softer linear range.
    "legacy-grz": Stretch(bands=("g", "r", "z"), scales=(1.6, 1.0, 0.6), q=8.0, soft=0.25),
    # HSC coadds (zero point 27: 63.1 counts per nanomaggy).
    "hsc-gri": Stretch(bands=("g", "r", "i"), scales=(1.6, 1.0, 0.8), q=8.0, soft=0.25 * 63.1),
}


def resolve_stretch(name: str | None = None, bands: str | tuple[str, ...] | None = None,
                    scales: str | tuple[float, ...] | None = None, q: float | None = None,
                    soft: float | None = None) -> Stretch:
    """A :class:`Stretch` from a preset name and command-line overrides.

    Parameters
    ----------
    name : str or None
        A key of :data:`STRETCH_PRESETS`; ``None`` starts from ``sdss-gri``.
    bands : "g,r,z" or tuple, optional
        Band names, blue to red (replaces the preset's).
    scales : "1.6,1,0.6" or tuple, optional
    q, soft : float, optional

    Raises
    ------
    ConfigError
        Unknown preset or invalid values.
    """
    if name is not None and name not in STRETCH_PRESETS:
        raise ConfigError(f"unknown stretch {name!r}; choose one of {', '.join(sorted(STRETCH_PRESETS))} "
                          "(and adjust it with --band-scales, --stretch-q, --stretch-soft)")
    base = STRETCH_PRESETS[name or "sdss-gri"]
    changes: dict[str, Any] = {}
    if bands is not None:
        changes["bands"] = tuple(b for b in bands.split(",")) if isinstance(bands, str) else tuple(bands)
    if scales is not None:
        try:
            changes["scales"] = tuple(float(s) for s in scales.split(",")) if isinstance(scales, str) else scales
        except ValueError:
            raise ConfigError(f"--band-scales must be three numbers like 1.6,1,0.6, got {scales!r}") from None
    if q is not None:
        changes["q"] = q
    if soft is not None:
        changes["soft"] = soft
    try:
        return replace(base, **changes)
    except ValueError as exc:
        raise ConfigError(f"stretch: {exc}") from None


def make_composite(planes: np.ndarray, stretch: Stretch) -> np.ndarray:
    """Lupton asinh composite of sky-subtracted bands.

    Parameters
    ----------
    planes : ndarray, shape (3, H, W), float32
        The bands in ``stretch.bands`` order (blue, green, red), sky-subtracted, finite.
    stretch : Stretch

    Returns
    -------
    ndarray, shape (H, W, 3), uint8
        RGB: red from the last band, blue from the first.
    """
    from astropy.visualization import make_lupton_rgb

    scaled = [np.asarray(planes[k], dtype=np.float64) * stretch.scales[k] for k in range(3)]
    # make_lupton_rgb takes red, green, blue.
    rgb = make_lupton_rgb(scaled[2], scaled[1], scaled[0], minimum=stretch.minimum, stretch=stretch.soft,
                          Q=stretch.q)
    return np.ascontiguousarray(rgb, dtype=np.uint8)


@dataclass(frozen=True)
class SurveyOptions(Config):
    """The command-line view of a :class:`Stretch`: a preset and what to change in it.

    Parameters
    ----------
    stretch : {"sdss-gri", "legacy-grz", "hsc-gri"}
        Colour composite preset of FITS cutouts (bands, their balance, the asinh stretch).
    bands : str
        Band names blue to red, e.g. "g,r,z" (default: the preset's).
    band_scales : str
        Flux multiplier per band, e.g. "1.6,1,0.6" (default: the preset's).
    stretch_q : float
        Softening Q of the asinh stretch (default: the preset's).
    stretch_soft : float
        Linear range of the asinh stretch in the data's units (default: the preset's).
    """

    stretch: str | None = None
    bands: str | None = None
    band_scales: str | None = None
    stretch_q: float | None = None
    stretch_soft: float | None = None

    def resolve(self) -> Stretch | None:
        """The :class:`Stretch` asked for, or None when no option was given."""
        if all(getattr(self, f) is None for f in ("stretch", "bands", "band_scales", "stretch_q", "stretch_soft")):
            return None
        return resolve_stretch(self.stretch, self.bands, self.band_scales, self.stretch_q, self.stretch_soft)
