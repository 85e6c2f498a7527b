"""`gzmorph calibrate` from the CLI and the API, the evidence in `gzmorph evaluate`, the package."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gzmorph.cli import main
from gzmorph.evaluation.evaluate import evaluate
from gzmorph.inference.calibrator import load_calibration
from gzmorph.inference.uncertainty import uncertainty_arrays
from gzmorph.tree import GZ2
from factories import make_run
from crowd_simulation import simulate


def _tables(tmp_path, n, seed, with_counts=True):
    model, crowd, counts = simulate(n, seed)
    ids = np.arange(1000, 1000 + n)
    pred = pd.DataFrame(model, columns=GZ2.columns)
    pred.insert(0, "GalaxyID", ids)
    lab = pd.DataFrame(crowd, columns=GZ2.columns)
    lab.insert(0, "GalaxyID", ids)
    if with_counts:
        lab = pd.concat([lab, pd.DataFrame(counts.astype(int), columns=[c + "_votes" for c in GZ2.columns])], axis=1)
    pred.to_csv(tmp_path / f"pred{seed}.csv", index=False)
    lab.to_csv(tmp_path / f"lab{seed}.csv", index=False)
    return tmp_path / f"pred{seed}.csv", tmp_path / f"lab{seed}.csv"


def test_calibrate_command_stores_the_fit_in_the_run(tmp_path, capsys):
    run = make_run(tmp_path / "run", seed=0)
    pred, lab = _tables(tmp_path, 600, seed=1)
    assert main(["calibrate", "--model", str(run), "--predictions", str(pred), "--labels", str(lab)]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 600 galaxies (40 votes per galaxy, counts)" in out and "Q1: temperature 2." in out
    cal = load_calibration(run, GZ2)
    assert cal.thresholds["Q1"] <= 1.0 and set(cal.concentration) == set(GZ2.columns)


def test_calibrate_refuses_a_small_split_in_one_line(tmp_path, capsys):
    run = make_run(tmp_path / "run", seed=0)
    pred, lab = _tables(tmp_path, 60, seed=2)
    assert main(["calibrate", "--model", str(run), "--predictions", str(pred), "--labels", str(lab)]) == 2
    err = capsys.readouterr().err.strip()
    assert "calibration split too small: 60 labelled galaxies" in err and "at least 100 needed" in err
    assert "\n" not in err and not (run / "calibration.json").exists()


def test_evaluate_shows_calibration_before_and_after_with_coverage(tmp_path):
    run = make_run(tmp_path / "run", seed=0)
    pred_dev, lab_dev = _tables(tmp_path, 800, seed=1)
    assert main(["calibrate", "--model", str(run), "--predictions", str(pred_dev), "--labels", str(lab_dev)]) == 0
    cal = load_calibration(run, GZ2)
    pred_test, lab_test = _tables(tmp_path, 800, seed=5)
    raw = pd.read_csv(pred_test)
    fr = cal.fractions(raw[GZ2.columns].to_numpy(), GZ2)
    arrays, _ = uncertainty_arrays(fr, GZ2, cal, 0.8, cal.thresholds, GZ2.reach(fr), 0.5)
    from gzmorph.inference.uncertainty import uncertainty_fields

    extra = pd.DataFrame({f.name: a.to_numpy(zero_copy_only=False) for f, a in zip(uncertainty_fields(GZ2), arrays)})
    calibrated = pd.concat([raw[["GalaxyID"]], pd.DataFrame(fr, columns=GZ2.columns), extra], axis=1)
    before = evaluate(raw, lab_test)
    after = evaluate(calibrated, lab_test, out=tmp_path / "report", before=raw)
    assert after.rmse_before == pytest.approx(before.rmse)
    shown = after.calibration.set_index(["question", "source"])
    assert shown.loc[("Q1", "uncalibrated"), "ece"] == pytest.approx(before.calibration.set_index("question").loc["Q1", "ece"])
    b = before.calibration.set_index(["question", "source"])
    a = after.calibration.set_index(["question", "source"])
    assert set(b.index.get_level_values("source")) == {"top fraction"}
    assert a.loc[("Q1", "p_correct"), "ece"] < 0.5 * b.loc[("Q1", "top fraction"), "ece"]
    assert a.loc[("Q1", "p_correct"), "ece_low"] <= a.loc[("Q1", "p_correct"), "ece"] <= a.loc[("Q1", "p_correct"), "ece_high"]
    cov = after.coverage_table.set_index("column")
    assert cov.loc["Class1.1", "level"] == pytest.approx(0.8)
    assert 0.72 < cov.loc["Class1.1", "coverage"] < 0.9
    assert after.rmse < before.rmse
    page = (tmp_path / "report" / "report.html").read_text()
    assert "<h2>Calibration</h2>" in page and "p_correct" in page and "Intervals" in page
    assert "uncalibrated" in page and f"their RMSE {before.rmse:.4f}" in page
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert {r["source"] for r in metrics["calibration"]} == {"top fraction", "p_correct", "uncalibrated"}
    assert (tmp_path / "report" / "plots" / "Q1_reliability.png").is_file()


def test_uncertain_questions_say_why_and_rank_the_doubt(tmp_path):
    run = make_run(tmp_path / "run", seed=0)
    pred, lab = _tables(tmp_path, 600, seed=1)
    main(["calibrate", "--model", str(run), "--predictions", str(pred), "--labels", str(lab)])
    cal = load_calibration(run, GZ2)
    raw = pd.read_csv(pred)[GZ2.columns].to_numpy()[:200]
    fr = cal.fractions(raw, GZ2)
    thresholds = {q.name: 0.9 for q in GZ2.questions}
    arrays, expert = uncertainty_arrays(fr, GZ2, cal, 0.8, thresholds, GZ2.reach(fr), 0.5)
    from gzmorph.inference.uncertainty import uncertainty_fields

    names = [f.name for f in uncertainty_fields(GZ2)]
    uncertain = arrays[names.index("uncertain_questions")].to_pylist()
    pc = cal.probability_correct(fr, GZ2)
    reach = GZ2.reach(fr)
    for i in range(200):
        listed = [q for q in uncertain[i].split(",") if q]
        want = [q.name for k, q in enumerate(GZ2.questions) if reach[i, k] >= 0.5 and pc[q.name][i] < 0.9]
        assert sorted(listed) == sorted(want)
        assert [pc[q][i] for q in listed] == sorted(pc[q][i] for q in listed)  # most doubtful first
        assert bool(listed) == any(expert[q][i] for q in expert)
    width = arrays[names.index("Q1_width")].to_numpy()
    assert np.all((width >= 0) & (width <= 1))
