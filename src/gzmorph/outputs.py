"""Prediction output files: the table, triage thresholds, chunked parts and resume.

A prediction job writes its rows in *chunks* of consecutive inputs.  Each finished
chunk becomes one Parquet file (plus the error rows of that chunk) in a part
directory next to the output, ``<output>.parts/``, written atomically; the part
files that exist are exactly the chunks that are done, so a killed job restarted
with ``resume`` only computes the others.  When every chunk is done the parts are
concatenated, in input order, into the final file (one Parquet row group per chunk,
or CSV text appended chunk by chunk), the error rows into ``<output stem>.errors.csv``,
and the part directory is removed.  Chunk boundaries depend only on the input order
and ``chunk_rows``, so an interrupted-and-resumed job produces the same bytes as an
uninterrupted one, and at most one chunk of rows is held in memory at a time.

The job's settings (models, weights, TTA, thresholds, inputs, chunking) are kept in
``<output>.parts/manifest.json`` while it runs, then in ``<output>.manifest.json``
(e.g. ``st.csv.manifest.json``) with the counts and sizes of the finished files.
Resuming a finished output checks that record (:func:`finished_output`): other
settings, changed files or no record are refused, never silently kept.

Output columns (see CONTRIBUTING.md): the id column and the tree's answer columns in
tree order, clipped to [0, 1] (the Kaggle submission CSV holds only these); Parquet
adds per question ``Qn_answer`` (answer column of the most likely answer, null when
the question's answers are all zero), ``Qn_confidence`` (``1 - H/log n`` of the
renormalised answers, :func:`gzmorph.tree.agreement`), ``Qn_reach`` (the parent
answer's value, 1 for root questions) and ``Qn_needs_expert`` (the question is
reached, ``reach >= 0.5``, and its confidence is below the question's threshold), and
the row-level ``needs_expert`` (any ``Qn_needs_expert``).
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gzmorph.runtime import atomic_write
from gzmorph.tree import Tree, agreement

__all__ = [
    "DEFAULT_THRESHOLD",
    "REACH_THRESHOLD",
    "ERROR_COLUMNS",
    "output_format",
    "errors_path",
    "manifest_path",
    "load_thresholds",
    "output_schema",
    "prediction_table",
    "PartStore",
    "PredictSummary",
    "ids_digest",
    "finished_output",
]

#: Confidence threshold used for every question that the triage file does not cover
#: (or when no file is given).  ``a = 0.5`` means the answer distribution keeps half
#: of its maximum entropy: a deliberately cautious flag until ``gzmorph evaluate``
#: has fitted per-question thresholds for a target accuracy on labelled data.
DEFAULT_THRESHOLD = 0.5
#: A question counts as reached (and so can need an expert) from this reach probability.
REACH_THRESHOLD = 0.5
#: Columns of the error side file after the id column.
ERROR_COLUMNS = ("path", "reason")
# Nine significant digits write every float32 exactly, so CSV and Parquet agree.
_CSV_FLOAT = "%.9g"


def output_format(path: str | Path) -> str:
    """``"csv"`` or ``"parquet"`` from the output file's suffix."""
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"output file {path}: suffix must be .csv or .parquet, not {suffix!r}")


def errors_path(out: str | Path) -> Path:
    """The error side file of an output file: ``<output stem>.errors.csv`` next to it."""
    out = Path(out)
    return out.with_name(out.stem + ".errors.csv")


