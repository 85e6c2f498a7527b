"""The on-disk cache of fetched cutouts, keyed by what was asked for.

A cutout is identified by (service, server, ra, dec, size, pixel scale, bands, params):
:func:`cutout_key` hashes them (coordinates as the URL writes them, 7 decimals).  Files
live under ``ROOT/<2 hex>/<key><suffix>`` and are written under a temporary name and
renamed, then indexed in ``ROOT/index.sqlite`` (one row per cutout: its request, pixel
scale, bands, format, size in bytes, SHA-256 and when it was fetched).  A job killed
between the two leaves at most an unindexed file, which the next fetch replaces; a
file that went missing makes its index row a miss.  Several jobs may share one cache
(SQLite serialises the writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CutoutCache", "CachedCutout", "cutout_key", "default_cache_dir"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cutouts (
    key TEXT PRIMARY KEY, service TEXT NOT NULL, base TEXT NOT NULL, ra REAL NOT NULL, dec REAL NOT NULL,
    size INTEGER NOT NULL, pixscale REAL NOT NULL, bands TEXT NOT NULL, format TEXT NOT NULL,
    params TEXT NOT NULL, file TEXT NOT NULL, nbytes INTEGER NOT NULL, sha256 TEXT NOT NULL,
    wcs_pixscale REAL, fetched REAL NOT NULL)
"""


def default_cache_dir() -> Path:
    """``$GZMORPH_CACHE_DIR``, else ``$XDG_CACHE_HOME/gzmorph/cutouts``, else ``~/.cache/gzmorph/cutouts``."""
    if os.environ.get("GZMORPH_CACHE_DIR"):
        return Path(os.environ["GZMORPH_CACHE_DIR"]).expanduser()
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "gzmorph" / "cutouts"


def cutout_key(service: str, base: str, ra: float, dec: float, size: int, pixscale: float, bands: str,
               params: dict[str, str]) -> str:
    """SHA-256 (hex) of a request's identity."""
    ident = [service, base.rstrip("/"), f"{ra:.7f}", f"{dec:.7f}", int(size), f"{pixscale:g}", bands,
             sorted(params.items())]
    return hashlib.sha256(json.dumps(ident).encode()).hexdigest()


@dataclass(frozen=True)
class CachedCutout:
    """One cached cutout: its file and what it holds."""

    key: str
    path: Path
    pixscale: float
    bands: str
    format: str
    wcs_pixscale: float | None


class CutoutCache:
    """Cutout files plus their SQLite index under ``root``.

    Parameters
    ----------
    root : str or Path
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / "index.sqlite", timeout=60)
        # WAL + NORMAL: a commit survives a killed process (only a power cut may lose the last ones)
        # without an fsync per cutout.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "CutoutCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def get(self, key: str) -> CachedCutout | None:
        """The cached cutout of ``key``, or None (never fetched, or its file is gone)."""
        row = self._db.execute("SELECT file, pixscale, bands, format, nbytes, wcs_pixscale FROM cutouts "
                               "WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        path = self.root / row[0]
        try:
            if path.stat().st_size != row[4]:
                return None
        except OSError:
            return None
        return CachedCutout(key, path, row[1], row[2], row[3], row[5])

    def put(self, key: str, body: bytes, *, service: str, base: str, ra: float, dec: float, size: int,
            pixscale: float, bands: str, format: str, suffix: str, params: dict[str, str],
            wcs_pixscale: float | None) -> CachedCutout:
        """Store one fetched cutout (file first, then its index row) and return it."""
        rel = Path(key[:2]) / f"{key}{suffix}"
        path = self.root / rel
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        self._db.execute(
            "INSERT OR REPLACE INTO cutouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, service, base.rstrip("/"), ra, dec, int(size), pixscale, bands, format,
             json.dumps(sorted(params.items())), str(rel), len(body), hashlib.sha256(body).hexdigest(),
             wcs_pixscale, time.time()))
        self._db.commit()
        return CachedCutout(key, path, pixscale, bands, format, wcs_pixscale)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM cutouts").fetchone()[0])
