"""Calibrated prediction: intervals, p_correct and the reasons for triage, from a run, a package and ONNX."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gzmorph.cli import main
from gzmorph.evaluation.calibrate import calibrate
from gzmorph.inference.predict import predict
from gzmorph.tree import GZ2
from factories import make_images, make_run  # noqa: E402
from crowd_simulation import simulate

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N = 120


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny run calibrated on 120 images with generated crowd labels."""
    root = tmp_path_factory.mktemp("cal")
    run = make_run(root / "run", seed=0)
    make_images(root / "img", N)
    raw = predict(run, root / "img", calibration="off", progress=False, workers=0)
    _, crowd, counts = simulate(N, seed=11)
    labels = pd.DataFrame(crowd, columns=GZ2.columns)
    labels.insert(0, "GalaxyID", raw["GalaxyID"].to_numpy())
    labels = pd.concat([labels, pd.DataFrame(counts.astype(int), columns=[c + "_votes" for c in GZ2.columns])], axis=1)
    labels.to_csv(root / "labels.csv", index=False)
    calibrate(run, raw, root / "labels.csv")
    return root, run, raw


def test_predict_applies_the_runs_calibration(calibrated, tmp_path):
    root, run, raw = calibrated
    df = predict(run, root / "img", out=tmp_path / "p.parquet", progress=False, workers=0)
    for c in ("Class1.1_lo", "Class1.1_hi", "Q1_p_correct", "Q1_width", "uncertain_questions", "interval_level"):
        assert c in df.columns
    lo, hi, p = df["Class1.1_lo"], df["Class1.1_hi"], df["Class1.1"]
    assert ((lo <= hi) & (lo >= 0) & (hi <= 1)).all() and (df["interval_level"] == np.float32(0.8)).all()
    # The calibrated fractions keep the tree and the model's most likely answers.
    np.testing.assert_allclose(df[GZ2.columns[:3]].sum(axis=1), 1, atol=1e-5)
    assert (df["Q1_answer"] == raw["Q1_answer"]).all()
    # needs_expert keeps its meaning and uncertain_questions says why.
    flagged = df[[f"{q.name}_needs_expert" for q in GZ2.questions]].any(axis=1)
    assert (df["needs_expert"] == flagged).all()
    assert (df["uncertain_questions"].str.len() > 0).eq(df["needs_expert"]).all()
    # A wider level gives wider intervals; the CSV carries them too.
    csv = predict(run, root / "img", out=tmp_path / "p.csv", interval_level=0.95, progress=False, workers=0)
    assert list(csv.columns[:38]) == ["GalaxyID", *GZ2.columns]
    assert ((csv["Class1.1_hi"] - csv["Class1.1_lo"]) >= (hi - lo).to_numpy() - 1e-6).all()


def test_calibration_on_refuses_a_run_without_one(tmp_path, capsys):
    run = make_run(tmp_path / "run", seed=1)
    make_images(tmp_path / "img", 3)
    code = main(["predict", "--model", str(run), "--images", str(tmp_path / "img"), "--out",
                 str(tmp_path / "p.parquet"), "--calibration", "on", "--no-progress", "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "no calibration.json, but --calibration on needs one" in err and "\n" not in err
    # auto (the default) predicts uncalibrated: no interval columns.
    df = predict(run, tmp_path / "img", progress=False, workers=0)
    assert "Class1.1_lo" not in df.columns


@pytest.mark.slow
def test_package_and_onnx_apply_the_same_calibration(calibrated, tmp_path):
    pytest.importorskip("safetensors")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from gzmorph.models.package import read_package_config
    from gzmorph.sharing.package import export_package

    root, run, _ = calibrated
    pkg = export_package(run, tmp_path / "pkg", onnx=True)
    config = read_package_config(pkg)
    assert config["calibration"]["votes"] == 40 and (pkg / "calibration.json").is_file()
    assert "## Calibration" in (pkg / "README.md").read_text() and "Not calibrated" not in (pkg / "README.md").read_text()
    ref = predict(run, root / "img", progress=False, workers=0)
    for model in (pkg, pkg / "model.onnx"):
        got = predict(model, root / "img", progress=False, workers=0, calibration="on")
        cols = ["Class1.1", "Class1.1_lo", "Class1.1_hi", "Q1_p_correct"]
        np.testing.assert_allclose(got[cols].to_numpy(), ref[cols].to_numpy(), atol=2e-3)