def manifest_path(out: str | Path) -> Path:
    """The settings record of a finished output: ``<output>.manifest.json`` next to it."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def _parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def load_thresholds(spec: str | Path | Mapping[str, Any] | None, tree: Tree,
                    default: float = DEFAULT_THRESHOLD) -> tuple[dict[str, float], list[str]]:
    """Per-question confidence thresholds from a triage file written by ``gzmorph evaluate``.

    Parameters
    ----------
    spec : path, dict or None
        JSON file or dict ``{"tree": "gz2", "target_accuracy": 0.99, "thresholds":
        {"Q1": 0.42, ...}}``; ``None`` uses ``default`` for every question.
    tree : Tree
        The tree the predictions follow; the file's ``tree`` (when given) must match.
    default : float
        Threshold of the questions the file does not list (e.g. questions that had
        no labels when the thresholds were fitted).

    Returns
    -------
    thresholds : dict
        Question name -> threshold, for every question of ``tree``.  A threshold
        above 1 sends every reached image to an expert.
    defaulted : list of str
        Questions that got ``default``.
    """
    source = "default thresholds"
    if spec is None:
        given: dict[str, Any] = {}
    else:
        if isinstance(spec, Mapping):
            data, source = dict(spec), "triage thresholds"
        else:
            source = str(spec)
            try:
                data = json.loads(Path(spec).read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"{source}: cannot read triage thresholds: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("thresholds"), dict):
            raise ValueError(f"{source}: expected a JSON object with a 'thresholds' object")
        if data.get("tree") not in (None, tree.name):
            raise ValueError(f"{source}: thresholds are for tree {data['tree']!r}, "
                             f"the model predicts tree {tree.name!r}")
        given = data["thresholds"]
    names = [q.name for q in tree.questions]
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{source}: questions {unknown} are not in tree {tree.name!r}")
    out: dict[str, float] = {}
    for name in names:
        value = given.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{source}: threshold of {name} must be a finite number, not {value!r}")
        out[name] = float(value)
    return out, [n for n in names if n not in given]


def output_schema(tree: Tree, id_column: str, id_type: pa.DataType) -> pa.Schema:
    """Arrow schema of the full prediction table (the Parquet output)."""
    fields = [pa.field(id_column, id_type)]
    fields += [pa.field(c, pa.float32()) for c in tree.columns]
    for q in tree.questions:
        fields += [pa.field(f"{q.name}_answer", pa.string()), pa.field(f"{q.name}_confidence", pa.float32()),
                   pa.field(f"{q.name}_reach", pa.float32()), pa.field(f"{q.name}_needs_expert", pa.bool_())]
    fields.append(pa.field("needs_expert", pa.bool_()))
    return pa.schema(fields)


def id_arrow_type(ids: np.ndarray) -> pa.DataType:
    """int64 for integer ids (the Catalog convention), else string."""
    return pa.int64() if np.asarray(ids).dtype.kind in "iu" else pa.string()


def prediction_table(ids: np.ndarray, probs: np.ndarray, tree: Tree, thresholds: Mapping[str, float],
                     id_column: str, reach_threshold: float = REACH_THRESHOLD) -> pa.Table:
    """The full prediction table of a block of rows.

    Parameters
    ----------
    ids : array, shape (N,)
    probs : array, shape (N, tree.n_answers)
        Answer probabilities in tree order; clipped to [0, 1] here.
    tree : Tree
    thresholds : mapping
        Confidence threshold per question name (see :func:`load_thresholds`).
    id_column : str
    reach_threshold : float
        Reach from which a question counts as answered by the volunteers.

    Returns
    -------
    pyarrow.Table
        Columns as described in the module docstring, schema :func:`output_schema`.
    """
    ids = np.asarray(ids)
    probs = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    if probs.shape != (len(ids), tree.n_answers):
        raise ValueError(f"probabilities of shape {probs.shape} for {len(ids)} ids and "
                         f"{tree.n_answers} answers")
    id_type = id_arrow_type(ids)
    schema = output_schema(tree, id_column, id_type)
    id_values = ids.astype(np.int64) if id_type == pa.int64() else [str(v) for v in ids]
    arrays: list[Any] = [pa.array(id_values, type=id_type)]
    arrays += [pa.array(probs[:, j]) for j in range(tree.n_answers)]
    reach = tree.reach(probs)  # (N, n_questions)
    any_expert = np.zeros(len(ids), dtype=bool)
    for k, (q, sl) in enumerate(zip(tree.questions, tree.slices)):
        p = probs[:, sl]  # (N, n answers of q)
        has_answers = p.sum(axis=1) > 0
        columns = np.asarray(q.columns, dtype=object)
        answer = np.where(has_answers, columns[p.argmax(axis=1)], None)
        confidence = agreement(p).astype(np.float32)
        # NaN confidence (no answers) compares False: never flagged.
        expert = (reach[:, k] >= reach_threshold) & (confidence < thresholds[q.name])
        any_expert |= expert
        arrays += [pa.array(answer.tolist(), type=pa.string()), pa.array(confidence),
                   pa.array(reach[:, k].astype(np.float32)), pa.array(expert)]
    arrays.append(pa.array(any_expert))
    return pa.Table.from_arrays(arrays, schema=schema)



def _normalised(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


class PartStore:
    """The finished chunks of one prediction job, kept in ``<output>.parts/``.

    Parameters
    ----------
    out : path
        The final output file.
    manifest : dict
        Everything that determines the output (models, weights, TTA, thresholds,
        inputs, chunking); a resumed job must present the same manifest.
    resume : bool
        Keep the chunks finished by an earlier run of the same job.  Without it an
        existing part directory is discarded.
    """

    MANIFEST = "manifest.json"

    def __init__(self, out: str | Path, manifest: Mapping[str, Any], resume: bool) -> None:
        self.out = Path(out)
        self.format = output_format(self.out)
        self.dir = _parts_dir(self.out)
        self.manifest = _normalised(dict(manifest))
        own_manifest = self.dir / self.MANIFEST
        if resume and own_manifest.exists():
            old = json.loads(own_manifest.read_text())
            changed = _changed_settings(old, self.manifest)
            if changed:
                raise ValueError(f"cannot resume {self.out}: the job's settings differ from the interrupted "
                                 f"run's ({', '.join(changed)}); rerun without --resume to start over")
        else:
            if self.dir.exists():
                shutil.rmtree(self.dir)
            self.dir.mkdir(parents=True)
            atomic_write(own_manifest, lambda p: p.write_text(json.dumps(self.manifest, indent=2) + "\n"))

    def part_path(self, chunk: int) -> Path:
        return self.dir / f"part-{chunk:06d}.parquet"

    def part_errors_path(self, chunk: int) -> Path:
        return self.dir / f"part-{chunk:06d}.errors.csv"

    def done(self) -> set[int]:
        """Chunks whose part file exists (it is written last, so the chunk is complete)."""
        return {int(p.name[5:11]) for p in self.dir.glob("part-*.parquet")}

    def write(self, chunk: int, table: pa.Table, errors: pd.DataFrame) -> None:
        """Store one finished chunk: its error rows first, then its table (marks it done)."""
        # One line per error row: the assembly concatenates the text line by line.
        errors = errors.assign(**{c: errors[c].fillna("").astype(str).str.replace(r"\s+", " ", regex=True)
                                  for c in ERROR_COLUMNS})
        atomic_write(self.part_errors_path(chunk), lambda p: errors.to_csv(p, index=False))
        atomic_write(self.part_path(chunk), lambda p: pq.write_table(table, p))

    def _check(self, chunk: int, table: pa.Table, error_ids: list[str], expected: np.ndarray) -> None:
        got = sorted([str(v) for v in table.column(0).to_pylist()] + error_ids)
        if got != sorted(str(v) for v in expected):
            raise ValueError(f"{self.part_path(chunk)}: rows do not match the inputs of chunk {chunk}; "
                             "the inputs changed since the interrupted run: rerun without --resume")

    def _parts(self, n_chunks: int, id_column: str, expected_ids: Callable[[int], np.ndarray],
               counts: list[int]):
        # Yields the non-empty chunk tables in order, checking each against its inputs.
        for k in range(n_chunks):
            table = pq.read_table(self.part_path(k))
            err_ids = pd.read_csv(self.part_errors_path(k), dtype=str, keep_default_na=False)[id_column]
            self._check(k, table, err_ids.tolist(), expected_ids(k))
            counts[0] += table.num_rows
            if table.num_rows:
                yield table

    def assemble(self, n_chunks: int, id_column: str, columns: list[str],
                 expected_ids: Callable[[int], np.ndarray]) -> tuple[int, int]:
        """Concatenate all chunks into the output and error files; return (n predicted, n failed).

        Every part is checked to hold exactly the ids of its chunk (predicted or
        failed), so every input is accounted for.  Parquet gets one row group per
        chunk; CSV gets the id and answer ``columns`` only.
        """
        missing = sorted(set(range(n_chunks)) - self.done())
        if missing:
            raise RuntimeError(f"{self.out}: chunks {missing[:10]} are not finished")
        counts = [0, 0]

        def write_parquet(path: Path) -> None:
            with pq.ParquetWriter(path, pq.read_schema(self.part_path(0))) as writer:
                for table in self._parts(n_chunks, id_column, expected_ids, counts):
                    writer.write_table(table)

        def write_csv(path: Path) -> None:
            with open(path, "w", newline="") as fh:
                fh.write(pd.DataFrame(columns=[id_column, *columns]).to_csv(index=False))
                for table in self._parts(n_chunks, id_column, expected_ids, counts):
                    frame = table.select([id_column, *columns]).to_pandas()
                    fh.write(frame.to_csv(index=False, header=False, float_format=_CSV_FLOAT))

        def write_errors(path: Path) -> None:
            with open(path, "w", newline="") as fh:
                fh.write(pd.DataFrame(columns=[id_column, *ERROR_COLUMNS]).to_csv(index=False))
                for k in range(n_chunks):
                    # Raw lines: re-parsing would turn string ids like "007" into numbers.
                    lines = self.part_errors_path(k).read_text().splitlines(keepends=True)[1:]
                    fh.writelines(lines)
                    counts[1] += len(lines)

        # The record vouches for the output: gone while it is replaced, written once it is whole.
        record = manifest_path(self.out)
        record.unlink(missing_ok=True)
        atomic_write(self.out, write_parquet if self.format == "parquet" else write_csv)
        atomic_write(errors_path(self.out), write_errors)
        finished = {"n_predicted": counts[0], "n_failed": counts[1], "output_bytes": self.out.stat().st_size,
                    "errors_bytes": errors_path(self.out).stat().st_size}
        atomic_write(record, lambda p: p.write_text(json.dumps({**self.manifest, "finished": finished}, indent=2) + "\n"))
        return counts[0], counts[1]

    def remove(self) -> None:
        """Delete the part directory (after a successful :meth:`assemble`)."""
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class PredictSummary:
    """What a prediction job did: every input is either predicted or failed."""

    out: Path
    errors_file: Path
    n_inputs: int
    n_predicted: int
    n_failed: int
    n_resumed: int
    seconds: float
    id_column: str = "GalaxyID"
    integer_ids: bool = True

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The output file and the error file as DataFrames (string ids stay strings)."""
        dtype = None if self.integer_ids else {self.id_column: str}
        if output_format(self.out) == "parquet":
            return pd.read_parquet(self.out), pd.read_csv(self.errors_file, dtype=dtype)
        return pd.read_csv(self.out, dtype=dtype), pd.read_csv(self.errors_file, dtype=dtype)

    @property
    def images_per_second(self) -> float:
        """Inputs handled by this invocation (not the resumed ones) per second."""
        return (self.n_inputs - self.n_resumed) / self.seconds if self.seconds > 0 else float("nan")

    def message(self) -> str:
        """One line for the user: where every input went."""
        return (f"{self.n_inputs} inputs: {self.n_predicted} predicted -> {self.out}, {self.n_failed} failed "
                f"-> {self.errors_file}" + (f" ({self.n_resumed} resumed from an earlier run)"
                                             if self.n_resumed else ""))


