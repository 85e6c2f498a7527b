"""Sky catalogues as astronomers hold them: CSV, Parquet, FITS binary tables, ECSV, VOTable.

:func:`read_sky_table` reads any of them into a pandas DataFrame in the file's row and
column order and keeps what the format says about each column (unit, description), so
the columns can be carried to outputs that hold units.  CSV and Parquet are read with
pandas/pyarrow; FITS, ECSV and VOTable with astropy (extra ``survey``).

:func:`sky_positions` checks the id and coordinate columns.  A catalogue-wide problem
(no such column, an empty or duplicate id, an id that cannot be a file name) is a
:class:`~gzmorph.errors.CatalogError` naming the file and the rows; a bad position of one
row (RA outside [0, 360), Dec outside [-90, 90], a missing or non-numeric coordinate)
is a per-row problem that a long job records as an error row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError
from gzmorph.data.tables import listing, parse_ids_text, show_id

__all__ = ["SkyTable", "SkyPositions", "read_sky_table", "sky_positions", "find_column", "sky_format",
           "SKY_FORMATS"]

#: Suffix -> format name (astropy's names where astropy reads it).
SKY_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits",
               ".fits.gz": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".votable": "votable",
               ".xml": "votable"}
# An id becomes a file name (<id>.fits): no separators, no hidden or relative names.
_SAFE_ID = re.compile(r"[A-Za-z0-9_+\-][A-Za-z0-9_+\-.]{0,199}")
# Angle units astropy may attach to a coordinate column, as degrees per unit.
_TO_DEG = {"deg": 1.0, "degree": 1.0, "rad": 180.0 / np.pi, "hourangle": 15.0, "h": 15.0, "hour": 15.0,
           "arcsec": 1 / 3600.0, "arcmin": 1 / 60.0}


@dataclass
class SkyTable:
    """A catalogue read from disk.

    Parameters
    ----------
    frame : DataFrame
        The rows, in file order; column order of the file.
    path : Path
    units : dict
        Column -> unit string, for the columns whose format gave one.
    descriptions : dict
        Column -> description, likewise.
    """

    frame: pd.DataFrame
    path: Path
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    def where(self, row: int) -> str:
        """Human location of data row ``row`` (CSV line with the header as line 1, else row from 0)."""
        return f"line {row + 2}" if sky_format(self.path) == "csv" else f"row {row}"


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


def sky_format(path: str | Path) -> str:
    """The format of a catalogue file by its suffix; unknown suffixes are a :class:`CatalogError`."""
    name = str(path).lower()
    for suffix in sorted(SKY_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return SKY_FORMATS[suffix]
    raise CatalogError(f"{path}: unsupported catalogue format; use one of {', '.join(SKY_FORMATS)}")


def _read_astropy(path: Path, fmt: str) -> SkyTable:
    from gzmorph.data.composite import require_survey_extra

    require_survey_extra()
    import warnings

    from astropy.table import Table

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unit parsing warnings of foreign files
            table = Table.read(path, format=fmt)
    except Exception as exc:  # noqa: BLE001 - astropy's readers raise many unrelated types
        raise CatalogError(f"{path}: cannot read as {fmt} ({type(exc).__name__}: {exc})") from None
    multi = [name for name in table.colnames if table[name].ndim > 1]
    if multi:
        raise CatalogError(f"{path}: column(s) {multi} hold arrays per row; a catalogue row needs scalar cells")
    units = {n: str(table[n].unit) for n in table.colnames if table[n].unit is not None}
    descriptions = {n: str(table[n].description) for n in table.colnames if table[n].description}
    frame = table.to_pandas(index=False)
    for name in frame.columns:  # FITS strings come back as bytes
        if frame[name].dtype == object and len(frame) and isinstance(frame[name].iloc[0], bytes):
            frame[name] = frame[name].str.decode("utf-8").str.strip()
    return SkyTable(frame, path, units, descriptions)


def read_sky_table(path: str | Path, id_column: str | None = None) -> SkyTable:
    """Read a catalogue file (CSV, Parquet, FITS binary table, ECSV, VOTable).

    Parameters
    ----------
    path : str or Path
    id_column : str, optional
        Read as text from CSV, so that ids keep leading zeros and large integers stay exact.

    Returns
    -------
    SkyTable

    Raises
    ------
    CatalogError
        Missing or unreadable file, unsupported suffix, array-valued columns, no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    fmt = sky_format(path)
    if fmt == "csv":
        try:
            frame = pd.read_csv(path, dtype={id_column: str} if id_column else None, skipinitialspace=True,
                                encoding="utf-8-sig")
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise CatalogError(f"{path}: cannot parse CSV ({exc})") from None
        table = SkyTable(frame, path)
    elif fmt == "parquet":
        table = _read_parquet(path)
    else:
        table = _read_astropy(path, fmt)
    table.frame.columns = [str(c).strip() for c in table.frame.columns]
    if len(table.frame) == 0:
        raise CatalogError(f"{path}: no data rows")
    return table


def _read_parquet(path: Path) -> SkyTable:
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types
        raise CatalogError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    units, descriptions = {}, {}
    for f in arrow.schema:  # units and descriptions written by gzmorph (field metadata)
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        if meta.get("unit"):
            units[f.name] = meta["unit"]
        if meta.get("description"):
            descriptions[f.name] = meta["description"]
    return SkyTable(arrow.to_pandas(), path, units, descriptions)


def find_column(table: SkyTable, name: str, what: str) -> str:
    """The column called ``name`` (exact, else the one case-insensitive match)."""
    columns = list(table.frame.columns)
    if name in columns:
        return name
    near = [c for c in columns if c.lower() == name.lower()]
    if len(near) == 1:
        return near[0]
    raise CatalogError(f"{table.path}: no {what} column {name!r} (columns: {', '.join(columns[:12])}"
                       f"{', ...' if len(columns) > 12 else ''})")


def _ids(table: SkyTable, column: str) -> np.ndarray:
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


def _listing(table: SkyTable, rows: np.ndarray, what) -> str:
    # CSV lines count from the header (line 1), other formats' rows from 0.
    return listing(table.path, rows, what)


def _degrees(table: SkyTable, column: str) -> tuple[np.ndarray, np.ndarray]:
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


def sky_positions(table: SkyTable, id_column: str = "id", ra_column: str = "ra",
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
