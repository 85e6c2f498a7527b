"""Reading and validating catalog tables (CSV, Parquet; FITS, ECSV, VOTable with astropy) for :mod:`gzmorph.data.catalog`.

Every check names the file and the offending line (CSV, the header being line 1) or
row (Parquet, counting from 0): a wrong or missing header, empty or duplicate ids,
non-numeric or out-of-range answer values, label rows whose image file is missing.
Columns that are not answers of the tree are ignored (a tree may use any subset of a
catalog's answer columns), except a tree column misspelt in case or spacing
(``class1.1``, ``Class 1.1``), which is an error rather than silently missing labels.
Broken tree sums only warn (:class:`LabelWarning`), with the report of
:func:`gzmorph.tree.check_labels`, because the rest of the data is still usable.
"""

from __future__ import annotations

import csv
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError
from gzmorph.tree import Tree, check_labels

__all__ = ["CatalogError", "LabelWarning", "read_catalog_table", "read_catalog_with_column", "parse_ids_text",
           "listing", "show_id", "user_stacklevel", "RANGE_TOL", "MAX_LISTED"]

# Values this far outside [0, 1] are errors; smaller overshoots (rounding in the
# published tables) are clipped.
RANGE_TOL = 1e-3
MAX_LISTED = 5
# Fits int64 and round-trips through str ("-0" does not: it would merge with "0").
_INT_ID = re.compile(r"0|-?[1-9]\d{0,17}")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_SPACE = re.compile(r"\s+")
# Warnings point past these modules, at the user's call.
_INTERNAL = ("gzmorph.data.catalog", "gzmorph.data.tables")


class LabelWarning(UserWarning):
    """Labels that break the tree's sum rules (the data is still usable)."""


def _where(path: Path, row: int) -> str:
    """Human location of a data row: CSV line number (header = line 1) or Parquet row."""
    return f"line {row + 2}" if path.suffix.lower() == ".csv" else f"row {row}"


def listing(path: Path, rows: np.ndarray, what) -> str:
    """``"FILE: line 3: <what(2)>; line 7: ..."`` for the first few offending rows."""
    shown = "; ".join(f"{_where(path, int(r))}: {what(int(r))}" for r in rows[:MAX_LISTED])
    more = f" (and {len(rows) - MAX_LISTED} more)" if len(rows) > MAX_LISTED else ""
    return f"{path}: {shown}{more}"


def user_stacklevel() -> int:
    """stacklevel that points a warning at the first caller outside this module."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") in _INTERNAL:
        frame, level = frame.f_back, level + 1
    return level


def show_id(value) -> str:
    """repr of an id without NumPy's type wrapper (``11``, not ``np.int64(11)``)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _blank(text: pd.Series) -> np.ndarray:
    """Bool mask of missing or whitespace-only cells."""
    text = text.astype("string").str.strip()
    return (text.isna() | (text == "")).fillna(True).to_numpy(dtype=bool)


def _parse_ids(raw: pd.Series, path: Path) -> np.ndarray:
    """Ids as int64 when all are integers, else strings; empty ids are errors."""
    text = raw.astype("string").str.strip()
    missing = np.flatnonzero(_blank(text))
    if len(missing):
        raise CatalogError(f"empty id in {listing(path, missing, lambda r: 'no value')}")
    return parse_ids_text(list(text.to_numpy(dtype=object)))


def _check_unique(ids: np.ndarray, path: Path) -> None:
    dup = pd.Series(ids).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        n_ids = pd.Series(ids[rows]).nunique()
        raise CatalogError(f"duplicate ids ({n_ids} id(s) repeated) in "
                           + listing(path, rows, lambda r: f"id {show_id(ids[r])}"))


def _check_id_column(columns: list[str], path: Path, id_column: str) -> None:
    """The id column must be in the header; a header of numbers is a missing header."""
    if id_column in columns:
        return
    hint = ""
    if any(_NUMBER.fullmatch(c) for c in columns):
        hint = " (the first line looks like data: is the header row missing?)"
    raise CatalogError(f"{path}: no id column {id_column!r} in the header {columns[:8]}{hint}; "
                       "pass id_column= (--id-column) if it has another name")


