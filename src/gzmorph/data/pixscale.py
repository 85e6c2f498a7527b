"""Pixel scale as geometry: the angular size of an image, and the zoom that shows it as a model was trained.

A network learns galaxies at the angular size its training images showed them.  What
matters for the crop is the **field** of an image, its side in arcsec: ``side (px) x
pixel scale (arcsec/px)``.  Decoding resizes every image to the working size, but the
field stays the same, so a run trained on the 424-px Kaggle JPEGs at 0.09"/px and one
trained on their 141-px copies at 0.27"/px have the same field (38.2"), and need the
same geometry.  An image whose field is ``F`` shown to a model trained at field ``F_m``
is zoomed by ``F / F_m`` (``> 1`` enlarges: a smaller part of the image fills the crop),
which :func:`gzmorph.nn.augment.place` folds into the one affine warp as the
``zoom`` of a geometry ``[dx, dy, zoom, found]`` (:mod:`gzmorph.data.recentre`).  An
image wider than the model's field is first cut to that field (:func:`kept_fraction`:
an exact crop, before decoding's one resize), so the working pixels cover only what the
network sees and no resolution is lost to magnifying a shrunken whole; its zoom is then 1.

Where a scale comes from:

* a number (arcsec per pixel of the image files at their native size), for JPEG/PNG;
* a survey name (:data:`SURVEY_PIXEL_SCALES`: ``sdss``, ``legacy``/``decals``, ``hsc``,
  ``euclid``, ``lsst``);
* ``"header"``: each FITS file's own header, ``PIXSCALE`` or else its celestial WCS
  (:func:`wcs_pixel_scale`); a FITS without either is an error row naming the file;
* ``"column:NAME"``: each row's own value in column ``NAME`` of the input catalogue
  (:func:`scale_column`; e.g. the ``cutout_pixscale`` that ``gzmorph cutouts`` writes),
  for catalogues that merge images from several services; a row whose value is empty
  or not a usable scale (:func:`row_pixel_scale`) is an error row naming the value.

What the GZ2 images are: Galaxy Zoo 2 (and so Kaggle's) 424-px JPEGs were cut from SDSS
imaging (0.396"/px) at ``0.02 x petroR90_r`` arcsec per pixel **per galaxy** (Willett et
al. 2013): every galaxy fills the frame alike, whatever its angular size, and no single
pixel scale is true of them.  Most were *enlarged* from SDSS's pixels, which correlates
their sky noise: ``benchmarks/gz2_pixel_scale.py`` measures that correlation on 1,000
of the shared Kaggle images and finds SDSS pixels enlarged 4.4 times at the median
(4.9 assuming bicubic rather than bilinear resampling), i.e. 0.09"/px (0.08) at 424 px,
10-90% range 0.05-0.15 (BENCHMARKS.md).  :data:`GZ2_PIXEL_SCALE` = 0.09 at
:data:`GZ2_SIDE` = 424 (a 38" field) is therefore the scale a run records unless told
otherwise: the median GZ2 galaxy's, not any one galaxy's.  For a fixed-scale survey it
shows galaxies as a typical GZ2 galaxy was shown, and keeps the relative sizes of that
survey's galaxies; ``--recentre`` (which measures each galaxy) is the per-galaxy match
of the GZ2 convention.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SURVEY_PIXEL_SCALES", "GZ2_PIXEL_SCALE", "GZ2_SIDE", "GZ2_FIELD", "MIN_PIXEL_SCALE",
           "MAX_PIXEL_SCALE", "HEADER", "COLUMN", "check_pixel_scale", "parse_pixel_scale", "scale_column",
           "row_pixel_scale", "wcs_pixel_scale",
           "header_pixel_scale", "scale_zoom", "scaled_geometry", "pixel_geometry", "kept_fraction"]

#: Native pixel scales (arcsec/px) of the surveys users bring.
SURVEY_PIXEL_SCALES: dict[str, float] = {
    "sdss": 0.396,
    "legacy": 0.262,
    "decals": 0.262,
    "hsc": 0.168,
    "euclid": 0.1,
    "lsst": 0.2,
}
#: The median scale of the GZ2/Kaggle images (see the module docstring; measured, not a convention) ...
GZ2_PIXEL_SCALE = 0.09
#: ... at the side of the Kaggle JPEGs.
GZ2_SIDE = 424
#: Their field in arcsec (38.2").
GZ2_FIELD = GZ2_PIXEL_SCALE * GZ2_SIDE
#: Smaller scales are refused: HST's finest imaging is 0.03"/px, so such a value is a unit mistake.
MIN_PIXEL_SCALE = 0.01
#: Larger scales are refused: at 60"/px a galaxy is a pixel or two.
MAX_PIXEL_SCALE = 60.0
#: The spec that reads each FITS file's own header.
HEADER = "header"
#: The prefix of the spec that reads each row's scale from a catalogue column (``column:NAME``).
COLUMN = "column:"


def check_pixel_scale(value: float, what: str = "pixel scale") -> float:
    """``value`` as a float in arcsec/px, or ``ValueError`` saying why it cannot be one.

    The reasons name the likely mistake: degrees or milliarcseconds instead of arcsec.
    """
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number of arcsec per pixel, got {value!r}") from None
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"{what} must be a positive number of arcsec per pixel, got {value!r}")
    if scale < MIN_PIXEL_SCALE:
        hint = (f" (degrees per pixel? {scale:g} deg = {scale * 3600:.4g} arcsec)" if scale * 3600 <= MAX_PIXEL_SCALE
                else "")
        raise ValueError(f"{what} {scale:g} arcsec/px is absurd: finer than any survey's pixels "
                         f"(HST's finest are 0.03\"/px; minimum {MIN_PIXEL_SCALE:g}){hint}")
    if scale > MAX_PIXEL_SCALE:
        hint = (f" (milliarcsec? {scale:g} mas = {scale / 1000:.4g} arcsec)"
                if scale / 1000 >= MIN_PIXEL_SCALE else "")
        raise ValueError(f"{what} {scale:g} arcsec/px is absurd: a galaxy would be a pixel or two "
                         f"(maximum {MAX_PIXEL_SCALE:g}){hint}")
    return scale


def parse_pixel_scale(spec: float | str | None) -> float | str | None:
    """A pixel-scale setting: ``None``, :data:`HEADER`, ``"column:NAME"``, or arcsec/px from a number or a survey.

    Raises ``ValueError`` (one line) for anything else.
    """
    if spec is None or isinstance(spec, bool):
        if isinstance(spec, bool):
            raise ValueError(f"pixel scale must be a number, a survey name or 'header', got {spec!r}")
        return None
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name == HEADER:
            return HEADER
        if name.startswith(COLUMN):
            # The column name keeps its case: catalogue headers are case-sensitive.
            column = spec.strip()[len(COLUMN):].strip()
            if not column:
                raise ValueError(f"pixel scale {spec!r}: name the catalogue column, e.g. 'column:cutout_pixscale'")
            return COLUMN + column
        if name in SURVEY_PIXEL_SCALES:
            return SURVEY_PIXEL_SCALES[name]
        try:
            value = float(name)
        except ValueError:
            raise ValueError(f"pixel scale {spec!r} is neither a number of arcsec per pixel, 'header', "
                             f"'column:NAME', nor a survey ({', '.join(SURVEY_PIXEL_SCALES)})") from None
        return check_pixel_scale(value)
    return check_pixel_scale(spec)


def scale_column(spec: float | str | None) -> str | None:
    """The catalogue column of a parsed ``"column:NAME"`` spec (:func:`parse_pixel_scale`), else None."""
    if isinstance(spec, str) and spec.startswith(COLUMN):
        return spec[len(COLUMN):]
    return None


def row_pixel_scale(value, column: str) -> float:
    """One catalogue row's arcsec/px from column ``column``, or ``ValueError`` naming the value and why.

    An empty cell (None, NaN, blank text) says so; any other value is checked as a number
    by :func:`check_pixel_scale` (text that is a number, such as a CSV cell read as
    text, is accepted).
    """
    what = f"the pixel scale in column {column!r}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"no pixel scale in column {column!r} (empty)")
    if isinstance(value, (float, np.floating)) and math.isnan(value):
        raise ValueError(f"no pixel scale in column {column!r} (empty or NaN)")
    return check_pixel_scale(value.strip() if isinstance(value, str) else value, what)


_CELESTIAL = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT")


def wcs_pixel_scale(header) -> float | None:
    """Pixel scale (arcsec/px, along x) of a celestial WCS header, or None without one.

    Read from the keywords rather than by building an ``astropy.wcs.WCS``, which costs
    more than reading the file: the norm of the first column of the CD matrix (else of
    ``CDELT`` times the PC matrix), as ``proj_plane_pixel_scales`` computes it.
    """
    ctypes = [str(header.get(f"CTYPE{i}", "")).upper()[:4] for i in (1, 2)]
    if not all(c in _CELESTIAL for c in ctypes):
        return None
    try:
        if "CD1_1" in header or "CD2_1" in header:
            col = (float(header.get("CD1_1", 0.0)), float(header.get("CD2_1", 0.0)))
        elif "CDELT1" in header:
            cdelt = float(header["CDELT1"])
            col = (cdelt * float(header.get("PC1_1", 1.0)), cdelt * float(header.get("PC2_1", 0.0)))
        else:
            return None
    except (TypeError, ValueError):
        return None
    scale = float(np.hypot(*col)) * 3600.0
    return scale if math.isfinite(scale) and scale > 0 else None


def header_pixel_scale(header) -> float | None:
    """A FITS header's pixel scale in arcsec/px: ``PIXSCALE`` (Legacy Surveys cutouts), else its celestial WCS."""
    if header is None:
        return None
    if "PIXSCALE" in header:
        try:
            value = abs(float(header["PIXSCALE"]))
        except (TypeError, ValueError):
            value = math.nan
        if math.isfinite(value) and value > 0:
            return value
    return wcs_pixel_scale(header)


