"""Reading multi-band survey cutouts from FITS files with astropy.

Three layouts are read, all returning the bands a :class:`~gzmorph.data.composite.Stretch`
asks for, in its order:

* **a cube**: one image HDU of shape ``(bands, H, W)``.  Its planes are named by the
  header (``BANDS = 'grz'`` or ``'g,r,z'`` as the Legacy Surveys cutout service writes,
  or ``BAND0``/``BAND1``/... or ``BAND1``/``BAND2``/...); an unnamed cube must hold
  exactly the requested number of planes, taken in the requested order.
* **one image HDU per band**, each named by ``EXTNAME``, ``BAND``, ``FILTER`` or
  ``FILTNAM`` (case-insensitive; the first word of the value counts, so ``'r DECam'`` is
  band ``r``).
* **one file per band**: the image path holds ``{band}`` (``cutouts/1234_{band}.fits``,
  in a catalog's path column), replaced by each band name.

Files are opened memory-mapped where the format allows (not for ``.gz``/``.fz``
compression).  Every band becomes native-endian float32 (FITS is big-endian; astropy
applies ``BSCALE``/``BZERO`` to integer data).  What happens to bad data (tested in
``tests/test_fits.py``):

* NaN/inf pixels (masked pixels, and ``BLANK`` integers, which astropy makes NaN) are
  set to the band's sky (its median), so they read as empty sky; a band with more
  than :data:`MAX_BAD_FRACTION` of them is an error.
* the sky level (positive or negative pedestal) is the band's median and is
  subtracted;
* a band that is constant (all zeros: no data) is an error, and so is a missing band;
* every error is an :class:`~gzmorph.data.decode.ImageError` naming the file, which a
  long job turns into an error row.

The header's pixel scale (``PIXSCALE``, else the celestial WCS's ``CD``/``CDELT``, in
arcsec per pixel: :func:`gzmorph.data.pixscale.header_pixel_scale`) and ``BUNIT`` are kept
in :class:`FitsInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gzmorph.data.pixscale import header_pixel_scale

__all__ = ["FITS_SUFFIXES", "is_fits", "FitsInfo", "FitsError", "read_bands", "read_extent", "MAX_BAD_FRACTION"]

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fits.fz", ".fz")
#: Largest fraction of NaN/inf pixels in a band that is repaired rather than refused.
MAX_BAD_FRACTION = 0.5
_NAME_KEYS = ("BAND", "FILTER", "FILTNAM", "EXTNAME")


class FitsError(Exception):
    """A cutout that cannot be used; ``reason`` says why (the caller names the file)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_fits(path: str | Path) -> bool:
    """True when ``path`` names a FITS file by its suffix (``.fits``, ``.fit``, ``.fits.gz``, ``.fz``...)."""
    name = str(path).lower()
    return name.endswith(FITS_SUFFIXES)


@dataclass(frozen=True)
class FitsInfo:
    """What the header says about a cutout (kept for the catalog)."""

    pixscale: float | None  # arcsec per pixel, None when the header has no scale
    unit: str | None  # BUNIT
    layout: str  # "cube", "extensions" or "files"
    shape: tuple[int, int]


def _band_of(value) -> str:
    words = str(value).strip().split()
    return words[0].lower() if words else ""


def _cube_names(header, n: int) -> list[str] | None:
    """Plane names of a cube from its header, or None."""
    if "BANDS" in header:
        text = str(header["BANDS"]).strip()
        names = [b.strip().lower() for b in text.split(",")] if "," in text else list(text.lower())
        if len(names) != n:
            # The header names the planes, but not all of them: guessing would use an unnamed plane
            # as a requested band.
            raise FitsError(f"the header's BANDS = {text!r} names {len(names)} bands for a cube of {n} planes")
        return names
    for start in (0, 1):
        keys = [f"BAND{start + k}" for k in range(n)]
        if all(k in header for k in keys):
            return [_band_of(header[k]) for k in keys]
    return None


def _as_float(data, band: str) -> np.ndarray:
    if data is None or np.ndim(data) != 2:
        raise FitsError(f"band {band}: not a 2-d image (shape {None if data is None else np.shape(data)})")
    # astype to native float32: FITS data are big-endian, and sep needs native byte order.
    return np.asarray(data).astype(np.float32, copy=True)


def _from_cube(hdu, bands: tuple[str, ...]) -> list[np.ndarray]:
    cube = hdu.data
    names = _cube_names(hdu.header, cube.shape[0])
    if names is None:
        if cube.shape[0] != len(bands):
            raise FitsError(f"a cube of {cube.shape[0]} unnamed planes (no BANDS or BAND0.. keywords) "
                            f"for the {len(bands)} bands {','.join(bands)}")
        names = [b.lower() for b in bands]
    missing = [b for b in bands if b.lower() not in names]
    if missing:
        raise FitsError(f"missing band {','.join(missing)} (the cube has {','.join(names)})")
    return [_as_float(cube[names.index(b.lower())], b) for b in bands]


