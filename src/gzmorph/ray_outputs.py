"""Output files of a Ray prediction job: partitioned Parquet parts and their error parts.

Layout and rerun rules are described in :mod:`gzmorph.ray_predict`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from gzmorph.outputs import ERROR_COLUMNS, PredictSummary
from gzmorph.runtime import atomic_write

__all__ = ["RayPartStore", "RaySummary", "ray_errors_dir"]


def ray_errors_dir(out: str | Path) -> Path:
    """The error side directory of a Ray output directory: ``<out stem>.errors/`` next to it."""
    out = Path(out)
    return out.with_name(out.stem + ".errors")


def _write_atomic(table: pa.Table, path: Path) -> None:
    # runtime.atomic_write's hidden temporary name: Parquet readers of the directory skip
    # one a killed job leaves behind, and the rename makes the part appear whole.
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class RayPartStore:
    """The finished partitions of a Ray prediction job: a directory of Parquet parts.

    Parameters
    ----------
    out : path
        The output directory (created; its parent must exist or is created).
    manifest : dict
        Everything the parts depend on; an existing directory must hold the same.
    """

    MANIFEST = "_manifest.json"

    def __init__(self, out: str | Path, manifest: Mapping[str, Any]) -> None:
        self.dir = Path(out)
        self.errors_dir = ray_errors_dir(self.dir)
        self.manifest = json.loads(json.dumps(dict(manifest), default=str))
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"{self.dir}: exists and is not a directory; a Ray job writes a directory of "
                             "Parquet parts there (choose another --out)")
        path = self.dir / self.MANIFEST
        if path.is_file():
            old = json.loads(path.read_text())
            changed = sorted(k for k in set(old) | set(self.manifest) if old.get(k) != self.manifest.get(k))
            if changed:
                raise ValueError(f"{self.dir}: written by a job with other settings ({', '.join(changed)}); "
                                 "choose another output directory or delete this one and its "
                                 f"{self.errors_dir.name}/")
        elif self.dir.exists() and any(self.dir.iterdir()):
            raise ValueError(f"{self.dir}: not empty and not a gzmorph Ray output (no {self.MANIFEST}); "
                             "choose another output directory")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            text = json.dumps(self.manifest, indent=2) + "\n"
            atomic_write(path, lambda tmp: tmp.write_text(text))
        for stale in [*self.dir.glob(".*.tmp"), *self.errors_dir.glob(".*.tmp")]:
            stale.unlink(missing_ok=True)

    def part_path(self, k: int) -> Path:
        return self.dir / f"part-{k:06d}.parquet"

    def errors_part_path(self, k: int) -> Path:
        return self.errors_dir / f"part-{k:06d}.parquet"

    def done(self) -> set[int]:
        """Partitions whose prediction part exists (it is written last: they are complete)."""
        return {int(p.name[5:11]) for p in self.dir.glob("part-*.parquet")}

    def write(self, k: int, table: pa.Table, errors: pa.Table) -> None:
        """Store partition ``k``: its error rows (if any), then its predictions (marks it done)."""
        # An earlier killed run may have left error rows of this partition.
        self.errors_part_path(k).unlink(missing_ok=True)
        if errors.num_rows:
            self.errors_dir.mkdir(parents=True, exist_ok=True)
            _write_atomic(errors, self.errors_part_path(k))
        _write_atomic(table, self.part_path(k))

    def counts(self) -> tuple[int, int]:
        """(rows predicted, rows failed) over the finished partitions."""
        done = self.done()
        n_pred = sum(pq.ParquetFile(self.part_path(k)).metadata.num_rows for k in done)
        n_fail = sum(pq.ParquetFile(p).metadata.num_rows for p in self.errors_dir.glob("part-*.parquet")
                     if int(p.name[5:11]) in done)
        return n_pred, n_fail


@dataclass
class RaySummary(PredictSummary):
    """What a Ray prediction job did; ``out`` and ``errors_file`` are directories of parts."""

    def read(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        """All predictions and all error rows as DataFrames, in input order."""
        frame = pd.read_parquet(self.out)
        if any(self.errors_file.glob("part-*.parquet")):
            return frame, pd.read_parquet(self.errors_file)
        return frame, pd.DataFrame(columns=[self.id_column, *ERROR_COLUMNS])


# ------------------------------------------------------------------ worker side
