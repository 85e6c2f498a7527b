"""Resumable prediction output: one part store, one manifest, one resume rule.

Both backends write their rows in *chunks* of ``chunk_rows`` consecutive inputs.
Each finished chunk ``k`` becomes ``part-<k>.parquet`` (its predictions) in a part
directory, and its error rows (id, path, reason) become ``part-<k>.parquet`` in an
error directory; the prediction part is written last and atomically, so the parts
that exist are exactly the finished chunks.

* Single machine (:func:`gzmorph.inference.predict.predict_to_file`): the parts live
  in ``<output>.parts/`` and are concatenated in input order into the output file
  (one Parquet row group per chunk, or CSV), the error rows into
  ``<output>.errors.csv``, and the directory is removed.  The settings are then
  kept in ``<output>.manifest.json`` with the sizes of the finished files.
* Ray (:func:`gzmorph.inference.ray.predict_ray`): the part directory *is* the
  output, and ``<output>.errors/`` holds the error parts.

The manifest (:func:`gzmorph.inference.job.job_manifest`: models, weights, TTA, thresholds, inputs,
chunking) is stored as ``_manifest.json`` in the part directory ("_": Parquet readers
skip it).  The resume rule is the same for both backends: without ``resume`` a job
starts over; with ``resume`` it keeps the finished chunks of a job with the same
manifest and refuses one with other settings.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gzmorph.errors import OutputError
from gzmorph.inference.table import CSV_FLOAT, ERROR_COLUMNS
from gzmorph.runtime import atomic_write, refuse_overwrite

__all__ = ["PartStore", "finished_output", "MANIFEST", "check_outputs", "model_files", "single_machine_store",
           "output_format", "errors_path", "manifest_path", "adapt_path", "parts_dir", "ray_errors_dir", "read_science",
           "SCIENCE_SUFFIXES"]

MANIFEST = "_manifest.json"


#: Science outputs (astropy Tables, :mod:`gzmorph.inference.science`): suffix -> format.
SCIENCE_SUFFIXES = {".fits": "fits", ".ecsv": "ecsv", ".vot": "votable", ".votable": "votable"}


def output_format(path: str | Path) -> str:
    """``"csv"``, ``"parquet"``, or a science format (``"fits"``, ``"ecsv"``, ``"votable"``) from the suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in SCIENCE_SUFFIXES:
        return SCIENCE_SUFFIXES[suffix]
    raise OutputError(f"output file {path}: suffix must be .csv or .parquet, or .fits, .ecsv or .vot for an "
                      f"astropy table, not {suffix!r}")


def read_science(path: str | Path) -> pd.DataFrame:
    """A FITS, ECSV or VOTable output read back (with astropy) as a DataFrame."""
    from astropy.table import Table

    names = {"fits": "fits", "ecsv": "ascii.ecsv", "votable": "votable"}
    return Table.read(path, format=names[output_format(path)]).to_pandas()


def errors_path(out: str | Path) -> Path:
    """The error side file of an output file: ``<output>.errors.csv`` next to it.

    Named after the whole output name, so ``x.csv`` and ``x.parquet`` in one folder
    never share (and erase) one error file.
    """
    out = Path(out)
    return out.with_name(out.name + ".errors.csv")


def manifest_path(out: str | Path) -> Path:
    """The settings record of a finished output: ``<output>.manifest.json`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def adapt_path(out: str | Path) -> Path:
    """The BatchNorm statistics a ``--adapt-bn`` job estimated: ``<output>.adapt_bn.pt`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".adapt_bn.pt")


def parts_dir(out: str | Path) -> Path:
    """Where a single-machine job keeps its finished chunks: ``<output>.parts/``."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def ray_errors_dir(out: str | Path) -> Path:
    """The error side directory of a Ray output directory: ``<out>.errors/`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".errors")


def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def _changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(k for k in set(old) | set(new) if k != "finished" and old.get(k) != new.get(k))
    if "model_weights" not in keys:
        return keys
    # Say which model changed: the run whose weights are not those of the interrupted job.
    olds, news = old.get("model_weights") or [], new.get("model_weights") or []
    runs = [name for k, name in enumerate(new.get("models") or [])
            if k >= len(olds) or k >= len(news) or olds[k] != news[k]]
    return [k if k != "model_weights" else f"model_weights: the weights of {', '.join(runs) or 'a run'} "
            "changed" for k in keys]


def _chunk_of(path: Path) -> int:
    return int(path.name[len("part-"):-len(".parquet")])


