"""The built-in job: mock galaxies -> small network -> predictions -> report."""

import json

import numpy as np
import pytest

from gzmorph.cli import main
from gzmorph.data.catalog import open_catalog, train_val_split
from gzmorph.mock import generate
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mock_data(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("mock") / "data", n=400, seed=3, workers=0, progress=False)


def test_small_preset_learns_from_mock_images(mock_data, tmp_path):
    """Validation RMSE falls clearly below predicting the training mean: the net reads the images."""
    cfg = get_preset("small").override(examples=6_400, eval_every=3_200, val_fraction=0.2)
    result = train(cfg, mock_data, tmp_path / "run", device="cpu", workers=0, progress=False)
    train_cat, val_cat = train_val_split(open_catalog(mock_data), 0.2)
    baseline = float(np.sqrt(np.nanmean((val_cat.labels - np.nanmean(train_cat.labels, axis=0)) ** 2)))
    assert result["best_val_rmse"] < 0.85 * baseline, (result["best_val_rmse"], baseline)


def test_demo_command_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n", "120", "--examples", "256", "--minutes", "1",
                 "--tta", "none", "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "RMSE" in printed and "predicting the training mean" in printed and "report:" in printed
    report = out / "report" / "report.html"
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert np.isfinite(metrics["rmse"])
    # The page shows this evaluation: its RMSE, and the RMSE plot plus four plots per scored question
    # (accuracy against confidence, triage, and the two reliability diagrams).
    page = report.read_text()
    scored = sum(q["n_reached"] > 0 for q in metrics["per_question"] if q["labelled"])
    assert f"<b>{metrics['rmse']:.4f}</b>" in page and scored > 0
    assert page.count('src="data:image/png;base64,') == 1 + 4 * scored
    assert (out / "predictions.parquet").exists() and (out / "run" / "checkpoints" / "best.pt").exists()
    # scored on the separate test galaxies, not on the validation split that chose best.pt
    assert metrics["n_matched"] == 20
    assert (out / "report" / "analysis" / "analysis.html").exists()
    assert 'href="analysis/analysis.html"' in report.read_text()
    # a rerun continues the finished demo instead of failing on the existing run
    assert main(["demo", "--out", str(out), "--n", "120", "--examples", "256", "--minutes", "1",
                 "--tta", "none", "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
