"""Science outputs: predictions as a catalogue to join, cut and publish.

* **The user's columns** (:func:`kept_columns`): ``--keep-columns ra,dec,z`` or
  ``--keep-all`` read those columns from the input catalogue (CSV, Parquet, FITS
  binary table, ECSV, VOTable, or a ``gzmorph cutouts`` folder) and :meth:`KeptColumns.join`
  puts them after the id column of every output table (predictions and error rows),
  matched by id, so the rows stay in input order and joinable.  A kept column whose
  name is also a prediction column is renamed ``input_<name>``.
* **Units, descriptions, provenance** (:func:`column_docs`, :func:`provenance`): every
  prediction column has a description (and a unit where it has one); kept columns keep
  the input's.  The provenance (gzmorph version, model digests and names, preset, tree,
  TTA, triage thresholds, calibration if any, date) goes into the table's metadata.
* **Formats** (:func:`write_science`): ``.fits``, ``.ecsv`` and ``.vot`` are written as
  an astropy Table (units as astropy units; FITS gets descriptions as ``TCOMMn``
  keywords); Parquet carries the same in its schema (:func:`annotate_schema`: field
  metadata ``unit``/``description``, schema metadata ``gzmorph`` as JSON).  A column a
  format cannot hold is an :class:`~gzmorph.errors.OutputError` naming the column.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from gzmorph import __version__
from gzmorph.errors import CatalogError, ConfigError, OutputError

__all__ = ["SCIENCE_FORMATS", "science_format", "KeptColumns", "kept_columns", "column_docs", "provenance",
           "annotate_schema", "write_science", "catalog_file", "OutputExtras", "output_extras", "written_date"]

SCIENCE_FORMATS = {".fits": "fits", ".ecsv": "ascii.ecsv", ".vot": "votable", ".votable": "votable"}
_CUTOUTS_MANIFEST, _CUTOUTS_CATALOG = "cutouts.json", "catalog.parquet"  # gzmorph.cutouts.folder's names


def science_format(path: str | Path) -> str | None:
    """astropy's format name for a science output (``.fits``, ``.ecsv``, ``.vot``), else None."""
    return SCIENCE_FORMATS.get(Path(path).suffix.lower())


def catalog_file(source: Any) -> Path | None:
    """The table file behind a prediction source (a catalogue file, a cutouts folder's), else None."""
    if not isinstance(source, (str, Path)):
        return None
    path = Path(source).expanduser()
    if path.is_dir():
        return path / _CUTOUTS_CATALOG if (path / _CUTOUTS_MANIFEST).is_file() else None
    return path if path.is_file() else None


@dataclass
class KeptColumns:
    """The user's columns of the input catalogue, by id.

    Parameters
    ----------
    ids : ndarray
        The catalogue's ids (int64 or strings, as :class:`~gzmorph.data.catalog.Catalog` has them).
    table : pyarrow.Table
        The kept columns, one row per id, in the catalogue's order (one Arrow schema for
        every chunk of the output).
    units, descriptions : dict
        Of the kept columns, as the input file gave them.
    """

    ids: np.ndarray
    table: pa.Table
    units: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._index = pd.Index([str(v) for v in self.ids])

    @property
    def names(self) -> list[str]:
        return list(self.table.column_names)

    def join(self, table: pa.Table) -> pa.Table:
        """``table`` with the kept columns inserted after its first (id) column, matched by id."""
        pos = self._index.get_indexer([str(v) for v in table.column(0).to_pylist()])
        # -1: an id the catalogue does not have: null cells, never another row's values.
        kept = self.table.take(pa.array(pos, type=pa.int64(), mask=pos < 0))
        columns = [table.column(0), *kept.columns, *table.columns[1:]]
        names = [table.column_names[0], *kept.column_names, *table.column_names[1:]]
        return pa.table(columns, names=names)


