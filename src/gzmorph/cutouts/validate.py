"""Is a service's answer the cutout that was asked for?

Services answer errors in many ways besides a status code: an HTML page with status
200, a body cut short by a dropped connection, a FITS file without a WCS, an image of
another size.  :func:`check_body` opens the body as the format the service promises
(astropy for FITS, Pillow for JPEG) and raises :class:`BadBody` with a one-line reason;
``retry`` says whether asking again may help (a truncated body) or not (a wrong scale).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from gzmorph.data.pixscale import wcs_pixel_scale

__all__ = ["BadBody", "BodyInfo", "check_body", "FITS_MAGIC", "JPEG_MAGIC"]

FITS_MAGIC = b"SIMPLE  ="
JPEG_MAGIC = b"\xff\xd8\xff"
FITS_BLOCK = 2880
#: Relative difference between the requested and the header's pixel scale that is refused.
SCALE_TOLERANCE = 0.02


class BadBody(Exception):
    """The body is not a usable cutout; ``reason`` says why, ``retry`` whether to ask again."""

    def __init__(self, reason: str, retry: bool) -> None:
        super().__init__(reason)
        self.reason, self.retry = reason, retry


@dataclass(frozen=True)
class BodyInfo:
    """What was checked: the image shape ``(bands, H, W)`` and the pixel scale (arcsec/px) of its WCS."""

    shape: tuple[int, ...]
    wcs_pixscale: float | None


def _snippet(body: bytes) -> str:
    text = body[:80].decode("utf-8", "replace")
    return " ".join(text.split())


def _wrong_type(body: bytes, content_type: str, expected: str) -> BadBody:
    # Error pages come with status 200 from some services (no coverage, maintenance).
    what = content_type.split(";")[0].strip() or "no content type"
    return BadBody(f"service answered {what} instead of {expected}: {_snippet(body)!r}", retry=True)


def _check_fits(body: bytes, size: int, pixscale: float, need_wcs: bool) -> BodyInfo:
    from astropy.io import fits

    if len(body) % FITS_BLOCK:
        raise BadBody(f"truncated FITS body ({len(body)} bytes, not a multiple of {FITS_BLOCK})", retry=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(io.BytesIO(body)) as hdus:
                hdu = next((h for h in hdus if h.is_image and h.data is not None and h.data.ndim >= 2), None)
                if hdu is None:
                    raise BadBody("FITS body without an image", retry=False)
                shape, header = tuple(int(n) for n in hdu.data.shape), hdu.header.copy()
        except BadBody:
            raise
        except Exception as exc:  # noqa: BLE001 - astropy raises several types for broken files
            problem = f"{type(exc).__name__}: {exc}"
        else:
            problem = None
    # astropy only warns about a file shorter than its header says, then may fail on the data.
    cut = [str(w.message) for w in caught if "truncated" in str(w.message)]
    if cut:
        raise BadBody(f"truncated FITS body ({cut[0]})", retry=True)
    if problem is not None:
        raise BadBody(f"unreadable FITS body ({problem})", retry=True)
    if shape[-2:] != (size, size):
        raise BadBody(f"FITS image of {shape[-1]}x{shape[-2]} px, {size}x{size} requested", retry=False)
    scale = wcs_pixel_scale(header)
    if need_wcs and scale is None:
        raise BadBody("FITS without a celestial WCS: its pixel scale is unknown", retry=False)
    if scale is not None and abs(scale - pixscale) > SCALE_TOLERANCE * pixscale:
        raise BadBody(f"FITS pixel scale {scale:.4g} arcsec/px, {pixscale:g} requested", retry=False)
    return BodyInfo(shape if len(shape) == 3 else (1, *shape), scale)


def _check_jpeg(body: bytes, size: int) -> BodyInfo:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(body)) as img:
            img.load()  # decodes everything: a truncated body raises here
            width, height, bands = img.width, img.height, len(img.getbands())
    except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, SyntaxError...
        raise BadBody(f"broken JPEG body ({type(exc).__name__}: {exc})", retry=True) from None
    if (width, height) != (size, size):
        raise BadBody(f"JPEG of {width}x{height} px, {size}x{size} requested", retry=False)
    return BodyInfo((bands, height, width), None)


def check_body(body: bytes, content_type: str, fmt: str, size: int, pixscale: float,
               need_wcs: bool = True) -> BodyInfo:
    """Check one answer of a service.

    Parameters
    ----------
    body : bytes
    content_type : str
        The answer's ``Content-Type`` (only quoted in messages: services label FITS
        inconsistently, so the bytes decide).
    fmt : {"fits", "jpeg"}
    size : int
        Requested side, pixels.
    pixscale : float
        Requested pixel scale, arcsec/px.
    need_wcs : bool
        FITS: refuse a body without a celestial WCS.

    Raises
    ------
    BadBody
    """
    if fmt == "fits":
        if not body.startswith(FITS_MAGIC):
            raise _wrong_type(body, content_type, "FITS")
        return _check_fits(body, size, pixscale, need_wcs)
    if not body.startswith(JPEG_MAGIC):
        raise _wrong_type(body, content_type, "JPEG")
    return _check_jpeg(body, size)