def scale_zoom(side: int, pixel_scale: float, model_field: float) -> float:
    """The zoom that shows an image of ``side`` px at ``pixel_scale`` "/px as a model of field ``model_field`` " saw."""
    return side * pixel_scale / model_field


def kept_fraction(side: int, spec: float | str | None, header_scale: float | None, model_field: float,
                  recentre: bool) -> float:
    """The central fraction of an image's side that decoding keeps: the model's field, when the image is wider.

    A wider field would otherwise be resized to the working size whole and then
    magnified by the warp, losing resolution the image has: cutting it to the model's
    field first (an exact pixel crop, before the one resize of decoding) keeps it.
    1 (keep all) when the image is not wider, when the scale is unknown or bad (the
    geometry then refuses it), and with recentring (the galaxy may lie off centre).
    """
    if spec is None or recentre:
        return 1.0
    scale = header_scale if spec == HEADER else spec
    try:
        scale = check_pixel_scale(scale)
    except ValueError:
        return 1.0
    zoom = scale_zoom(side, scale, model_field)
    return 1.0 / zoom if zoom > 1 else 1.0


def scaled_geometry(zoom: float, placement: np.ndarray | None = None, model_field: float = GZ2_FIELD
                    ) -> np.ndarray:
    """The ``[dx, dy, zoom, found]`` geometry of an image shown at its pixel scale.

    Parameters
    ----------
    zoom : float
        :func:`scale_zoom` of the image.
    placement : ndarray (4,) or None
        The recentring geometry (:mod:`gzmorph.data.recentre`) when measured.  Where a
        galaxy was found, its zoom brings the image to the GZ2 convention, whose nominal
        field is :data:`GZ2_FIELD`; composed with the model's scale that is ``zoom_r x
        GZ2_FIELD / model_field`` (1 x the measured zoom for a model at the GZ2 scale),
        and the centre offset is kept.  Where none was found, the pixel-scale ``zoom``
        replaces the plain centre crop's 1.
    model_field : float
        The model's field in arcsec.
    """
    if placement is None:
        return np.array([0.0, 0.0, zoom, 1.0], dtype=np.float32)
    out = np.asarray(placement, dtype=np.float32).copy()
    out[2] = out[2] * (GZ2_FIELD / model_field) if out[3] > 0 else zoom
    return out


