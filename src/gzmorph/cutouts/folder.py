"""The folder ``gzmorph cutouts`` writes, and its journal (what makes resume exact).

::

    OUT/cutouts.json      settings, input digest, counts (the manifest; resume checks it)
    OUT/journal.sqlite    one row per finished input row: ok (cache key, file) or error (reason)
    OUT/images/<id>.fits  the cutouts (hard links into the cache where possible), .jpg for JPEG
    OUT/catalog.parquet   the fetched rows: the input's columns in input order, ``path`` and
                          ``cutout_service``, ``cutout_pixscale`` (arcsec/px), ``cutout_bands``,
                          ``cutout_size``, ``cutout_format``: a catalogue for ``gzmorph predict``
    OUT/errors.csv        the rows that are not fetched: input row, id, ra, dec, reason, attempts

Every input row ends in exactly one of ``catalog.parquet`` and ``errors.csv``.  The
journal is committed row by row, so a killed job loses at most the requests in flight;
the two tables are written (atomically) when the job ends.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gzmorph.errors import CatalogError, OutputError
from gzmorph.outputs import atomic_write

__all__ = ["CutoutFolder", "MANIFEST", "CATALOG", "ERRORS", "CUTOUT_COLUMNS", "FORMAT"]

MANIFEST, JOURNAL, CATALOG, ERRORS, IMAGES = "cutouts.json", "journal.sqlite", "catalog.parquet", "errors.csv", "images"
FORMAT = "gzmorph-cutouts"
#: Columns a fetch adds to the input's, with their units and descriptions.
CUTOUT_COLUMNS = {
    "path": ("", "cutout file, relative to the folder"),
    "cutout_service": ("", "cutout service"),
    "cutout_pixscale": ("arcsec / pix", "pixel scale of the cutout"),
    "cutout_bands": ("", "bands of the cutout, blue to red"),
    "cutout_size": ("pix", "side of the cutout"),
    "cutout_format": ("", "file format of the cutout"),
}
# Settings that must be equal for a resumed job to continue an existing folder.
_SAME = ("input_sha256", "service", "base", "params", "size", "pixscale", "bands", "id_column", "ra_column",
         "dec_column")


class CutoutFolder:
    """The output folder of one cutouts job; :meth:`open` creates it or checks it for resume."""

    def __init__(self, root: Path, manifest: dict[str, Any]) -> None:
        self.root, self.manifest = root, manifest
        (root / IMAGES).mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / JOURNAL, timeout=60)
        # A commit per row must survive a killed process, not a power cut: no fsync per row.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (row INTEGER PRIMARY KEY, status TEXT NOT NULL, "
                         "reason TEXT, attempts INTEGER, key TEXT, file TEXT, wcs_pixscale REAL)")
        self._db.commit()

    @classmethod
    def open(cls, root: str | Path, manifest: dict[str, Any], resume: bool) -> "CutoutFolder":
        """Create ``root`` for a new job, or continue it (``resume``) if its settings are ``manifest``'s.

        Raises
        ------
        OutputError
            ``root`` is a file, a non-empty folder of something else, a folder of a job
            and ``resume`` is False, or a job of other settings.
        """
        root = Path(root).expanduser()
        if root.exists() and not root.is_dir():
            raise OutputError(f"--out {root}: is a file; cutouts go to a folder")
        old = root / MANIFEST
        if old.is_file():
            if not resume:
                raise OutputError(f"--out {root}: holds a cutouts job already; add --resume to continue it, "
                                  "or choose another folder")
            previous = json.loads(old.read_text())
            changed = [k for k in _SAME if previous.get(k) != manifest.get(k)]
            if changed:
                raise OutputError(f"--out {root}: its job has other settings ({', '.join(changed)}: "
                                  + "; ".join(f"{previous.get(k)!r} there, {manifest.get(k)!r} now"
                                              for k in changed[:3]) + "); use another folder")
            manifest = {**previous, "resumed": previous.get("resumed", 0) + 1}
        elif root.is_dir() and any(root.iterdir()):
            raise OutputError(f"--out {root}: a folder that is not empty and holds no cutouts job; "
                              "choose a new or empty folder")
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root, manifest)
        folder.write_manifest()
        return folder

    def write_manifest(self) -> None:
        text = json.dumps(self.manifest, indent=2, default=str) + "\n"
        atomic_write(self.root / MANIFEST, lambda tmp: tmp.write_text(text))

    def close(self) -> None:
        self._db.close()

    def done(self, retry_errors: bool = False) -> set[int]:
        """Input rows already finished (ok, and error rows unless ``retry_errors``)."""
        query = "SELECT row FROM rows" + (" WHERE status = 'ok'" if retry_errors else "")
        return {r for (r,) in self._db.execute(query)}

    def image_name(self, image_id, suffix: str) -> str:
        return f"{IMAGES}/{image_id}{suffix}"

    def record_ok(self, row: int, image_id, source: Path, suffix: str, key: str, attempts: int,
                  wcs_pixscale: float | None) -> None:
        """Put the cached file ``source`` in the folder (a hard link where possible) and journal the row."""
        rel = self.image_name(image_id, suffix)
        target = self.root / rel
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # another file system, or links not allowed
            shutil.copyfile(source, tmp)
        os.replace(tmp, target)
        self._record(row, "ok", None, attempts, key, rel, wcs_pixscale)

    def record_error(self, row: int, reason: str, attempts: int) -> None:
        self._record(row, "error", reason, attempts, None, None, None)

    def _record(self, *values) -> None:
        self._db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?, ?, ?, ?, ?)", values)
        self._db.commit()

    def journal(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM rows ORDER BY row", self._db)

    def assemble(self, frame: pd.DataFrame, ids: np.ndarray, ra: np.ndarray, dec: np.ndarray,
                 cutout: dict[str, Any], units: dict[str, str], descriptions: dict[str, str],
                 per_row: dict[str, np.ndarray] | None = None) -> tuple[int, int]:
        """Write ``catalog.parquet`` and ``errors.csv`` from the journal; return (n ok, n errors).

        ``cutout`` holds the values of the ``cutout_*`` columns (the same for every row),
        ``per_row`` further columns with a value per input row (``healpix``).

        Raises
        ------
        CatalogError
            A row of the input has no journal entry (a bug, never a silent loss).
        """
        journal = self.journal().set_index("row")
        missing = sorted(set(range(len(frame))) - set(journal.index))
        if missing:
            raise CatalogError(f"{len(missing)} input row(s) have neither a cutout nor an error, e.g. row {missing[0]}")
        ok = journal.index[journal["status"] == "ok"].to_numpy()
        bad = journal.index[journal["status"] != "ok"].to_numpy()
        catalog = frame.iloc[ok].reset_index(drop=True)
        # Ids as gzmorph reads them everywhere (int64 when all are integers), in their column.
        catalog[self.manifest["id_column"]] = ids[ok]
        catalog["path"] = journal.loc[ok, "file"].to_numpy()
        for name, value in cutout.items():
            catalog[f"cutout_{name}"] = value
        for name, values in (per_row or {}).items():
            catalog[name] = np.asarray(values)[ok]
        self.manifest.update(finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), n_ok=len(ok),
                             n_errors=len(bad))
        self._write_catalog(catalog, units, descriptions)
        errors = pd.DataFrame({"row": bad, self.manifest["id_column"]: ids[bad], "ra": ra[bad], "dec": dec[bad],
                               "reason": journal.loc[bad, "reason"].to_numpy(),
                               "attempts": journal.loc[bad, "attempts"].to_numpy()})
        atomic_write(self.root / ERRORS, lambda tmp: errors.to_csv(tmp, index=False))
        self.write_manifest()
        return len(ok), len(bad)

    def _write_catalog(self, catalog: pd.DataFrame, units: dict[str, str], descriptions: dict[str, str]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(catalog, preserve_index=False)
        fields = []
        for f in table.schema:  # units and descriptions travel as field metadata
            unit, text = CUTOUT_COLUMNS.get(f.name, (units.get(f.name, ""), descriptions.get(f.name, "")))
            meta = {k: v for k, v in (("unit", unit), ("description", text)) if v}
            fields.append(f.with_metadata(meta) if meta else f)
        schema = pa.schema(fields, metadata={**(table.schema.metadata or {}),
                                             b"gzmorph_cutouts": json.dumps(self.manifest, default=str).encode()})
        atomic_write(self.root / CATALOG, lambda tmp: pq.write_table(table.cast(schema), tmp))
