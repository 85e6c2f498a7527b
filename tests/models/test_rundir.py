"""gzmorph.models.rundir: the one writer and reader of run directories."""

import json

import pandas as pd
import pytest
import torch

from gzmorph.errors import RunError
from gzmorph.models.rundir import RUN_FILES, load_run, read_run, save_run, write_skipped
from gzmorph.training.recipes import get_preset

from factories import make_run


def test_config_round_trip_and_format_1_runs_still_load(tmp_path):
    cfg = get_preset("small")
    save_run(tmp_path / "new", cfg, {"pca": {"eigenvalue": 1.0}, "source": "cat.csv", "n_train": 3})
    stored, data = read_run(tmp_path / "new")
    assert stored == cfg and data["source"] == "cat.csv"
    assert json.loads((tmp_path / "new" / "config.json").read_text())["format"] == 2
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({**cfg.to_dict(), "pca": {"eigenvalue": 2.0}, "data": "x.csv"}))
    stored, data = read_run(old)
    assert stored == cfg and data == {"pca": {"eigenvalue": 2.0}, "source": "x.csv"}


def test_unreadable_configs_name_the_file(tmp_path):
    with pytest.raises(RunError, match="not a gzmorph run directory"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(RunError, match=r"config.json: not valid JSON \(line 1"):
        read_run(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"train": {"lr": -1}}))
    with pytest.raises(RunError, match="not a valid run configuration"):
        read_run(tmp_path)


def test_load_run_falls_back_to_last_and_refuses_foreign_weights(tmp_path):
    run = make_run(tmp_path / "run", 1)
    (run / RUN_FILES["best"]).rename(run / RUN_FILES["last"])
    trained = load_run(run, "best", device="cpu")  # no best.pt: the last checkpoint
    assert not trained.model.training and trained.image_size == 40
    ckpt = torch.load(run / RUN_FILES["last"], weights_only=True)
    ckpt["model"] = {"other.weight": torch.zeros(1)}
    torch.save(ckpt, run / RUN_FILES["last"])
    with pytest.raises(RunError, match="weights do not fit the network"):
        load_run(run, device="cpu")


def test_skipped_csv_keeps_every_undecodable_row(tmp_path):
    path = write_skipped(tmp_path, "objid", [("a,b", "x.jpg", "truncated file"), (7, "", "empty file")])
    assert path == tmp_path / RUN_FILES["skipped"]
    frame = pd.read_csv(path, dtype={"objid": str}, keep_default_na=False)
    assert frame.to_dict("list") == {"objid": ["a,b", "7"], "path": ["x.jpg", ""],
                                     "reason": ["truncated file", "empty file"]}