def pixel_geometry(side: int, spec: float | str, header_scale: float | None, placement: np.ndarray | None,
                   model_field: float, fits: bool) -> np.ndarray:
    """The geometry of one image shown at its pixel scale, or ``ValueError`` saying why it cannot be.

    Parameters
    ----------
    side : int
        Native side (px) of the image's square centre.
    spec : float or "header"
        The scale given for the job (:func:`parse_pixel_scale`), or each FITS file's own.
    header_scale : float or None
        The FITS header's scale (:func:`header_pixel_scale`); None for JPEG/PNG.
    placement : ndarray (4,) or None
        The recentring geometry, when measured (composed as :func:`scaled_geometry` says).
    model_field : float
        The model's field (arcsec).
    fits : bool
        The image is a FITS file (only the message depends on it).

    ``side`` is the part of the image decoding kept (:func:`kept_fraction`).  A zoom
    outside the warp's range (:data:`gzmorph.data.recentre.ZOOM_RANGE`) is refused: below
    it the crop is mostly outside the image; above it (only with recentring, which keeps
    the whole image) a few source pixels are blown up.
    """
    from gzmorph.data.recentre import ZOOM_RANGE

    if spec == HEADER:
        if not fits:
            raise ValueError("a JPEG/PNG has no header pixel scale: give the pixel scale as a number or a survey")
        if header_scale is None:
            raise ValueError("no usable pixel scale in the FITS header (no PIXSCALE, no celestial WCS CD/CDELT): "
                             "give the pixel scale as a number or a survey")
        scale = check_pixel_scale(header_scale, "the header's pixel scale")
    else:
        scale = float(spec)
    geometry = scaled_geometry(scale_zoom(side, scale, model_field), placement, model_field)
    lo, hi = ZOOM_RANGE
    if not lo <= geometry[2] <= hi:
        raise ValueError(f"the image spans {side * scale:.4g}\" ({side:.0f} px x {scale:g}\"/px) against the model's "
                         f"{model_field:.4g}\": zoom {geometry[2]:.3g} is outside the warp's range {lo:g}-{hi:g}; "
                         + ("cut a wider cutout" if geometry[2] < lo else "predict without recentring"))
    return geometry