def _from_extensions(hdus, bands: tuple[str, ...]) -> list[np.ndarray]:
    found: dict[str, object] = {}
    for hdu in hdus:
        if hdu.data is None or hdu.is_image is False or np.ndim(hdu.data) != 2:
            continue
        for key in _NAME_KEYS:
            if key in hdu.header:
                found.setdefault(_band_of(hdu.header[key]), hdu)
                break
    missing = [b for b in bands if b.lower() not in found]
    if missing:
        raise FitsError(f"missing band {','.join(missing)} (image HDUs found for "
                        f"{','.join(sorted(found)) or 'no named band'})")
    return [_as_float(found[b.lower()].data, b) for b in bands]


def _open(path: str, memmap: bool = True):
    from astropy.io import fits

    try:
        return fits.open(path, memmap=memmap and not str(path).lower().endswith((".gz", ".fz")),
                         lazy_load_hdus=False)
    except FileNotFoundError:
        raise FitsError("file not found") from None
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise FitsError(f"not a readable FITS file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
            from None


def _first_image(hdus):
    for hdu in hdus:
        if hdu.is_image and hdu.data is not None:
            return hdu
    raise FitsError("no image data in the file")


def _read_file(path: str, bands: tuple[str, ...], memmap: bool = True) -> tuple[list[np.ndarray], object, str]:
    try:
        return _read_hdus(path, bands, memmap)
    except FitsError as exc:
        # Scaled integers (BSCALE/BZERO/BLANK) cannot be memory-mapped: read them into memory.
        if memmap and "memory-mapped" in exc.reason:
            return _read_hdus(path, bands, memmap=False)
        raise


def _read_hdus(path: str, bands: tuple[str, ...], memmap: bool) -> tuple[list[np.ndarray], object, str]:
    with _open(path, memmap) as hdus:
        try:
            first = _first_image(hdus)
            if first.data.ndim == 3:
                return _from_cube(first, bands), first.header, "cube"
            if len(bands) == 1:
                return [_as_float(first.data, bands[0])], first.header, "files"
            return _from_extensions(hdus, bands), first.header, "extensions"
        except (OSError, ValueError, TypeError) as exc:  # truncated data, bad scaling keywords
            raise FitsError(f"unreadable FITS data ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") \
                from None


def _sanitise(plane: np.ndarray, band: str) -> np.ndarray:
    """Repair non-finite pixels and subtract the sky (the median), or raise."""
    bad = ~np.isfinite(plane)
    frac = float(bad.mean()) if plane.size else 1.0
    if frac > MAX_BAD_FRACTION:
        raise FitsError(f"band {band}: {100 * frac:.0f}% of the pixels are NaN/inf (masked)")
    good = plane[~bad]
    if good.size == 0 or float(good.max()) == float(good.min()):
        what = "all pixels are 0" if good.size and float(good.max()) == 0.0 else "constant"
        raise FitsError(f"band {band} is empty ({what})")
    sky = np.float32(np.median(good))
    plane[bad] = sky
    plane -= sky
    return plane


def read_bands(path: str | Path, bands: tuple[str, ...]) -> tuple[np.ndarray, FitsInfo]:
    """The requested bands of a FITS cutout as sky-subtracted float32 planes.

    Parameters
    ----------
    path : str or Path
        A FITS file (cube or one HDU per band), or a path holding ``{band}``.
    bands : tuple of str
        Band names in the order wanted.

    Returns
    -------
    planes : ndarray, shape (len(bands), H, W), float32
        Native-endian, finite, sky-subtracted.
    info : FitsInfo

    Raises
    ------
    FitsError
        Missing file or band, unreadable data, an empty band, too many NaN pixels.
    """
    path = str(path)
    if "{band}" in path:
        planes, header = [], None
        for band in bands:
            (plane,), hdr, _ = _read_file(path.replace("{band}", band), (band,))
            planes.append(plane)
            header = header if header is not None else hdr
        layout = "files"
    else:
        planes, header, layout = _read_file(path, bands)
    shapes = {p.shape for p in planes}
    if len(shapes) != 1:
        raise FitsError(f"bands of different shapes {sorted(shapes)}")
    out = np.stack([_sanitise(p, b) for p, b in zip(planes, bands)])  # (B, H, W)
    unit = header.get("BUNIT") if header is not None else None
    return out, FitsInfo(header_pixel_scale(header), None if unit is None else str(unit), layout, out.shape[1:])


def read_extent(path: str | Path, bands: tuple[str, ...]) -> tuple[int, float | None]:
    """The native side (px) of a cutout's square centre and its header's pixel scale, from the header alone.

    The same HDU :func:`read_bands` takes its header from (the first image HDU; for a
    path holding ``{band}``, the first band's file), without reading its pixels: cheap
    enough to read every training image's field before decoding any.

    Raises
    ------
    FitsError
        Missing or unreadable file, no image HDU.
    """
    path = str(path)
    first = path.replace("{band}", bands[0]) if "{band}" in path else path
    with _open(first) as hdus:
        for hdu in hdus:
            if hdu.is_image and int(hdu.header.get("NAXIS", 0)) >= 2:
                return int(min(hdu.shape[-2:])), header_pixel_scale(hdu.header)  # shape (..., H, W)
    raise FitsError("no image data in the file")
