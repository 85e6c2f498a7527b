"""A run's ``metrics.jsonl``: the one writer and reader of its validation records.

One JSON object per line, written by training at every validation (``step``,
``examples``, ``lr``, ``train_loss``, ``val_rmse``, ``val_rmse_questions``,
``seconds``) and read by the model card and by resumed or multi-process runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gzmorph.errors import RunError
from gzmorph.models.rundir import RUN_FILES
from gzmorph.runtime import atomic_write

__all__ = ["metrics_path", "append_metrics", "read_metrics", "truncate_metrics"]


def metrics_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_FILES["metrics"]


def append_metrics(run_dir: str | Path, record: dict[str, Any]) -> None:
    """Add one validation record (one line, flushed: a killed run keeps its records)."""
    with open(metrics_path(run_dir), "a") as fh:
        fh.write(json.dumps(record) + "\n")


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The validation records of a run, in order (empty when it has none yet).

    Raises
    ------
    RunError
        A line that is not JSON, naming the file and the line.
    """
    path = metrics_path(run_dir)
    if not path.is_file():
        return []
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError as exc:
                raise RunError(f"{path}, line {n}: not valid JSON ({exc})") from None
    return records


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records up to ``step`` (the checkpoint a run resumes from).

    A kill between writing a line and its checkpoint leaves lines of steps the
    resumed run computes again; without this they would appear twice.  A half
    written last line is dropped too.
    """
    path = metrics_path(run_dir)
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["step"]) <= step:
                kept.append(line + "\n")
        except (ValueError, KeyError, TypeError):
            continue
    atomic_write(path, lambda tmp: tmp.write_text("".join(kept)))
