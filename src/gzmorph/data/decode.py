"""Decoding one galaxy image file fast: DCT-scaled JPEG decoding, FITS composites, recentring.

Many files in parallel worker processes: :mod:`gzmorph.data.pool`.

Decoding JPEGs is the first bottleneck of the pipeline.  The network samples a 207/424
crop at 69 px, so it never uses more than a third of a Kaggle image's resolution; the
default working size is therefore :data:`DEFAULT_SIZE` = 141 (= 424 / 3).  When the
requested size is at most half the native side, libjpeg decodes directly at 1/2, 1/4 or
1/8 scale (Pillow's *draft* mode: the inverse DCT is computed on fewer coefficients),
which is several times faster than a full decode followed by a resize.  The remaining
non-integer factor (e.g. 212 -> 141) is a box-filter (area-averaging) resize: it is
anti-aliased and, measured on the Kaggle JPEGs, twice as fast as Lanczos
(``benchmarks/decode.py``).

Every image becomes a square ``uint8`` RGB array: grayscale, palette, CMYK, RGBA and
16-bit images are converted, and non-square images are centre-cropped to their shorter
side before resizing (the galaxy is at the centre of a cutout, and crops downstream are
fractions of the side, so a square centre is what the pipeline expects).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFile

from gzmorph.config import Config
from gzmorph.data.composite import Stretch, make_composite
from gzmorph.data.fits import FitsError, is_fits, read_bands
from gzmorph.data.pixscale import GZ2_FIELD, row_pixel_scale, scale_column

__all__ = ["DEFAULT_SIZE", "ImageError", "DecodeOptions", "Item", "decode", "decode_measured", "decode_item"]

#: Default working resolution in pixels (424 / 3: the paper's crop of 207/424 at 69 px).
DEFAULT_SIZE = 141

# A truncated JPEG must be an error, not an image padded with grey.  Pillow's default
# is already False; set it explicitly so an import elsewhere cannot silently flip it.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_RESAMPLE = Image.Resampling.BOX

#: Smallest image side (pixels, of the square centre) that is predicted: a 3x3 or 8x8
#: "cutout" blown up to the network's field holds no morphology, so it is an error row.
MIN_IMAGE_SIDE = 16
_HIGH_BIT_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


class Item(NamedTuple):
    """One input on the decode path, whatever reads it (a file, a worker pool, a cache).

    ``row`` is its position (in the list of paths, or the catalog row); on success
    ``image`` is the ``(S, S, 3)`` uint8 array and ``reason`` None; on failure
    ``image`` is None and ``reason`` says why.  ``geometry`` is the ``(4,)``
    recentring geometry of :mod:`gzmorph.data.recentre` when it was measured, else None.
    """

    row: int
    image: np.ndarray | None
    reason: str | None
    geometry: np.ndarray | None = None


class ImageError(Exception):
    """An image that cannot be decoded; the message names the file.

    Parameters
    ----------
    path : str or Path
        The offending file.
    reason : str
        What went wrong, e.g. ``"truncated file"``.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def __reduce__(self):
        # Default exception pickling would call __init__ with the formatted message only.
        return (ImageError, (self.path, self.reason))


