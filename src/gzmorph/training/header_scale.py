"""Training on FITS cutouts at the pixel scales their headers give (``train --pixel-scale header``).

A run learns galaxies at one angular scale, its *field* (side x arcsec/px,
:mod:`gzmorph.data.pixscale`), which it records so that prediction can show other images
at it.  With ``pixel_scale="header"`` nothing is assumed: every cutout's field (the native
side of its square centre x the scale in its header, ``PIXSCALE`` or the celestial WCS)
is read first from the headers alone (:func:`gzmorph.data.fits.read_extent`, no pixels);
the run's field is their **median** (fine-tuning, ``init_from``: the starting run's
field, the angular size its network learned galaxies at); every image is then decoded
with the geometry that shows it at that field, the very one prediction uses
(:func:`gzmorph.data.pixscale.pixel_geometry`): an image wider than the field is cut to
it before decoding's one resize, a narrower one is enlarged by the training warp, one
whose zoom is outside the warp's range is a recorded skip, as it is an error row in
prediction.  The field must be known before decoding (it decides the cut), so it is the
median over the images whose headers give a usable scale.

The run then records that field as a number (``pixel_scale`` = field / median side, at
``pixel_scale_side`` = the median side), never "header": prediction, model packages and
resume read it as any other run's.  Its data section (config.json) keeps the summary of
:meth:`HeaderScale.summary`; a resumed run finds it there and shows its images at the
field it started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gzmorph.data.composite import Stretch
from gzmorph.data.fits import is_fits, read_extent
from gzmorph.data.pixscale import check_pixel_scale
from gzmorph.data.source import Source
from gzmorph.errors import CatalogError

__all__ = ["HeaderScale", "read_header_scale", "describe", "RECORD_KEY"]

#: Key of the summary in the data section of a run's config.json.
RECORD_KEY = "header_pixel_scale"
# Fields within this relative difference of the run's count as shown at their own scale.
_SAME_FIELD = 1e-3


@dataclass
class HeaderScale:
    """The fields of a training set's cutouts and the one field the run trains at.

    Attributes
    ----------
    field : float
        The run's field in arcsec (the median of ``fields``, or a resumed run's).
    side : int
        Median native side (px) of the cutouts with a usable scale: the run's ``pixel_scale_side``.
    fields : ndarray, shape (N,)
        Each catalog row's field in arcsec; NaN where the header gives no usable scale
        (decoding then skips the row, naming the file and the reason).
    """

    field: float
    side: int
    fields: np.ndarray

    @property
    def pixel_scale(self) -> float:
        """The arcsec/px the run records at ``side`` (their product is ``field``)."""
        return self.field / self.side

    def summary(self, decoded: np.ndarray) -> dict[str, Any]:
        """What config.json records: the run's field, and the range of the decoded images' fields.

        ``decoded`` holds the catalog rows that were decoded.  ``n_rescaled`` counts those
        whose field differs from the run's (each shown at the run's by its own zoom).
        """
        fields = self.fields[decoded]
        fields = fields[np.isfinite(fields)]
        n_rescaled = int((np.abs(fields / self.field - 1) > _SAME_FIELD).sum())
        spread = ({"field_min": float(fields.min()), "field_median": float(np.median(fields)),
                   "field_max": float(fields.max())} if len(fields) else {})
        return {"field": self.field, "pixel_scale": self.pixel_scale, "side": self.side,
                "n_images": int(len(fields)), "n_rescaled": n_rescaled, **spread}


def describe(summary: dict[str, Any]) -> str:
    """The one line training prints about the header scales."""
    spread = (f"fields {summary['field_min']:.4g}-{summary['field_max']:.4g}\" (median {summary['field_median']:.4g}\")"
              if "field_min" in summary else "no field")
    return (f"pixel scale from the FITS headers: {summary['n_images']} images, {spread}; all shown at the run's "
            f"field {summary['field']:.4g}\" ({summary['pixel_scale']:.4g}\"/px at {summary['side']} px), "
            f"{summary['n_rescaled']} rescaled to it")


def _check_sources(source: Source, stretch: Stretch | None) -> None:
    """Refuse, before any decoding, what has no header scale to read."""
    if source.cache is not None:
        raise CatalogError(f"{source.name}: a cache holds resized pixels without their native side or headers: "
                           "train on the FITS files to use --pixel-scale header")
    for row, path in enumerate(source.catalog.paths):
        if path is not None and not (is_fits(path) or "{band}" in str(path)):
            raise CatalogError(f"{source.name}: row {row} ({path}) is not a FITS cutout: --pixel-scale header reads "
                               "FITS headers; give JPEG/PNG images' pixel scale as a number or a survey name")
    if stretch is None:
        raise CatalogError(f"{source.name}: FITS cutouts need their bands and colour stretch (--stretch, --bands)")


def _row_field(path: Any, bands: tuple[str, ...]) -> tuple[float, float]:
    """``(side, field)`` of one cutout from its header; NaN where it gives neither (decoding says why)."""
    if path is None:
        return math.nan, math.nan
    try:
        side, scale = read_extent(path, bands)
        scale = check_pixel_scale(scale) if scale is not None else None
    except Exception:  # noqa: BLE001 - FitsError, a bad scale or a broken header: a skip row (decoding names it)
        return math.nan, math.nan
    return (float(side), side * scale) if scale is not None else (math.nan, math.nan)


def read_header_scale(source: Source, stretch: Stretch | None, field: float | None = None,
                      progress: bool = True) -> HeaderScale:
    """Read every cutout's field from its header, and choose the run's.

    Parameters
    ----------
    source : Source
        The training catalog; every image must be a FITS cutout.
    stretch : Stretch or None
        The composite's bands (which file holds the header of a ``{band}`` path).
    field : float, optional
        The field to train at (a resumed run's); default the median of the cutouts'.
    progress : bool
        Show a progress bar.

    Raises
    ------
    CatalogError
        A cache, an image that is not FITS, no stretch, or no cutout with a usable scale.
    """
    from tqdm.auto import tqdm

    _check_sources(source, stretch)
    paths = source.catalog.paths
    read = [_row_field(p, stretch.bands) for p in tqdm(paths, disable=not progress, unit="img", desc="headers")]
    sides, fields = (np.array(col, dtype=np.float64) for col in zip(*read)) if read else (np.zeros(0),) * 2
    usable = np.isfinite(fields)
    if not usable.any():
        raise CatalogError(f"{source.name}: none of the {len(paths)} FITS cutouts has a usable pixel scale in its "
                           "header (PIXSCALE or a celestial WCS): give --pixel-scale as a number or a survey name")
    side = int(round(float(np.median(sides[usable]))))
    return HeaderScale(float(np.median(fields[usable])) if field is None else float(field), side, fields)
