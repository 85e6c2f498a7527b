"""A local stand-in for the public cutout services, with failures on demand.

It answers the request paths of the Legacy Surveys viewer (``/viewer/fits-cutout``,
``/viewer/jpeg-cutout``), the SDSS SkyServer (``.../ImgCutout/getjpeg``) and CDS
hips2fits (``/hips-image-services/hips2fits``) with generated galaxies: FITS cubes with
a TAN WCS of the requested pixel scale and ``BAND0``.. keywords (as the Legacy Surveys
write them), FITS images (hips2fits), and JPEGs.  It listens on 127.0.0.1 only, so the
tests and benchmarks of ``gzmorph cutouts`` never touch the internet
(``--service-url http://127.0.0.1:PORT``).

:class:`Faults` injects what real services do: 429 with ``Retry-After``, 500, answers
slower than the client's timeout, bodies cut short (connection dropped, or a short
``Content-Length``), HTML pages with status 200, 404 (no coverage).  Which requests
fail is decided by a hash of the position, so a run is reproducible: a fraction
``rate`` of positions fail their first ``times`` requests (a retry succeeds), a
fraction ``permanent`` fail every time.

Run it alone with ``python -m gzmorph.mock.cutout_server --port 8765 --rate 0.1``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import numpy as np

__all__ = ["Faults", "CutoutServer", "FAULT_KINDS", "galaxy_bands"]

FAULT_KINDS = ("429", "500", "slow", "truncated", "short", "html", "404")
_BAND_FLUX = {"g": 0.6, "r": 1.0, "i": 1.3, "z": 1.5, "y": 1.6, "u": 0.3}


@dataclass(frozen=True)
class Faults:
    """Which requests fail, and how.

    Parameters
    ----------
    rate : float
        Fraction of positions whose first ``times`` requests fail.
    permanent : float
        Fraction of positions whose every request fails.
    kinds : tuple of str
        The failures drawn from (:data:`FAULT_KINDS`), by a hash of the position.
    times : int
        Failed requests before a transient position answers.
    slow_seconds : float
        Delay of a ``slow`` answer (make it longer than the client's timeout).
    wcs : bool
        FITS answers carry a WCS (False: none, to test refusing them).
    seed : int
    """

    rate: float = 0.0
    permanent: float = 0.0
    kinds: tuple[str, ...] = ("429", "500", "slow", "truncated", "short", "html")
    times: int = 1
    slow_seconds: float = 3.0
    wcs: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(f"fault kinds must be among {FAULT_KINDS}, got {self.kinds}")
        if not (0 <= self.rate and 0 <= self.permanent and self.rate + self.permanent <= 1):
            raise ValueError("rate and permanent must be fractions summing to at most 1")

    def draw(self, position: str) -> tuple[float, str]:
        """A uniform number and a fault kind, fixed for ``position``."""
        h = hashlib.sha256(f"{self.seed}:{position}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2.0 ** 64, self.kinds[h[8] % len(self.kinds)]


def galaxy_bands(ra: float, dec: float, size: int, bands: str) -> np.ndarray:
    """``(len(bands), size, size)`` float32: a bulge + disc galaxy and noise, fixed by the position."""
    rng = np.random.default_rng(int(hashlib.sha256(f"{ra:.7f},{dec:.7f}".encode()).hexdigest()[:12], 16))
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2.0  # (size, size) each
    angle, q = rng.uniform(0, np.pi), rng.uniform(0.3, 1.0)
    u = x * np.cos(angle) + y * np.sin(angle)
    v = (-x * np.sin(angle) + y * np.cos(angle)) / q
    r = np.hypot(u, v)
    scale = size * rng.uniform(0.04, 0.1)
    disc, bulge = np.exp(-r / scale), np.exp(-7.67 * ((r / (0.5 * scale)) ** 0.25 - 1))
    frac = rng.uniform(0.0, 0.6)
    out = np.empty((len(bands), size, size), dtype=np.float32)
    for k, band in enumerate(bands):
        flux = _BAND_FLUX.get(band, 1.0)
        out[k] = flux * ((1 - frac) * disc + frac * 1e-3 * bulge) + rng.normal(0, 0.01, (size, size))
    return out


def _fits_bytes(ra: float, dec: float, size: int, pixscale: float, bands: str, cube: bool, wcs: bool) -> bytes:
    from astropy.io import fits

    data = galaxy_bands(ra, dec, size, bands)
    hdu = fits.PrimaryHDU(data if cube else data[0])
    h = hdu.header
    if wcs:
        h.update(CTYPE1="RA---TAN", CTYPE2="DEC--TAN", CRVAL1=ra, CRVAL2=dec, CRPIX1=(size + 1) / 2,
                 CRPIX2=(size + 1) / 2, CD1_1=-pixscale / 3600.0, CD1_2=0.0, CD2_1=0.0, CD2_2=pixscale / 3600.0)
    if cube:
        h["BANDS"] = bands
        for k, band in enumerate(bands):
            h[f"BAND{k}"] = band
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def _jpeg_bytes(ra: float, dec: float, size: int) -> bytes:
    from PIL import Image

    data = galaxy_bands(ra, dec, size, "gri")[::-1]  # red, green, blue = i, r, g
    rgb = np.clip(np.arcsinh(data / 0.05) / np.arcsinh(1.0 / 0.05) * 255, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb.transpose(1, 2, 0))).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _answer(path: str, q: dict[str, str], wcs: bool) -> tuple[bytes, str] | None:
    """The cutout a service path asks for, as (body, content type); None for an unknown path."""
    ra, dec = float(q["ra"]), float(q["dec"])
    if path.endswith("/viewer/fits-cutout"):
        return _fits_bytes(ra, dec, int(q["size"]), float(q["pixscale"]), q.get("bands", "grz"), True, wcs), \
            "application/fits"
    if path.endswith("/viewer/jpeg-cutout"):
        return _jpeg_bytes(ra, dec, int(q["size"])), "image/jpeg"
    if path.endswith("/ImgCutout/getjpeg"):
        return _jpeg_bytes(ra, dec, int(q["width"])), "image/jpeg"
    if path.endswith("/hips-image-services/hips2fits"):
        size = int(q["width"])
        if q.get("format") == "fits":
            scale = float(q["fov"]) * 3600.0 / size
            return _fits_bytes(ra, dec, size, scale, "r", False, wcs), "application/fits"
        return _jpeg_bytes(ra, dec, size), "image/jpeg"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the real services
    server: "_Server"

    def log_message(self, *args) -> None:  # quiet: tests and benchmarks count requests instead
        pass

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None,
              length: int | None = None, cut: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body[: len(body) // 2] if cut else body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):  # the client timed out meanwhile
            self.close_connection = True
        if cut:
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        position = f"{q.get('ra')},{q.get('dec')}"
        kind = self.server.fault(url.path, position)
        if kind == "404" or "ra" not in q or "dec" not in q:
            return self._send(404, b"no such cutout", "text/plain")
        if kind == "429":
            return self._send(429, b"slow down", "text/plain", {"Retry-After": "0"})
        if kind == "500":
            return self._send(500, b"internal server error", "text/plain")
        if kind == "html":
            return self._send(200, b"<!DOCTYPE html><html><body>Service temporarily unavailable</body></html>",
                              "text/html; charset=utf-8")
        answer = _answer(url.path, q, self.server.faults.wcs)
        if answer is None:
            return self._send(404, b"unknown service path", "text/plain")
        body, ctype = answer
        if kind == "slow":
            time.sleep(self.server.faults.slow_seconds)
        if kind == "short":  # the server itself sends half the file, and says so
            return self._send(200, body[: len(body) // 2], ctype)
        self._send(200, body, ctype, cut=kind == "truncated")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        pass  # clients that hang up (after a timeout, or a cut body) are part of the job

    def __init__(self, address, faults: Faults) -> None:
        super().__init__(address, _Handler)
        self.faults = faults
        self.requests: Counter[str] = Counter()
        self.faults_sent: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def fault(self, path: str, position: str) -> str | None:
        """The fault of this request (counting it), or None."""
        u, kind = self.faults.draw(position)
        with self._lock:
            self.requests[path] += 1
            self._seen[position] += 1
            n = self._seen[position]
        failing = u < self.faults.permanent or (u < self.faults.permanent + self.faults.rate
                                                and n <= self.faults.times)
        if failing:
            with self._lock:
                self.faults_sent[kind] += 1
            return kind
        return None


class CutoutServer:
    """The emulator on ``127.0.0.1`` in a background thread; a context manager.

    Parameters
    ----------
    faults : Faults
    port : int
        0 picks a free port.
    """

    def __init__(self, faults: Faults = Faults(), port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), faults)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> Counter[str]:
        """Requests received, by path."""
        return self._server.requests

    @property
    def faults_sent(self) -> Counter[str]:
        return self._server.faults_sent

    def __enter__(self) -> "CutoutServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Local emulator of cutout services (127.0.0.1 only).")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--rate", type=float, default=0.0, help="fraction of positions failing their first request(s)")
    p.add_argument("--permanent", type=float, default=0.0, help="fraction of positions failing every request")
    p.add_argument("--kinds", default=",".join(Faults.kinds), help=f"fault kinds, from {','.join(FAULT_KINDS)}")
    p.add_argument("--slow-seconds", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    faults = Faults(args.rate, args.permanent, tuple(args.kinds.split(",")), slow_seconds=args.slow_seconds,
                    seed=args.seed)
    with CutoutServer(faults, args.port) as server:
        print(f"cutout emulator at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