class PartStore:
    """The finished chunks of one prediction job.

    Parameters
    ----------
    directory : path
        The part directory (created).
    errors_dir : path
        Where the error parts go.
    manifest : dict
        From :func:`gzmorph.inference.job.job_manifest`.
    resume : bool
        Keep the chunks of an earlier run with the same manifest (others raise
        :class:`~gzmorph.errors.OutputError`); without it, start over.
    """

    def __init__(self, directory: str | Path, errors_dir: str | Path, manifest: Mapping[str, Any],
                 resume: bool) -> None:
        self.dir, self.errors_dir = Path(directory), Path(errors_dir)
        self.manifest = _normalised(dict(manifest))
        if self.dir.exists() and not self.dir.is_dir():
            raise OutputError(f"{self.dir}: exists and is not a directory; choose another output")
        path = self.dir / MANIFEST
        if self.dir.exists() and any(self.dir.iterdir()) and not path.is_file():
            raise OutputError(f"{self.dir}: not empty and not a gzmorph output (no {MANIFEST}); "
                              "choose another output")
        if not _only_parts(self.errors_dir):  # it is deleted on a fresh start: only if it holds our parts
            raise OutputError(f"{self.errors_dir}: not empty and not the error parts of a gzmorph job; "
                              "move it or choose another output")
        if resume and path.is_file():
            changed = _changed(json.loads(path.read_text()), self.manifest)
            if changed:
                raise OutputError(f"cannot resume {self.dir}: the job's settings differ from the interrupted "
                                  f"run's ({', '.join(changed)}); rerun without --resume to start over")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
            shutil.rmtree(self.errors_dir, ignore_errors=True)
            self.dir.mkdir(parents=True)
            text = json.dumps(self.manifest, indent=2) + "\n"
            atomic_write(path, lambda tmp: tmp.write_text(text))
        # Temporary files of a killed run (atomic_write's hidden names).
        for stale in [*self.dir.glob(".*.tmp"), *self.errors_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)

    def part_path(self, k: int) -> Path:
        return self.dir / f"part-{k:06d}.parquet"

    def errors_part_path(self, k: int) -> Path:
        return self.errors_dir / f"part-{k:06d}.parquet"

    def done(self) -> set[int]:
        """Chunks whose prediction part exists (it is written last: they are complete)."""
        return {_chunk_of(p) for p in self.dir.glob("part-*.parquet")}

    def write(self, k: int, table: pa.Table, errors: pa.Table) -> None:
        """Store chunk ``k``: its error rows (if any), then its predictions (marks it done)."""
        self.errors_part_path(k).unlink(missing_ok=True)  # left by an earlier killed run
        if errors.num_rows:
            self.errors_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.errors_part_path(k), lambda tmp: pq.write_table(errors, tmp))
        atomic_write(self.part_path(k), lambda tmp: pq.write_table(table, tmp))

    def errors(self, k: int) -> pa.Table | None:
        path = self.errors_part_path(k)
        return pq.read_table(path) if path.exists() else None

    def counts(self) -> tuple[int, int]:
        """(rows predicted, rows failed) over the finished chunks."""
        done = self.done()
        n_pred = sum(pq.ParquetFile(self.part_path(k)).metadata.num_rows for k in done)
        n_fail = sum(pq.ParquetFile(p).metadata.num_rows for p in self.errors_dir.glob("part-*.parquet")
                     if _chunk_of(p) in done)
        return n_pred, n_fail

    def _checked_parts(self, n_chunks: int, expected_ids: Callable[[int], np.ndarray]) -> Iterator[pa.Table]:
        # The chunk tables in order, each checked to account for exactly its inputs.
        for k in range(n_chunks):
            table, errors = pq.read_table(self.part_path(k)), self.errors(k)
            got = [str(v) for v in table.column(0).to_pylist()]
            got += [str(v) for v in errors.column(0).to_pylist()] if errors is not None else []
            if sorted(got) != sorted(str(v) for v in expected_ids(k)):
                raise OutputError(f"{self.part_path(k)}: rows do not match the inputs of chunk {k}; the inputs "
                                  "changed since the interrupted run: rerun without --resume")
            yield table

    def assemble(self, out: str | Path, n_chunks: int, columns: list[str],
                 expected_ids: Callable[[int], np.ndarray], extras: Any = None) -> tuple[int, int]:
        """Concatenate all chunks into ``out`` and its error file; return (n predicted, n failed).

        Parquet gets one row group per chunk; CSV the id and answer ``columns`` only;
        FITS/ECSV/VOTable one astropy Table.  ``extras``
        (:class:`gzmorph.inference.science.OutputExtras`) adds the user's kept columns
        after the id of every table, and units, descriptions and provenance.
        ``<out>.manifest.json`` is written once both files are whole.
        """
        out = Path(out)
        missing = sorted(set(range(n_chunks)) - self.done())
        if missing:
            raise RuntimeError(f"{out}: chunks {missing[:10]} are not finished")
        id_column = self.manifest["id_column"]
        join = extras.table if extras is not None else (lambda t: t)
        kept = extras.kept_names if extras is not None else []

        def parts() -> Iterator[pa.Table]:
            return map(join, self._checked_parts(n_chunks, expected_ids))

        def write_parquet(path: Path) -> None:
            schema = join(pq.read_table(self.part_path(0)).slice(0, 0)).schema
            with pq.ParquetWriter(path, extras.schema(schema) if extras is not None else schema) as writer:
                for table in parts():
                    writer.write_table(table)

        def write_csv(path: Path) -> None:
            with open(path, "w", newline="") as fh:
                fh.write(pd.DataFrame(columns=[id_column, *kept, *columns]).to_csv(index=False))
                for table in parts():
                    frame = table.select([id_column, *kept, *columns]).to_pandas()
                    fh.write(frame.to_csv(index=False, header=False, float_format=CSV_FLOAT))

        def write_errors(path: Path) -> None:
            with open(path, "w", newline="") as fh:
                fh.write(pd.DataFrame(columns=[id_column, *kept, *ERROR_COLUMNS]).to_csv(index=False))
                for k in range(n_chunks):
                    if (errors := self.errors(k)) is not None:
                        fh.write(join(errors).to_pandas().to_csv(index=False, header=False))

        # The record vouches for the output: gone while it is replaced, written once it is whole.
        record = manifest_path(out)
        record.unlink(missing_ok=True)
        fmt = output_format(out)
        if fmt in ("csv", "parquet"):
            atomic_write(out, write_parquet if fmt == "parquet" else write_csv)
        else:  # astropy writes whole tables: the science formats are built in memory, atomically
            extras.write(list(parts()), out)
        atomic_write(errors_path(out), write_errors)
        n_pred, n_fail = self.counts()
        finished = {"n_predicted": n_pred, "n_failed": n_fail, "output_bytes": out.stat().st_size,
                    "errors_bytes": errors_path(out).stat().st_size}
        text = json.dumps({**self.manifest, "finished": finished}, indent=2) + "\n"
        atomic_write(record, lambda p: p.write_text(text))
        return n_pred, n_fail

    def remove(self) -> None:
        """Delete the part and error directories (after a successful :meth:`assemble`)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.errors_dir, ignore_errors=True)


def _only_parts(folder: Path) -> bool:
    """Whether ``folder`` is missing or holds only what a part store writes (parts, hidden temporaries)."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    return all(re.fullmatch(r"part-\d{6}\.parquet", p.name) or (p.name.startswith(".") and p.name.endswith(".tmp"))
               for p in folder.iterdir())