def ids_digest(ids: np.ndarray) -> str:
    """A digest of the input ids, to recognise the same inputs when a job resumes."""
    digest = hashlib.sha1()
    for start in range(0, len(ids), 65536):
        digest.update("\n".join(map(str, ids[start : start + 65536])).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _changed_settings(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if k != "finished" and old.get(k) != new.get(k))


def finished_output(out: str | Path, manifest: Mapping[str, Any]) -> tuple[int, int] | None:
    """(predicted, failed) of a finished output that the job of ``manifest`` may keep on resume.

    None when there is nothing finished to keep: no output file, or an interrupted
    job's part directory (which :class:`PartStore` resumes).  Raises ValueError when
    the output was made with other settings, changed since (file sizes differ from its
    record :func:`manifest_path`) or has no record: it is not this job's result.
    """
    out = Path(out)
    if _parts_dir(out).exists() or not out.exists():
        return None
    record_path = manifest_path(out)
    advice = "rerun without --resume to overwrite it, or write to another --out"
    try:
        record = json.loads(record_path.read_text())
        finished = record["finished"]
        sizes = (finished["output_bytes"], finished["errors_bytes"])
    except FileNotFoundError:
        raise ValueError(f"cannot resume {out}: it is a finished output with no settings record "
                         f"({record_path.name}) to check this job against; {advice}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot resume {out}: unreadable settings record {record_path} "
                         f"({type(exc).__name__}: {exc}); {advice}") from None
    changed = _changed_settings(record, _normalised(dict(manifest)))
    if changed:
        raise ValueError(f"cannot resume {out}: the finished output was made with other settings "
                         f"({', '.join(changed)}; see {record_path.name}); {advice}")
    err = errors_path(out)
    if not err.is_file() or (out.stat().st_size, err.stat().st_size) != tuple(sizes):
        raise ValueError(f"cannot resume {out}: the output or {err.name} changed since the run that wrote "
                         f"{record_path.name}; {advice}")
    return int(finished["n_predicted"]), int(finished["n_failed"])