def _answer_key(name: str) -> str:
    return _SPACE.sub("", name).lower()


def _check_header(columns: list[str], path: Path, id_column: str, tree: Tree) -> None:
    # The id check first: a missing header's first row often repeats values (0.0).
    _check_id_column(columns, path, id_column)
    _check_header_dups(columns, path)
    # Columns outside the tree are ignored (a tree may use any subset of a catalog's
    # answers); only a column that is a tree column up to case and spaces is a typo.
    known = {_answer_key(c): c for c in tree.columns}
    for c in columns:
        near = known.get(_answer_key(c))
        if near is not None and c != near:
            raise CatalogError(f"{path}: answer column {c!r} in the header is not a column of tree "
                               f"{tree.name!r}; did you mean {near!r}? (names are case-sensitive)")


def _read_table(path: Path, id_column: str) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        try:
            # utf-8-sig: reads the byte-order mark spreadsheet programs write ("CSV UTF-8").
            with open(path, newline="", encoding="utf-8-sig") as fh:
                header = next(csv.reader(fh), None)
        except UnicodeDecodeError as exc:
            raise CatalogError(f"{path}: not a text CSV file ({exc})") from None
        if not header:
            raise CatalogError(f"{path}: empty file, expected a header line")
        # pandas would silently rename repeated names (x, x.1), so check the raw header
        # (after the id column, whose absence explains a header of repeated numbers).
        header = [h.strip() for h in header]
        _check_id_column(header, path, id_column)
        _check_header_dups(header, path)
        try:
            # Ids as text: keeps leading zeros, and big integer ids exact.
            return pd.read_csv(path, dtype={id_column: str}, skipinitialspace=True, encoding="utf-8-sig")
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{path}: cannot parse CSV ({exc})") from None
    if suffix in (".parquet", ".pq"):
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several unrelated types
            raise CatalogError(f"{path}: cannot read Parquet ({type(exc).__name__}: {exc})") from None
    from gzmorph.data.tablefile import ASTROPY_FORMATS, TABLE_FORMATS, read_table_file, table_format

    try:
        fmt = table_format(path)
    except CatalogError:
        raise CatalogError(f"{path}: unsupported catalog format {suffix!r}; use one of "
                           f"{', '.join(TABLE_FORMATS)}") from None
    if fmt in ASTROPY_FORMATS:  # FITS binary table, ECSV, VOTable (astropy)
        return read_table_file(path).frame
    raise CatalogError(f"{path}: unsupported catalog format {suffix!r}; use .csv or .parquet")


def _check_header_dups(header: list[str], path: Path) -> None:
    names = [h.strip() for h in header]
    if len(set(names)) != len(names):
        dups = sorted({c for c in names if names.count(c) > 1})
        raise CatalogError(f"{path}: header repeats column(s) {dups}")


def _labels_from_table(table: pd.DataFrame, path: Path, tree: Tree) -> np.ndarray:
    """``(N, n_answers)`` float32 labels with NaN for missing columns; range-checked."""
    labels = np.full((len(table), tree.n_answers), np.nan, dtype=np.float32)
    for j, col in enumerate(tree.columns):
        if col not in table.columns:
            continue
        raw = table[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & ~_blank(raw))
        if len(bad):
            raise CatalogError(f"non-numeric value in column {col!r}: "
                               + listing(path, bad, lambda r: repr(raw.iloc[r])))
        v = values.to_numpy(dtype=np.float64)
        out = np.flatnonzero((v < -RANGE_TOL) | (v > 1 + RANGE_TOL))
        if len(out):
            raise CatalogError(f"value outside [0, 1] in column {col!r}: "
                               + listing(path, out, lambda r: f"{v[r]:g}"))
        labels[:, j] = np.clip(v, 0.0, 1.0)
    return labels


def _warn_sums(table: pd.DataFrame, path: Path, tree: Tree, id_column: str) -> None:
    report = check_labels(table, tree, tol=RANGE_TOL, id_column=id_column)
    report = report[report["kind"] == "sum"]
    if len(report):
        shown = report.head(10).copy()
        shown.insert(0, "where", [_where(path, int(r)) for r in shown["row"]])
        warnings.warn(
            f"{path}: {len(report)} label sum(s) break the rules of tree {tree.name!r} "
            f"(a question's answers must sum to its parent answer) in "
            f"{report['row'].nunique()} row(s); first ones:\n"
            + shown.drop(columns=["row"]).to_string(index=False),
            LabelWarning,
            stacklevel=user_stacklevel(),
        )