def single_machine_store(out: str | Path, manifest: Mapping[str, Any], resume: bool) -> PartStore:
    """The part store of a single-machine job writing the file ``out``."""
    output_format(out)  # refuse a bad suffix before any work
    directory = parts_dir(out)
    return PartStore(directory, directory.with_name(directory.name + ".errors"), manifest, resume)


def finished_output(out: str | Path, manifest: Mapping[str, Any]) -> tuple[int, int] | None:
    """(predicted, failed) of a finished output that the job of ``manifest`` may keep on resume.

    None when there is nothing finished to keep: no output file, or an interrupted
    job's part directory (which :class:`PartStore` resumes).  Raises
    :class:`~gzmorph.errors.OutputError` when the output was made with other settings,
    changed since (file sizes differ from its record :func:`manifest_path`) or has no
    record: it is not this job's result.
    """
    out = Path(out)
    if parts_dir(out).exists() or not out.exists():
        return None
    record_path = manifest_path(out)
    advice = "rerun without --resume to overwrite it, or write to another --out"
    try:
        record = json.loads(record_path.read_text())
        finished = record["finished"]
        sizes = (finished["output_bytes"], finished["errors_bytes"])
    except FileNotFoundError:
        raise OutputError(f"cannot resume {out}: it is a finished output with no settings record "
                          f"({record_path.name}) to check this job against; {advice}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OutputError(f"cannot resume {out}: unreadable settings record {record_path} "
                          f"({type(exc).__name__}: {exc}); {advice}") from None
    changed = _changed(record, _normalised(dict(manifest)))
    if changed:
        raise OutputError(f"cannot resume {out}: the finished output was made with other settings "
                          f"({', '.join(changed)}; see {record_path.name}); {advice}")
    err = errors_path(out)
    if not err.is_file() or (out.stat().st_size, err.stat().st_size) != tuple(sizes):
        raise OutputError(f"cannot resume {out}: the output or {err.name} changed since the run that wrote "
                          f"{record_path.name}; {advice}")
    return int(finished["n_predicted"]), int(finished["n_failed"])


def model_files(models: Any) -> list[Path]:
    """The files the models (paths, Hub references or loaded runs) are read from: inputs an output must not replace."""
    from gzmorph.models.resolve import model_inputs

    specs = [models] if isinstance(models, (str, Path)) or not isinstance(models, Sequence) else list(models)
    return [path for m in specs for path in model_inputs(m)]


def check_outputs(out: Path, inputs: Sequence[Any]) -> None:
    """Refuse, before any work, an output that would replace an input or cannot be written.

    The output, its error and manifest files and its part directories must not be an
    input (catalog, thresholds, weights, a run's files), and the files must not be
    existing directories (found at the end of a long job otherwise).
    """
    files = [out, errors_path(out), manifest_path(out), adapt_path(out)]
    folders = [parts_dir(out), parts_dir(out).with_name(parts_dir(out).name + ".errors")]
    refuse_overwrite([i for i in inputs if isinstance(i, (str, Path))], files=files, folders=folders)
    for path in files:
        if path.is_dir():
            raise OutputError(f"--out {out}: {path} is an existing directory; give a file name")
