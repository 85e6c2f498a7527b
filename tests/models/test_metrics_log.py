"""gzmorph.models.metrics_log: a run's metrics.jsonl, written and read in one place."""

import pytest

from gzmorph.errors import RunError
from gzmorph.models.metrics_log import append_metrics, metrics_path, read_metrics, truncate_metrics


def test_append_read_and_truncate_to_the_resumed_step(tmp_path):
    assert read_metrics(tmp_path) == []
    for step in (10, 20, 30):
        append_metrics(tmp_path, {"step": step, "val_rmse": 1 / step})
    with open(metrics_path(tmp_path), "a") as fh:
        fh.write('{"step": 40, "val_')  # a kill in the middle of a line
    truncate_metrics(tmp_path, 20)
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]


def test_a_damaged_line_is_named(tmp_path):
    append_metrics(tmp_path, {"step": 1})
    with open(metrics_path(tmp_path), "a") as fh:
        fh.write("not json\n")
    with pytest.raises(RunError, match=r"metrics.jsonl, line 2: not valid JSON"):
        read_metrics(tmp_path)
