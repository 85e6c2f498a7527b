"""gzmorph.runtime: devices decided once, atomic files, safe checkpoints, output guards, threads."""

import pickle

import pytest
import torch

from gzmorph.errors import OutputError, RunError
from gzmorph.runtime import (atomic_save, atomic_write, load_checkpoint, refuse_overwrite, resolve_device,
                             torch_threads, write_json)


def test_cpu_runtime_has_no_gpu_speed_paths():
    rt = resolve_device("cpu")
    assert rt.device.type == "cpu" and not rt.autocast and not rt.channels_last
    assert resolve_device("auto", precision="fp32").autocast is False


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "out.json"
    write_json({"a": 1}, path)

    def dies(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary file left


def test_checkpoints_load_only_tensors_and_plain_data(tmp_path):
    atomic_save({"model": {"w": torch.ones(2)}, "step": 3}, tmp_path / "ok.pt")
    assert load_checkpoint(tmp_path / "ok.pt")["step"] == 3
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(RunError, match="empty file"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "code.pt").write_bytes(pickle.dumps({"model": {}, "x": OutputError("a pickled object")}))
    with pytest.raises(RunError, match="code.pt"):
        load_checkpoint(tmp_path / "code.pt")
    atomic_save({"step": 1}, tmp_path / "other.pt")
    with pytest.raises(RunError, match="no 'model' entry"):
        load_checkpoint(tmp_path / "other.pt")


def test_outputs_never_replace_or_hold_inputs(tmp_path):
    data = tmp_path / "data" / "cat.csv"
    data.parent.mkdir()
    data.write_text("x")
    (tmp_path / "link.csv").symlink_to(data)
    with pytest.raises(OutputError, match="would overwrite the input"):
        refuse_overwrite([data], files=[tmp_path / "link.csv"])
    with pytest.raises(OutputError, match="holds the input"):
        refuse_overwrite([data], folders=[tmp_path / "data"])
    refuse_overwrite([data], files=[tmp_path / "preds.csv"], folders=[tmp_path / "run"])  # fine


def test_torch_threads_is_restored_even_on_error():
    before = torch.get_num_threads()
    with pytest.raises(ValueError):
        with torch_threads(1):
            assert torch.get_num_threads() == 1
            raise ValueError
    assert torch.get_num_threads() == before
