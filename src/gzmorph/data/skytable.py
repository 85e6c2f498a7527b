"""Ids and sky positions of a catalogue, checked row by row.

:func:`sky_positions` checks the id and coordinate columns of a table read by
:func:`gzmorph.data.tablefile.read_table_file` (CSV, Parquet, FITS binary table, ECSV,
VOTable).  A catalogue-wide problem (no such column, an empty or duplicate id, an id
that cannot be a file name) is a :class:`~gzmorph.errors.CatalogError` naming the file
and the rows; a bad position of one row (RA outside [0, 360), Dec outside [-90, 90], a
missing or non-numeric coordinate) is a per-row problem that a long job records as an
error row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError
from gzmorph.data.tablefile import TableFile
from gzmorph.data.tables import listing, parse_ids_text, show_id

__all__ = ["SkyPositions", "sky_positions", "find_column", "healpix_index"]

# An id becomes a file name (<id>.fits): no separators, no hidden or relative names.
_SAFE_ID = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_+\-.]{0,199}")
# Angle units as degrees per unit, for files read without astropy.
_TO_DEG = {"deg": 1.0, "degree": 1.0, "rad": 180.0 / np.pi, "hourangle": 15.0, "h": 15.0, "hour": 15.0,
           "arcsec": 1 / 3600.0, "arcmin": 1 / 60.0}


@dataclass
class SkyPositions:
    """Ids and positions of a catalogue, with the per-row problems found.

    ``problems[i]`` is None for a usable row, else the reason (``"RA 361 outside [0, 360)"``).
    """

    ids: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    problems: list[str | None]
    id_column: str
    ra_column: str
    dec_column: str


def find_column(table: TableFile, name: str, what: str) -> str:
    """The column called ``name`` (exact, else the one case-insensitive match)."""
    columns = list(table.frame.columns)
    if name in columns:
        return name
    near = [c for c in columns if c.lower() == name.lower()]
    if len(near) == 1:
        return near[0]
    raise CatalogError(f"{table.path}: no {what} column {name!r} (columns: {', '.join(columns[:12])}"
                       f"{', ...' if len(columns) > 12 else ''})")


def _ids(table: TableFile, column: str) -> np.ndarray:
    raw = table.frame[column]
    if raw.dtype.kind == "f":  # an integer id column with a missing value arrives as float
        text = raw.map(lambda v: "" if pd.isna(v) else (str(int(v)) if float(v).is_integer() else str(v)))
    else:
        text = raw.astype("string").str.strip().fillna("")
    values = list(text.to_numpy(dtype=object))
    empty = np.flatnonzero([v == "" for v in values])
    if len(empty):
        raise CatalogError(f"empty id in column {column!r}: "
                           + _listing(table, empty, lambda r: "no value"))
    unsafe = np.flatnonzero([not _SAFE_ID.fullmatch(v) for v in values])
    if len(unsafe):
        raise CatalogError(f"id(s) that cannot name a file (letters, digits, _ + - . only; not starting with "
                           f"'.') in column {column!r}: " + _listing(table, unsafe, lambda r: repr(values[r])))
    ids = parse_ids_text(values)
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise CatalogError(f"duplicate ids in column {column!r}: "
                           + _listing(table, rows, lambda r: f"id {show_id(ids[r])}"))
    return ids


def _listing(table: TableFile, rows: np.ndarray, what) -> str:
    # CSV lines count from the header (line 1), other formats' rows from 0.
    return listing(table.path, rows, what)


def _degrees(table: TableFile, column: str) -> tuple[np.ndarray, np.ndarray]:
    """The column in degrees (a unit attached by the format is honoured) and a non-numeric mask."""
    raw = table.frame[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64)
    blank = raw.isna().to_numpy() | (raw.astype("string").str.strip() == "").fillna(True).to_numpy()
    unit = table.units.get(column)
    if unit is not None:
        values = values * _degrees_per(unit, table.path, column)
    return values, np.isnan(values) & ~blank


def _degrees_per(unit: str, path: Path, column: str) -> float:
    try:
        import astropy.units as u
    except ImportError:  # CSV/Parquet users need not install astropy: the common names
        if unit in _TO_DEG:
            return _TO_DEG[unit]
        raise CatalogError(f"{path}: column {column!r} has unit {unit!r}, not one of {sorted(_TO_DEG)}") from None
    try:
        return float(u.Unit(unit).to(u.deg))
    except (ValueError, u.UnitsError):
        raise CatalogError(f"{path}: column {column!r} has unit {unit!r}, not an angle") from None


def sky_positions(table: TableFile, id_column: str = "id", ra_column: str = "ra",
                  dec_column: str = "dec") -> SkyPositions:
    """Ids and positions (degrees, ICRS) of every row, with the per-row problems.

    Raises
    ------
    CatalogError
        A missing column, an empty, duplicate or unsafe id (ids name the cutout files).
    """
    id_column = find_column(table, id_column, "id")
    ra_column, dec_column = find_column(table, ra_column, "RA"), find_column(table, dec_column, "Dec")
    ids = _ids(table, id_column)
    ra, ra_text = _degrees(table, ra_column)
    dec, dec_text = _degrees(table, dec_column)
    problems: list[str | None] = []
    for r in range(len(ids)):
        if ra_text[r] or dec_text[r]:
            bad = table.frame[ra_column if ra_text[r] else dec_column].iloc[r]
            problems.append(f"{'RA' if ra_text[r] else 'Dec'} {bad!r} is not a number")
        elif np.isnan(ra[r]) or np.isnan(dec[r]):
            problems.append("missing coordinates")
        elif not 0.0 <= ra[r] < 360.0:
            problems.append(f"RA {ra[r]:g} outside [0, 360)")
        elif not -90.0 <= dec[r] <= 90.0:
            problems.append(f"Dec {dec[r]:g} outside [-90, 90]")
        else:
            problems.append(None)
    return SkyPositions(ids, ra, dec, problems, id_column, ra_column, dec_column)


def healpix_index(ra: np.ndarray, dec: np.ndarray, order: int) -> np.ndarray:
    """Nested HEALPix index (order ``order``, nside 2**order) of each position; -1 where it is NaN.

    For partitioning and cross-matching very large outputs (astropy-healpix, extra ``survey``).
    """
    if not 0 <= order <= 29:
        raise ValueError(f"HEALPix order must be in [0, 29], got {order}")
    try:
        from astropy_healpix import HEALPix
    except ImportError:
        from gzmorph.errors import MissingExtraError

        raise MissingExtraError("a HEALPix column needs astropy-healpix: pip install 'gzmorph[survey]'") from None
    import astropy.units as u

    ok = np.isfinite(ra) & np.isfinite(dec)
    out = np.full(len(ra), -1, dtype=np.int64)
    if ok.any():
        grid = HEALPix(nside=2**order, order="nested")
        out[ok] = grid.lonlat_to_healpix(np.asarray(ra)[ok] * u.deg, np.asarray(dec)[ok] * u.deg)
    return out