def kept_columns(source: Any, id_column: str, keep: Sequence[str] | None, keep_all: bool,
                 reserved: Sequence[str]) -> KeptColumns | None:
    """Read the columns to keep from the catalogue behind ``source`` (None when nothing is kept).

    Parameters
    ----------
    source : path
        The prediction source: a catalogue file or a ``gzmorph cutouts`` folder.
    id_column : str
        The catalogue's id column (as the prediction job reads it).
    keep : sequence of str, optional
        Column names (a name that is not in the file matches the one column that differs only
        in case); ``keep_all``: every column but the id.
    reserved : sequence of str
        Names of the prediction columns: a kept column of the same name becomes ``input_<name>``.

    Raises
    ------
    ConfigError
        Columns asked for a source that is not a catalogue (an image folder, a cache).
    CatalogError
        A column the catalogue does not have (naming the file and its columns).
    """
    from gzmorph.data.tablefile import read_table_file
    from gzmorph.data.tables import parse_ids_text

    if not keep and not keep_all:
        return None
    path = catalog_file(source)
    if path is None:
        raise ConfigError(f"--keep-columns/--keep-all need a catalogue (a CSV, Parquet, FITS, ECSV or VOTable "
                          f"file, or a `gzmorph cutouts` folder), not {source}")
    table = read_table_file(path, id_column)
    frame = table.frame
    if keep_all:
        names = [c for c in frame.columns if c != id_column]
    else:  # exact names, else the one case-insensitive match (RA for ra)
        lower = pd.Series(list(frame.columns)).str.lower()
        names = [c if c in frame.columns or (lower == c.lower()).sum() != 1
                 else frame.columns[int(np.flatnonzero(lower == c.lower())[0])] for c in keep]
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise CatalogError(f"{path}: no column(s) {missing} to keep (columns: {', '.join(map(str, frame.columns))})")
    cat_ids = parse_ids_text([str(v).strip() for v in frame[id_column]])
    rename = {c: f"input_{c}" for c in names if c in set(reserved)}
    kept = frame[names].rename(columns=rename)
    try:
        arrow = pa.Table.from_pandas(kept, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:  # e.g. a column of numbers and words
        raise CatalogError(f"{path}: a kept column has mixed types ({exc})") from None
    units = {rename.get(c, c): u for c, u in table.units.items() if c in names}
    texts = {rename.get(c, c): d for c, d in table.descriptions.items() if c in names}
    return KeptColumns(cat_ids, arrow, units, texts)


def column_docs(tree: Any) -> dict[str, tuple[str, str]]:
    """Name -> (unit, description) of every prediction column of ``tree`` (and the extra ones)."""
    docs: dict[str, tuple[str, str]] = {
        "needs_expert": ("", "some reached question's confidence is below its triage threshold"),
        "recentred": ("", "the image was recentred on its galaxy (False: no galaxy found, centre crop used)"),
        "path": ("", "image file"), "reason": ("", "why the image could not be predicted")}
    for q in tree.questions:
        for answer, col in zip(q.answers, q.columns):
            docs[col] = ("", f"{q.name} {answer!r}: predicted vote fraction, cumulative (Kaggle convention); {q.text}")
        docs[f"{q.name}_answer"] = ("", f"{q.name}: column of the most likely answer")
        docs[f"{q.name}_confidence"] = ("", f"{q.name}: 1 - H/log n of the renormalised answers")
        docs[f"{q.name}_reach"] = ("", f"{q.name}: probability that the question is reached")
        docs[f"{q.name}_needs_expert"] = ("", f"{q.name}: reached and less confident than its threshold")
    return docs


def _preset_of(config: Any) -> str:
    from gzmorph.training.recipes import PRESETS

    model, augment = getattr(config, "model", None), getattr(config, "augment", None)
    same_model = [name for name, preset in PRESETS.items() if preset.model == model]
    # Presets that share a network differ by their crops (p4m / p4m-72, paper / paper-recentred).
    found = [name for name in same_model if PRESETS[name].augment == augment] or same_model
    return found[0] if found else "custom"


def provenance(manifest: Mapping[str, Any], ensemble: Any, source: Any, calibration: Any = None) -> dict[str, Any]:
    """Flat, short-keyed provenance of a prediction job (FITS header keywords are 8 characters).

    ``manifest`` is the job's resume record (model digests, weights, TTA, thresholds).
    """
    return {"GZMORPH": __version__, "MODELS": ",".join(manifest["model_weights"]),
            "MODNAMES": ",".join(Path(str(name)).name for name in manifest["models"]),
            "WEIGHTS": ",".join(f"{w:.6g}" for w in manifest["weights"]),
            "PRESET": ",".join(_preset_of(run.config) for run in ensemble.runs),
            "TREE": ensemble.tree.name, "TTA": manifest["tta"], "CHECKPT": manifest["which"],
            "TRIAGE": json.dumps({k: round(float(v), 6) for k, v in manifest["thresholds"].items()}),
            "CALIB": "none" if calibration is None else str(calibration),
            "SOURCE": str(getattr(source, "source", source)),
            "DATE": written_date()}


def written_date() -> str:
    """UTC time of writing; ``SOURCE_DATE_EPOCH`` (the reproducible-builds convention) fixes it."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = time.gmtime(int(epoch)) if epoch.isdigit() else time.gmtime()
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", when)


@dataclass
class OutputExtras:
    """What a prediction output carries besides the predictions.

    :class:`~gzmorph.inference.parts.PartStore` calls it when it assembles the parts:
    :meth:`table` on every chunk (kept columns), :meth:`schema` for Parquet, :meth:`write`
    for the science formats.
    """

    kept: KeptColumns | None
    docs: dict[str, tuple[str, str]]
    meta: dict[str, Any]

    @property
    def kept_names(self) -> list[str]:
        return self.kept.names if self.kept is not None else []

    def table(self, table: pa.Table) -> pa.Table:
        return self.kept.join(table) if self.kept is not None else table

    def schema(self, schema: pa.Schema) -> pa.Schema:
        return annotate_schema(schema, self.docs, self.meta)

    def write(self, tables: Sequence[pa.Table], path: Path) -> None:
        write_science(pa.concat_tables(list(tables)) if tables else pa.table({}), path, self.docs, self.meta)


def output_extras(ensemble: Any, manifest: Mapping[str, Any], source: Any, catalog: Any,
                  keep: Sequence[str] | None = None, keep_all: bool = False,
                  calibration: Any = None) -> OutputExtras:
    """The kept columns, column docs and provenance of a prediction job writing one file."""
    from gzmorph.inference.table import output_schema

    reserved = [*output_schema(ensemble.tree, catalog.id_column, pa.string()).names, "recentred", "path", "reason"]
    kept = kept_columns(source, catalog.id_column, keep, keep_all, reserved)
    docs = column_docs(ensemble.tree)
    if kept is not None:
        docs.update({n: (kept.units.get(n, ""), kept.descriptions.get(n, "")) for n in kept.names})
    return OutputExtras(kept, docs, provenance(manifest, ensemble, source, calibration))


def annotate_schema(schema: pa.Schema, docs: Mapping[str, tuple[str, str]], meta: Mapping[str, Any]) -> pa.Schema:
    """Parquet: units and descriptions as field metadata, the provenance as schema metadata ``gzmorph``."""
    fields = []
    for f in schema:
        unit, text = docs.get(f.name, ("", ""))
        extra = {k: v for k, v in (("unit", unit), ("description", text)) if v}
        fields.append(f.with_metadata({**(f.metadata or {}), **extra}) if extra else f)
    return pa.schema(fields, metadata={**(schema.metadata or {}), b"gzmorph": json.dumps(dict(meta)).encode()})


def _astropy_table(table: pa.Table, docs: Mapping[str, tuple[str, str]], meta: Mapping[str, Any]):
    import astropy.units as u
    from astropy.table import Table

    out = Table.from_pandas(table.to_pandas())  # missing strings (no answer) become masked
    out.meta.update(meta)
    for name in out.colnames:
        unit, text = docs.get(name, ("", ""))
        if unit and hasattr(out[name], "unit") and not hasattr(out[name], "jd"):  # Time columns have no unit
            out[name].unit = u.Unit(unit, parse_strict="silent")
        if text:
            out[name].info.description = text
    return out


def _check_writable(table: pa.Table, path: Path, fmt: str, docs, meta) -> str:
    """The first column a format refuses (for the message), else ''."""
    import io

    for name in table.column_names:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _astropy_table(table.select([name]), docs, {}).write(io.BytesIO(), format=fmt)
        except Exception as exc:  # noqa: BLE001 - astropy's writers raise many types
            return f"column {name!r} ({table.schema.field(name).type}): {type(exc).__name__}: {exc}"
    return ""


def write_science(table: pa.Table, path: str | Path, docs: Mapping[str, tuple[str, str]],
                  meta: Mapping[str, Any]) -> None:
    """Write ``table`` as FITS, ECSV or VOTable (by suffix), atomically.

    Raises
    ------
    OutputError
        The format cannot hold a column (named), or the suffix is not a science format.
    """
    from gzmorph.runtime import atomic_write

    from gzmorph.data.composite import require_survey_extra

    path = Path(path)
    fmt = science_format(path)
    if fmt is None:
        raise OutputError(f"{path}: not a science output (.fits, .ecsv, .vot)")
    require_survey_extra()  # astropy
    astro = _astropy_table(table, docs, meta)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # long FITS keywords become HIERARCH cards, as intended
            if fmt == "fits":
                _write_fits(astro, tmp, docs)
            elif fmt == "votable":
                _write_votable(astro, tmp, meta)
            else:
                # tmp is the empty file atomic_write just created for this call (a unique name)
                astro.write(tmp, format=fmt, overwrite=True)

    try:
        atomic_write(path, write)
    except Exception as exc:  # noqa: BLE001 - astropy's writers raise many types
        culprit = _check_writable(table, path, fmt, docs, meta)
        raise OutputError(f"{path}: {fmt} cannot hold " + (culprit or f"this table ({type(exc).__name__}: {exc})")
                          + "; choose another output format or leave the column out") from None


def _write_fits(astro: Any, path: Path, docs: Mapping[str, tuple[str, str]]) -> None:
    from astropy.io import fits

    hdu = fits.table_to_hdu(astro)
    for i, name in enumerate(astro.colnames, start=1):  # FITS has no column descriptions: TCOMMn by convention
        text = docs.get(name, ("", ""))[1] or (astro[name].info.description or "")
        if text:
            hdu.header[f"TCOMM{i}"] = text  # long values continue on CONTINUE cards
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, output_verify="silentfix")


def _write_votable(astro: Any, path: Path, meta: Mapping[str, Any]) -> None:
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    vot = from_table(astro)
    for key, value in meta.items():  # provenance as INFO elements of the resource, the VO's convention
        vot.resources[0].infos.append(Info(name=key, value=str(value)))
    vot.to_xml(str(path))

