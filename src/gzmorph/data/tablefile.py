"""Table files as astronomers hold them: CSV, Parquet, FITS binary tables, ECSV, VOTable.

:func:`read_table_file` reads any of them into a pandas DataFrame in the file's row and
column order, and keeps what the format says about each column (unit, description), so
the columns can be carried into outputs that hold units.  CSV and Parquet are read with
pandas/pyarrow (Parquet field metadata ``unit``/``description``, as gzmorph writes it);
FITS, ECSV and VOTable with astropy (extra ``survey``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from gzmorph.errors import CatalogError

__all__ = ["TableFile", "read_table_file", "table_format", "TABLE_FORMATS", "ASTROPY_FORMATS"]

#: Suffix -> format name (astropy's names where astropy reads it).
TABLE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits", ".fit": "fits",
                 ".fits.gz": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".votable": "votable",
                 ".xml": "votable"}
ASTROPY_FORMATS = ("fits", "ascii.ecsv", "votable")


@dataclass
class TableFile:
    """A table read from disk.

    Parameters
    ----------
    frame : DataFrame
        The rows in file order, the columns in file order.
    path : Path
    units : dict
        Column -> unit string, for the columns whose file gave one.
    descriptions : dict
        Column -> description, likewise.
    """

    frame: pd.DataFrame
    path: Path
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    def where(self, row: int) -> str:
        """Human location of data row ``row`` (CSV line with the header as line 1, else row from 0)."""
        return f"line {row + 2}" if table_format(self.path) == "csv" else f"row {row}"


def table_format(path: str | Path) -> str:
    """The format of a table file by its suffix; an unknown suffix is a :class:`CatalogError`."""
    name = str(path).lower()
    for suffix in sorted(TABLE_FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return TABLE_FORMATS[suffix]
    raise CatalogError(f"{path}: unsupported table format; use one of {', '.join(TABLE_FORMATS)}")


def _read_astropy(path: Path, fmt: str) -> TableFile:
    from gzmorph.data.composite import require_survey_extra

    require_survey_extra()
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
    units = {n: str(table[n].unit) for n in table.colnames if getattr(table[n], "unit", None) is not None}
    descriptions = {n: str(table[n].description) for n in table.colnames if table[n].description}
    frame = table.to_pandas(index=False)
    for name in frame.columns:  # FITS strings can come back as bytes
        if frame[name].dtype == object and len(frame) and isinstance(frame[name].iloc[0], bytes):
            frame[name] = frame[name].str.decode("utf-8").str.strip()
    return TableFile(frame, path, units, descriptions)


def _read_parquet(path: Path) -> TableFile:
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types
        raise CatalogError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    units, descriptions = {}, {}
    for f in arrow.schema:
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        if meta.get("unit"):
            units[f.name] = meta["unit"]
        if meta.get("description"):
            descriptions[f.name] = meta["description"]
    return TableFile(arrow.to_pandas(), path, units, descriptions)


def read_table_file(path: str | Path, id_column: str | None = None) -> TableFile:
    """Read a table file (CSV, Parquet, FITS binary table, ECSV, VOTable).

    Parameters
    ----------
    path : str or Path
    id_column : str, optional
        Read as text from CSV, so that ids keep leading zeros and large integers stay exact.

    Returns
    -------
    TableFile

    Raises
    ------
    CatalogError
        Missing or unreadable file, unsupported suffix, array-valued columns, no rows.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise CatalogError(f"{path}: no such file")
    fmt = table_format(path)
    if fmt == "csv":
        try:
            frame = pd.read_csv(path, dtype={id_column: str} if id_column else None, skipinitialspace=True,
                                encoding="utf-8-sig")
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
            raise CatalogError(f"{path}: cannot parse CSV ({exc})") from None
        table = TableFile(frame, path)
    elif fmt == "parquet":
        table = _read_parquet(path)
    else:
        table = _read_astropy(path, fmt)
    table.frame.columns = [str(c).strip() for c in table.frame.columns]
    if len(table.frame) == 0:
        raise CatalogError(f"{path}: no data rows")
    return table