@dataclass(frozen=True)
class DecodeOptions(Config):
    """How image files become pixels beyond JPEG/PNG decoding (picklable: sent to workers).

    Parameters
    ----------
    stretch : Stretch or None
        Bands and colour composite of FITS cutouts (:mod:`gzmorph.data.composite`);
        ``None``: FITS files are error rows that say to give ``--bands``/``--stretch``.
    recentre : bool
        Measure every image's galaxy centre and size (:mod:`gzmorph.data.recentre`):
        on the linear bands of a FITS cutout, on the decoded pixels of a JPEG.
    pixel_scale : float, "header", "column:NAME" or None
        Show every image at its angular size (:mod:`gzmorph.data.pixscale`): arcsec per
        pixel of the files at their native size, ``"header"`` (each FITS file's own), or
        ``"column:NAME"`` (each catalogue row's own, handed to :func:`decode_item` with
        its path); every item then carries the geometry whose zoom is its field over
        ``model_field``.
    model_field : float
        The field (arcsec) of the images the model was trained on.
    """

    stretch: Stretch | None = None
    recentre: bool = False
    pixel_scale: float | str | None = None
    model_field: float = GZ2_FIELD


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB."""
    if im.mode == "RGB":
        return im
    if im.mode in _HIGH_BIT_MODES:
        # Pillow's convert clips 16-bit/float values at 255 instead of rescaling.
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        return Image.fromarray(np.round(scaled).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        # Transparent pixels are empty sky: composite onto black, not onto the colour
        # values that happen to be stored under alpha = 0.
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _centre_square(im: Image.Image) -> Image.Image:
    w, h = im.size
    if w == h:
        return im
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side))


def _square_planes(planes: np.ndarray) -> np.ndarray:
    h, w = planes.shape[1:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return planes[:, top : top + side, left : left + side]


def _decode_fits(path: str | Path, size: int | None, options: DecodeOptions
                 ) -> tuple[np.ndarray, Any, int, float | None]:
    """A FITS cutout as its colour composite, (with ``options.recentre``) its placement, the native
    side of what was kept (:func:`_kept`) and its header's pixel scale."""
    from gzmorph.data.pixscale import kept_fraction
    from gzmorph.data.recentre import measure

    if options.stretch is None:
        raise ImageError(path, "a FITS cutout needs its bands and colour stretch (--bands, --stretch)")
    if "{band}" not in str(path):
        _check_regular_file(path)
    try:
        planes, info = read_bands(path, options.stretch.bands)
    except FitsError as exc:
        raise ImageError(path, exc.reason) from None
    planes = _square_planes(planes)  # (3, S, S): the centre square, as for JPEGs
    _check_side(path, planes.shape[1])
    placement = measure(planes.sum(axis=0)) if options.recentre else None
    planes = _kept(planes, kept_fraction(planes.shape[1], options.pixel_scale, info.pixscale, options.model_field,
                                         options.recentre))
    _check_side(path, planes.shape[1])
    out = Image.fromarray(make_composite(planes, options.stretch))
    if size is not None and out.size != (size, size):
        out = out.resize((size, size), _RESAMPLE)
    return np.array(out, dtype=np.uint8), placement, int(planes.shape[1]), info.pixscale


def _kept(planes: np.ndarray, fraction: float) -> np.ndarray:
    """The central ``fraction`` of ``(B, S, S)`` planes' side (the pixel scale's field; an exact crop)."""
    if fraction >= 1:
        return planes
    side = planes.shape[-1]
    k = max(1, int(round(side * fraction)))
    top = (side - k) // 2
    return planes[..., top : top + k, top : top + k]