def _resolve_paths(raw: pd.Series, base: Path, path: Path) -> np.ndarray:
    text = raw.astype("string").str.strip()
    empty = np.flatnonzero(_blank(text))
    if len(empty):
        raise CatalogError(f"empty image path in {listing(path, empty, lambda r: 'no value')}")
    resolved = [str(p if p.is_absolute() else (base / p).resolve()) for p in map(Path, text.to_numpy(dtype=object))]
    # A FITS path holding {band} names one file per band (gzmorph.data.fits): each is checked when read.
    missing = np.flatnonzero([not Path(p).is_file() and "{band}" not in p for p in resolved])
    if len(missing):
        raise CatalogError(f"{len(missing)} label row(s) without an image: "
                           + listing(path, missing, lambda r: f"{resolved[r]} does not exist"))
    return np.asarray(resolved, dtype=object)


def parse_ids_text(stems: list[str]) -> np.ndarray:
    """int64 when every id is an integer written canonically, else the strings.

    ``"007"`` stays a string: converting it would change the id written to output
    files and break the match with a file called ``007.jpg``.
    """
    if all(_INT_ID.fullmatch(s) for s in stems):
        return np.array([int(s) for s in stems], dtype=np.int64)
    return np.asarray(stems, dtype=object)


def read_catalog_table(
    path: Path, tree: Tree, id_column: str, path_column: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read and validate a catalog table.

    Parameters
    ----------
    path : Path
        ``.csv``, ``.parquet`` or ``.pq`` file (or an astropy table: FITS, ECSV, VOTable).
    tree : Tree
    id_column : str
    path_column : str or None
        Image path column; relative paths are resolved against ``path``'s folder.
        When absent from the table, every path is ``None``.

    Returns
    -------
    ids : ndarray, shape (N,)
        int64 or object strings.
    paths : ndarray, shape (N,), object
    labels : ndarray, shape (N, tree.n_answers), float32
        NaN where the table lacks a column or a value.
    """
    return _read_checked(path, tree, id_column, path_column)[1:]


def read_catalog_with_column(
    path: Path, tree: Tree, id_column: str, path_column: str | None, column: str, why: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`read_catalog_table` and the raw values of one more ``column`` (read once).

    Returns the ids, paths and labels, and ``values`` (ndarray (N,)): ``float64`` when
    the column is numeric, else ``object`` (the cells as read: text stays text, so an
    error can name it).  A table without ``column`` is a :class:`CatalogError` naming
    the file, the column and ``why`` it was asked for.
    """
    table, ids, paths, labels = _read_checked(path, tree, id_column, path_column)
    if column not in table.columns:
        shown = ", ".join(map(str, table.columns[:12])) + (", ..." if len(table.columns) > 12 else "")
        raise CatalogError(f"{path}: no column {column!r} ({why}); its columns: {shown}")
    values = table[column].to_numpy()
    return ids, paths, labels, (values.astype(np.float64) if values.dtype.kind in "iuf" else values.astype(object))


def _read_checked(path: Path, tree: Tree, id_column: str, path_column: str | None
                  ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """The table as read, and its validated ids, paths and labels (:func:`read_catalog_table`)."""
    table = _read_table(path, id_column)
    table.columns = [str(c).strip() for c in table.columns]
    _check_header(list(table.columns), path, id_column, tree)
    if len(table) == 0:
        raise CatalogError(f"{path}: no data rows after the header")
    ids = _parse_ids(table[id_column], path)
    _check_unique(ids, path)
    labels = _labels_from_table(table, path, tree)
    present = [c for c in tree.columns if c in table.columns]
    if present:
        _warn_sums(table[[id_column, *present]], path, tree, id_column)
    if path_column and path_column in table.columns:
        paths = _resolve_paths(table[path_column], path.parent.resolve(), path)
    else:
        paths = np.full(len(table), None, dtype=object)
    return table, ids, paths, labels
