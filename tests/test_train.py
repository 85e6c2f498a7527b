"""Training: recipes, schedules, masked loss, run directories and exact resume."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gzmorph.models.trainconfig import TrainConfig
from gzmorph.training.recipes import PRESETS, get_preset
from gzmorph.models.rundir import load_run
from gzmorph.errors import RunError
from gzmorph.metrics import masked_mse
from gzmorph.training.train import learning_rate, train

from factories import run_killed  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tiny_kaggle) -> Path:
    return tiny_kaggle


def _cfg(examples: int = 256) -> TrainConfig:
    # Only settings the CLI also takes, so the killed CLI run and this one are the same run.
    return get_preset("small").override(examples=examples, batch_size=8, eval_every=64, image_size=48)


def test_presets_are_valid_and_paper_recipe():
    for name in PRESETS:
        cfg = get_preset(name)
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    paper = get_preset("paper")
    assert (paper.optimizer, paper.batch_size, paper.lr, paper.momentum) == ("nesterov", 16, 0.04, 0.9)
    # 0.04 -> 0.004 after 18M -> 0.0004 after 23M of 25M examples; milestones scale with examples
    steps = {e: e // 16 for e in (17_999_984, 18_000_000, 22_999_984, 23_000_000)}
    assert [learning_rate(paper, s) for s in steps.values()] == pytest.approx([0.04, 0.004, 0.004, 0.0004])
    short = paper.override(examples=250_000)
    assert learning_rate(short, 180_000 // 16) == pytest.approx(0.004)
    with pytest.raises(ValueError, match="optimizer"):
        paper.override(optimizer="sgd")
    with pytest.raises(ValueError, match="preset"):
        get_preset("nope")


def test_masked_mse_ignores_missing_columns():
    pred = torch.tensor([[0.5, 0.2], [0.1, 0.9]])
    target = torch.tensor([[0.5, float("nan")], [0.3, float("nan")]])
    assert float(masked_mse(pred, target)) == pytest.approx(0.04 / 2)
    target_zero = torch.nan_to_num(target)
    assert float(masked_mse(pred, target_zero)) != pytest.approx(0.02)


def test_run_directory_and_load(tiny, tmp_path):
    run = tmp_path / "run"
    result = train(_cfg(), tiny, run, device="cpu", workers=0, progress=False)
    assert result["finished"] and result["examples"] == 256
    stored = json.loads((run / "config.json").read_text())
    cfg, data = stored["train"], stored["data"]
    assert cfg["batch_size"] == 8 and cfg["tree"]["name"] == "gz2" and len(data["pca"]["eigenvector"]) == 3
    assert (data["n_train"], data["n_val"]) == (36, 4) and data["source"] == str(tiny)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["examples"] for r in lines] == [64, 128, 192, 256]
    assert all(np.isfinite(r["val_rmse"]) for r in lines)
    trained = load_run(run, "best", device="cpu")
    assert not trained.model.training and trained.image_size == 48
    assert min(r["val_rmse"] for r in lines) == pytest.approx(result["best_val_rmse"])
    with pytest.raises(RunError):
        train(_cfg(), tiny, run, device="cpu", workers=0, progress=False)


def test_killed_run_resumes_exactly(tiny, tmp_path):
    """Kill a training process after its first checkpoint; the resumed run equals an uninterrupted one."""
    examples = 960
    ref = tmp_path / "ref"
    train(_cfg(examples=examples), tiny, ref, device="cpu", workers=0, progress=False)

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "gzmorph", "train", "--data", str(tiny), "--out", str(run), "--preset", "small",
           "--examples", str(examples), "--batch-size", "8", "--eval-every", "64", "--image-size", "48",
           "--workers", "0", "--no-progress", "--device", "cpu"]
    # A real kill (SIGKILL) right after the first last.pt, at the same step on any machine.
    assert run_killed("gzmorph.training.train:save_checkpoint", 2, cmd[3:]) == -9  # best.pt, then last.pt
    last = run / "checkpoints" / "last.pt"
    assert torch.load(last, weights_only=True)["step"] == 64 // 8

    train(_cfg(examples=examples), tiny, run, device="cpu", workers=0, progress=False, resume=True)
    a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert a["step"] == b["step"] == examples // 8
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    ref_lines = (ref / "metrics.jsonl").read_text().splitlines()
    got = [json.loads(x)["val_rmse"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert got[-1] == json.loads(ref_lines[-1])["val_rmse"]


def test_cli_reports_user_errors_in_one_line(tiny, tmp_path, capsys):
    from gzmorph.cli import main

    assert main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r1"),
                 "--preset", "small"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "missing" in err and "Traceback" not in err
    # a labels-only catalog (no image path column) fails up front, naming the missing column
    labels_only = tiny / "training_solutions_rev1.csv"
    assert main(["train", "--data", str(labels_only), "--out", str(tmp_path / "r2"), "--preset", "small",
                 "--workers", "0", "--no-progress"]) == 2
    assert "--path-column" in capsys.readouterr().err