def decode_measured(path: str | Path, size: int | None = DEFAULT_SIZE,
                    options: DecodeOptions | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`decode`, and the geometry of :mod:`gzmorph.data.recentre` when ``options.recentre``.

    Returns
    -------
    image : ndarray (size, size, 3) uint8
    geometry : ndarray (4,) float32 ``[dx, dy, zoom, found]``, or None without recentring
        A FITS cutout is measured on its linear bands at native resolution, any other
        image on its decoded pixels.
    """
    options = options or DecodeOptions()
    if scale_column(options.pixel_scale) is not None:
        raise ValueError(f"pixel scale {options.pixel_scale!r} is per row: decode with decode_item(..., scale=) "
                         "or iter_decoded(..., scales=)")
    if is_fits(path) or "{band}" in str(path):
        image, placement, side, header_scale = _decode_fits(path, size, options)
        geometry = None if placement is None else placement.geometry()
    else:
        image, side = _decode_raster(path, size, options)
        header_scale, geometry = None, None
        if options.recentre:
            from gzmorph.data.recentre import measure_rgb

            geometry = measure_rgb(image).geometry()
    if options.pixel_scale is None:
        return image, geometry
    from gzmorph.data.pixscale import pixel_geometry

    try:
        return image, pixel_geometry(side, options.pixel_scale, header_scale, geometry, options.model_field,
                                     fits=is_fits(path) or "{band}" in str(path))
    except ValueError as exc:
        raise ImageError(path, str(exc)) from None


def decode(path: str | Path, size: int | None = DEFAULT_SIZE, options: DecodeOptions | None = None) -> np.ndarray:
    """Decode one image file to a square RGB array.

    Parameters
    ----------
    path : str or Path
        A JPEG, PNG or any other format Pillow reads, or a FITS cutout
        (:data:`gzmorph.data.fits.FITS_SUFFIXES`, or a path holding ``{band}``), which
        becomes the colour composite of ``options.stretch``.
    size : int or None
        Output side in pixels; ``None`` keeps the native resolution (of the square
        centre).  When ``size`` is at most half the native side, JPEGs are decoded at a
        reduced DCT scale first.
    options : DecodeOptions, optional
        The FITS composite (needed for FITS files).

    Returns
    -------
    ndarray, shape (size, size, 3), uint8

    Raises
    ------
    ImageError
        The file is missing, empty, truncated or not an image; the message names it.
    """
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    if is_fits(path) or "{band}" in str(path):
        return _decode_fits(path, size, options or DecodeOptions())[0]
    return _decode_raster(path, size)[0]


def _decode_raster(path: str | Path, size: int | None, options: DecodeOptions | None = None
                   ) -> tuple[np.ndarray, float]:
    """A JPEG/PNG/... as :func:`decode` returns it, and the native side of the square centre it kept.

    With a pixel scale (``options``), an image wider than the model's field keeps only
    that field (:func:`gzmorph.data.pixscale.kept_fraction`), cut before the resize.
    """
    from gzmorph.data.pixscale import kept_fraction

    if size is not None and size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    _check_regular_file(path)
    try:
        with Image.open(path) as im:
            native = min(im.size)
            _check_side(path, native)  # the native size, from the header (before any draft)
            options = options or DecodeOptions()
            fraction = kept_fraction(native, options.pixel_scale, None, options.model_field, options.recentre)
            if size is not None:
                # Only JPEGs implement draft; it picks the largest power-of-two
                # reduction that keeps both sides >= size, so no detail is lost.
                need = int(np.ceil(size / fraction))
                im.draft(None, (need, need))
            im.load()  # raises OSError on a truncated file
            out = _centre_square(_to_rgb(im))
            if fraction < 1:  # the model's field only: an exact crop before the one resize
                side = out.size[0]
                k = max(1, int(round(side * fraction)))
                top = (side - k) // 2
                out = out.crop((top, top, top + k, top + k))
                native = native * k / side
                _check_side(path, int(native))
            if size is not None and out.size != (size, size):
                out = out.resize((size, size), _RESAMPLE)
            arr = np.asarray(out, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except Image.UnidentifiedImageError:
        reason = "empty file" if _is_empty(path) else "not an image Pillow can read"
        raise ImageError(path, reason) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            reason = f"truncated file ({reason})"
        raise ImageError(path, reason) from None
    # Pillow may hand back a read-only view of its buffer; callers write into batches.
    return (np.ascontiguousarray(arr) if arr.flags.writeable else arr.copy()), native


def _check_side(path: str | Path, side: int) -> None:
    if side < MIN_IMAGE_SIDE:
        raise ImageError(path, f"{side} pixels across: smaller than the {MIN_IMAGE_SIDE}-pixel minimum "
                               "(too small to show a galaxy's morphology)")


def _check_regular_file(path: str | Path) -> None:
    """Raise :class:`ImageError` for what is not a readable regular file.

    Opening a FIFO would block forever and a device could stream without end, so
    they are refused by their type before anything reads them.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageError(path, "broken symlink" if os.path.islink(path) else "file not found") from None
    except OSError as exc:
        raise ImageError(path, exc.strerror or type(exc).__name__) from None
    if not stat.S_ISREG(mode):
        raise ImageError(path, "not a regular file")


def _is_empty(path: str | Path) -> bool:
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def decode_item(row: int, path: str | Path | None, size: int | None, options: DecodeOptions | None = None,
                scale: Any = None) -> Item:
    """:func:`decode_measured` as an :class:`Item`: a failure becomes a reason, never an exception.

    With ``options.pixel_scale = "column:NAME"``, ``scale`` is the row's raw value in
    that column: the image is decoded at it exactly as at a single number, and a value
    that is not a usable scale makes the row a failure naming it.
    """
    if path is None:
        return Item(row, None, "no image path")
    column = None if options is None else scale_column(options.pixel_scale)
    if column is not None:
        try:
            options = replace(options, pixel_scale=row_pixel_scale(scale, column))
        except ValueError as exc:
            return Item(row, None, str(exc))
    try:
        image, geometry = decode_measured(path, size, options)
    except ImageError as exc:
        return Item(row, None, exc.reason)
    except Exception as exc:  # noqa: BLE001 - a long job must not die on one image
        return Item(row, None, f"{type(exc).__name__}: {exc}")
    return Item(row, image, None, geometry)
