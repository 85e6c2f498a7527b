"""Catalog-scale prediction: output files, TTA, ensembles, error accounting, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from gzmorph.nn import augment as aug
from gzmorph.cli import main
from gzmorph.inference.ensemble import Ensemble, fit_simplex_weights, load_weights
from gzmorph.data.images import decode
from gzmorph.inference.parts import PartStore, errors_path, manifest_path, single_machine_store
from gzmorph.inference.table import DEFAULT_THRESHOLD, load_thresholds, prediction_table
from gzmorph.inference.predict import PredictConfig, fit_weights, predict, predict_to_file
from gzmorph.models.rundir import load_run
from gzmorph.runtime import resolve_device
from gzmorph.tree import GZ2

FAST = dict(workers=0, progress=False, batch_size=4)


from factories import SIZE, make_images, make_run, run_killed  # noqa: E402


# Tiny tensors on a shared 2-core machine: one torch thread is several times faster.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    return [make_run(root / "a", 1), make_run(root / "b", 2)]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder, 10)
    return folder


def manual_forward(run_dir: Path, folder: Path, transforms) -> np.ndarray:
    """Reference: decode, render fixed crops, forward, average (no predict code)."""
    run = load_run(run_dir, device="cpu")
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))
    x = torch.from_numpy(np.stack([decode(p, run.image_size) for p in files]))
    outs = []
    with torch.inference_mode():
        for angle, scale, flip in transforms:
            crops = aug.render_crops(x, aug.fixed_transforms(len(x), angle, scale, flip), run.augment, run.pca)
            outs.append(run.model(crops).numpy())
    return np.mean(outs, axis=0)


# ------------------------------------------------------------------ outputs (no model)
def test_prediction_table_columns_clipping_and_triage():
    probs = np.zeros((3, GZ2.n_answers), np.float32)
    probs[0, :3] = [1.2, 0.0, -0.1]  # out of range: clipped
    probs[1, :3] = [0.1, 0.9, 0.0]  # Q1 confident; Q2 reached (0.9) and undecided
    probs[1, 3:5] = [0.45, 0.45]
    probs[2, :3] = [0.34, 0.33, 0.33]  # Q1 undecided; Q2 barely reached (0.33 < 0.5)
    probs[2, 3:5] = [0.165, 0.165]
    table = prediction_table(np.array([5, 6, 7]), probs, GZ2, {q.name: 0.5 for q in GZ2.questions}, "GalaxyID")
    df = table.to_pandas()
    assert list(df.columns[:38]) == ["GalaxyID", *GZ2.columns]
    assert list(df.columns[38:42]) == ["Q1_answer", "Q1_confidence", "Q1_reach", "Q1_needs_expert"]
    assert df.columns[-1] == "needs_expert" and len(df.columns) == 38 + 4 * 11 + 1
    assert df.loc[0, "Class1.1"] == 1.0 and df.loc[0, "Class1.3"] == 0.0
    assert list(df["Q1_answer"]) == ["Class1.1", "Class1.2", "Class1.1"]
    assert df.loc[0, "Q1_confidence"] == pytest.approx(1.0)
    np.testing.assert_allclose(df["Q2_reach"], [0.0, 0.9, 0.33], rtol=1e-6)
    assert df.loc[1, "Q2_confidence"] == pytest.approx(0.0, abs=1e-6)
    assert pd.isna(df.loc[0, "Q2_answer"]) and pd.isna(df.loc[0, "Q2_confidence"])  # never reached
    assert list(df["Q1_needs_expert"]) == [False, False, True]
    assert list(df["Q2_needs_expert"]) == [False, True, False]  # row 2: not reached enough
    assert list(df["needs_expert"]) == [False, True, True]


def test_load_thresholds(tmp_path):
    thr, defaulted = load_thresholds(None, GZ2)
    assert set(thr) == {q.name for q in GZ2.questions} and set(thr.values()) == {DEFAULT_THRESHOLD}
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"tree": "gz2", "target_accuracy": 0.99, "thresholds": {"Q1": 0.42, "Q6": 1.5}}))
    thr, defaulted = load_thresholds(path, GZ2)
    assert thr["Q1"] == 0.42 and thr["Q6"] == 1.5 and thr["Q2"] == DEFAULT_THRESHOLD and "Q2" in defaulted
    with pytest.raises(ValueError, match="tree 'other'"):
        load_thresholds({"tree": "other", "thresholds": {}}, GZ2)
    with pytest.raises(ValueError, match="Q99"):
        load_thresholds({"thresholds": {"Q99": 0.1}}, GZ2)
    with pytest.raises(ValueError, match="t.json"):
        path.write_text("{not json")
        load_thresholds(path, GZ2)


def test_output_format_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv or \.parquet"):
        single_machine_store(tmp_path / "out.txt", {}, resume=False)


def test_fit_simplex_weights_recovers_mixture():
    rng = np.random.default_rng(0)
    per_run = rng.uniform(size=(3, 200, 37))
    labels = 0.25 * per_run[0] + 0.75 * per_run[2]
    labels[rng.uniform(size=labels.shape) < 0.4] = np.nan  # missing entries are ignored
    np.testing.assert_allclose(fit_simplex_weights(per_run, labels), [0.25, 0.0, 0.75], atol=1e-6)


# ------------------------------------------------------------------ with a model
def test_csv_and_parquet_agree_and_none_tta_is_one_forward(runs, images, tmp_path):
    csv = predict(runs[0], images, tmp_path / "p.csv", **FAST)
    par = predict(runs[0], images, tmp_path / "p.parquet", **FAST)
    assert list(csv.columns) == ["GalaxyID", *GZ2.columns]
    assert list(csv["GalaxyID"]) == list(range(1000, 1010)) == list(par["GalaxyID"])
    # 9 significant digits in the CSV represent every float32 exactly
    np.testing.assert_array_equal(csv[GZ2.columns].to_numpy(np.float32), par[GZ2.columns].to_numpy())
    assert ((par[GZ2.columns] >= 0) & (par[GZ2.columns] <= 1)).all().all()
    expected = manual_forward(runs[0], images, aug.tta_transforms("none"))
    np.testing.assert_allclose(par[GZ2.columns].to_numpy(), np.clip(expected, 0, 1), atol=1e-6)
    in_memory = predict(runs[0], images, **FAST)
    pd.testing.assert_frame_equal(in_memory, par)


def test_rot_tta_averages_its_transforms(runs, images):
    got = predict(runs[0], images, tta="rot", **FAST)[GZ2.columns].to_numpy()
    expected = manual_forward(runs[0], images, aug.tta_transforms("rot"))
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not np.allclose(got, manual_forward(runs[0], images, aug.tta_transforms("none")), atol=1e-6)


def test_ensemble_is_mean_and_weights_apply(runs, images, tmp_path):
    a = predict(runs[0], images, **FAST)[GZ2.columns].to_numpy()
    b = predict(runs[1], images, **FAST)[GZ2.columns].to_numpy()
    assert not np.allclose(a, b)
    both = predict(runs, images, **FAST)[GZ2.columns].to_numpy()
    np.testing.assert_allclose(both, (a + b) / 2, atol=1e-6)
    weighted = predict(runs, images, weights=[1, 3], **FAST)[GZ2.columns].to_numpy()
    np.testing.assert_allclose(weighted, 0.25 * a + 0.75 * b, atol=1e-6)


def test_fit_weights_file_round_trip(runs, images, tmp_path):
    # A labelled catalog whose labels are exactly run b's predictions: weight 1 on b.
    b = predict(runs[1], images, **FAST)
    table = b[["GalaxyID", *GZ2.columns]].copy()
    table["path"] = [str(images / f"{i}.jpg") for i in table["GalaxyID"]]
    table.to_csv(tmp_path / "val.csv", index=False)
    record = fit_weights(runs, tmp_path / "val.csv", tmp_path / "w.json", **FAST)
    np.testing.assert_allclose(record["weights"], [0.0, 1.0], atol=1e-4)
    assert record["rmse"]["fitted"] < 1e-4 < record["rmse"]["uniform"]
    assert load_weights(tmp_path / "w.json", runs[::-1]) == pytest.approx(record["weights"][::-1])
    with pytest.raises(ValueError, match="fitted for runs"):
        load_weights(tmp_path / "w.json", runs[:1])
    got = predict(runs, images, weights=tmp_path / "w.json", **FAST)[GZ2.columns].to_numpy()
    np.testing.assert_allclose(got, b[GZ2.columns].to_numpy(), atol=1e-4)


def test_bad_images_become_error_rows(runs, tmp_path):
    folder = tmp_path / "mixed"
    paths = make_images(folder, 6)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])  # truncated
    paths[4].write_bytes(b"")  # empty
    summary = predict_to_file(runs[0], folder, tmp_path / "out.parquet", **FAST)
    assert (summary.n_inputs, summary.n_predicted, summary.n_failed) == (6, 4, 2)
    errors = pd.read_csv(errors_path(tmp_path / "out.parquet"))
    assert errors_path(tmp_path / "out.parquet").name == "out.parquet.errors.csv"
    assert list(errors.columns) == ["GalaxyID", "path", "reason"]
    assert list(errors["GalaxyID"]) == [1001, 1004]
    assert errors["path"].str.endswith(("1001.jpg", "1004.jpg")).all() and errors["reason"].str.len().min() > 0
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert sorted(out["GalaxyID"].tolist() + errors["GalaxyID"].tolist()) == list(range(1000, 1006))
    assert not (tmp_path / "out.parquet.parts").exists()


def test_string_ids_stay_strings(runs, images, tmp_path):
    files = sorted(images.glob("*.jpg"))[:3]
    (tmp_path / "empty.jpg").write_bytes(b"")
    pd.DataFrame({"name": ["007", "NGC 1", "x,y"], "file": [str(f) for f in files[:2]] + ["empty.jpg"]}
                 ).to_csv(tmp_path / "cat.csv", index=False)
    for suffix in ("csv", "parquet"):
        summary = predict_to_file(runs[0], tmp_path / "cat.csv", tmp_path / f"p.{suffix}", id_column="name",
                                  path_column="file", **FAST)
        out, errors = summary.read()
        assert list(out.columns[:2]) == ["name", "Class1.1"]
        assert list(out["name"]) == ["007", "NGC 1"] and list(errors["name"]) == ["x,y"]


def test_triage_thresholds_file_is_applied(runs, images, tmp_path):
    path = tmp_path / "triage_thresholds.json"
    path.write_text(json.dumps({"tree": "gz2", "target_accuracy": 0.99, "thresholds": {"Q1": 1.01, "Q6": 0.0}}))
    with pytest.warns(UserWarning, match="Q2, Q3"):
        df = predict(runs[0], images, triage_thresholds=path, **FAST)
    assert df["Q1_needs_expert"].all() and df["needs_expert"].all()  # Q1 is always reached
    assert not df["Q6_needs_expert"].any()
    expected_q7 = (df["Q7_reach"] >= 0.5) & (df["Q7_confidence"] < DEFAULT_THRESHOLD)
    assert (df["Q7_needs_expert"] == expected_q7).all()


def test_chunks_are_row_groups(runs, images, tmp_path):
    predict_to_file(runs[0], images, tmp_path / "p.parquet", chunk_rows=4, **FAST)
    meta = pq.ParquetFile(tmp_path / "p.parquet").metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 10
    assert [meta.row_group(i).num_rows for i in range(3)] == [4, 4, 2]


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_resume_after_kill_gives_identical_file(runs, images, tmp_path, monkeypatch, suffix):
    folder = tmp_path / "in"
    make_images(folder, 10)
    (folder / "1003.jpg").write_bytes(b"")
    opts = dict(chunk_rows=4, **FAST)
    whole = tmp_path / f"whole.{suffix}"
    predict_to_file(runs, folder, whole, **opts)

    killed = tmp_path / f"killed.{suffix}"
    # A real kill (SIGKILL, nothing runs after it) right after the first chunk is stored.
    status = run_killed("gzmorph.inference.parts:PartStore.write", 1,
                        ["predict", "--model", *map(str, runs), "--images", str(folder), "--out", str(killed),
                         "--chunk-rows", "4", "--batch-size", str(FAST["batch_size"]), "--workers", "0",
                         "--no-progress", "--device", "cpu"])
    assert status == -9
    parts = tmp_path / f"killed.{suffix}.parts"
    assert not killed.exists() and sorted(p.name for p in parts.glob("part-*")) == ["part-000000.parquet"]

    forwards = []
    real_call = Ensemble.__call__
    monkeypatch.setattr(Ensemble, "__call__", lambda self, x: forwards.append(len(x)) or real_call(self, x))
    summary = predict_to_file(runs, folder, killed, resume=True, **opts)
    assert summary.n_resumed == 4 and sum(forwards) == 6  # chunk 0 was not recomputed
    assert killed.read_bytes() == whole.read_bytes()
    assert errors_path(killed).read_bytes() == errors_path(whole).read_bytes()
    assert (summary.n_predicted, summary.n_failed) == (9, 1)
    assert manifest_path(killed).read_bytes() == manifest_path(whole).read_bytes()
    # A finished job resumed again has nothing to do.
    forwards.clear()
    again = predict_to_file(runs, folder, killed, resume=True, **opts)
    assert forwards == [] and (again.n_predicted, again.n_failed) == (9, 1)


def test_resume_refuses_changed_settings(runs, images, tmp_path, monkeypatch):
    out = tmp_path / "p.parquet"

    def die(self, chunk, table, errors):
        raise KeyboardInterrupt

    monkeypatch.setattr(PartStore, "write", die)
    with pytest.raises(KeyboardInterrupt):
        predict_to_file(runs[0], images, out, chunk_rows=4, **FAST)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="tta"):
        predict_to_file(runs[0], images, out, chunk_rows=4, resume=True, tta="rot", **FAST)


def test_resume_of_finished_output_checks_its_settings(runs, images, tmp_path, monkeypatch):
    out = tmp_path / "p" / "st.csv"
    first = predict_to_file(runs[0], images, out, **FAST)
    record = json.loads(manifest_path(out).read_text())
    assert manifest_path(out).name == "st.csv.manifest.json" and record["tta"] == "none"
    assert record["finished"]["n_predicted"] == 10 and not (tmp_path / "p" / "st.csv.parts").exists()
    kept = out.read_bytes()
    with pytest.raises(ValueError, match=r"st\.csv.*other settings.*tta.*without --resume"):
        predict_to_file(runs[0], images, out, tta="rot", resume=True, **FAST)
    with pytest.raises(ValueError, match="models"):
        predict_to_file(runs[1], images, out, resume=True, **FAST)
    assert out.read_bytes() == kept
    again = predict_to_file(runs[0], images, out, resume=True, **FAST)  # same settings: kept
    assert (again.n_resumed, again.n_predicted) == (10, first.n_predicted) and out.read_bytes() == kept
    # An output changed since its run, or one without a record, is not resumable.
    errors_path(out).write_text(errors_path(out).read_text() + "1,x.jpg,edited\n")
    with pytest.raises(ValueError, match="changed since"):
        predict_to_file(runs[0], images, out, resume=True, **FAST)
    manifest_path(out).unlink()
    with pytest.raises(ValueError, match=r"no settings record.*without --resume"):
        predict_to_file(runs[0], images, out, resume=True, **FAST)
    # Without --resume the output is rewritten with its new record.
    predict_to_file(runs[0], images, out, tta="rot", **FAST)
    assert json.loads(manifest_path(out).read_text())["tta"] == "rot"


def test_cli_resume_refuses_finished_output_of_other_settings(runs, images, tmp_path, capsys):
    out = tmp_path / "p" / "st.csv"
    base = ["predict", "--model", str(runs[0]), "--images", str(images), "--out", str(out), "--workers", "0",
            "--no-progress", "--batch-size", "4"]
    assert main([*base, "--tta", "none"]) == 0
    kept = out.read_bytes()
    capsys.readouterr()
    assert main([*base, "--tta", "paper", "--resume"]) == 2
    captured = capsys.readouterr()
    assert "resumed" not in captured.out and "tta" in captured.err and out.read_bytes() == kept


def test_cache_source_matches_files(runs, tmp_path):
    from gzmorph.data.cache import prepare
    from gzmorph.data.catalog import open_catalog

    folder = tmp_path / "in"
    make_images(folder, 5)
    (folder / "1002.jpg").write_bytes(b"")
    cache = prepare(open_catalog(folder), tmp_path / "cache", size=SIZE, workers=0, progress=False)
    from_files = predict(runs[0], folder, **FAST)
    from_cache = predict(runs[0], tmp_path / "cache", **FAST)
    pd.testing.assert_frame_equal(from_files, from_cache)
    errors = from_cache.attrs["errors"]
    assert list(errors["GalaxyID"]) == [1002] and errors["path"][0].endswith("1002.jpg")
    assert len(predict(runs[0], cache, **FAST)) == 4


def test_runs_of_different_image_sizes(runs, images, tmp_path):
    small = make_run(tmp_path / "small", 3, image_size=32)
    ens = Ensemble.load([runs[0], small], resolve_device("cpu"))
    assert ens.image_size == SIZE
    x = np.stack([decode(p, SIZE) for p in sorted(images.glob("*.jpg"))])
    per_run = ens.predict_runs(x)  # (2, 10, 37)
    assert per_run.shape == (2, 10, GZ2.n_answers)
    # the run at the decode size sees exactly its pixels; the other a resampled batch
    np.testing.assert_allclose(per_run[0], manual_forward(runs[0], images, [(0.0, 1.0, False)]), atol=1e-6)
    np.testing.assert_allclose(per_run[1], manual_forward(small, images, [(0.0, 1.0, False)]), atol=0.02)


def test_bf16_precision_on_cpu_is_close(runs, images):
    fp32 = predict(runs[0], images, **FAST)[GZ2.columns].to_numpy()
    bf16 = predict(runs[0], images, precision="bf16", **FAST)[GZ2.columns].to_numpy()
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    # bf16 keeps 8 bits of mantissa: were the setting ignored, the outputs would be identical.
    assert np.abs(bf16 - fp32).max() > 1e-4


def test_config_validation():
    with pytest.raises(ValueError, match="tta"):
        PredictConfig(tta="all")
    with pytest.raises(ValueError, match="batch_size"):
        PredictConfig(batch_size=0)
    with pytest.raises(ValueError, match="precision"):
        PredictConfig(precision="fp16")
    with pytest.raises(ValueError, match="threads"):
        PredictConfig(threads=0)
    assert PredictConfig(batch_size=64, chunk_rows=100).chunk_rows == 128  # whole batches per chunk


def test_cli(runs, images, tmp_path, capsys):
    out = tmp_path / "sub.csv"
    assert main(["predict", "--model", str(runs[0]), "--images", str(images), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0
    assert "10 inputs: 10 predicted" in capsys.readouterr().out
    assert pd.read_csv(out).shape == (10, 38) and errors_path(out).exists()
    assert main(["predict", "--model", str(runs[0]), "--out", str(out)]) == 2
    assert "--images" in capsys.readouterr().err
    pd.DataFrame({"GalaxyID": range(1000, 1010), "path": [str(images / f"{i}.jpg") for i in range(1000, 1010)],
                  "Class1.1": 0.5, "Class1.2": 0.5, "Class1.3": 0.0}).to_csv(tmp_path / "val.csv", index=False)
    assert main(["predict", "--model", str(runs[0]), str(runs[1]), "--fit-weights", str(tmp_path / "val.csv"),
                 "--weights-out", str(tmp_path / "w.json"), "--workers", "0", "--no-progress"]) == 0
    assert "ensemble weights" in capsys.readouterr().out
    assert json.loads((tmp_path / "w.json").read_text())["label_columns"] == ["Class1.1", "Class1.2", "Class1.3"]


def test_compiled_networks_predict_the_same(runs, images, monkeypatch):
    """--compile pads short batches to the compiled shape; results equal the eager ones."""
    eager = predict(runs[0], images, **FAST)
    real_compile, compiled_modules = torch.compile, []
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiled_modules.append(m) or real_compile(m, **kw))
    compiled = predict(runs[0], images, compile=True, **FAST)
    assert len(compiled_modules) == 1  # the option reached torch.compile
    assert len(eager) % FAST["batch_size"] != 0  # the last batch is short: the padding path runs
    assert list(compiled["GalaxyID"]) == list(eager["GalaxyID"])
    np.testing.assert_allclose(compiled[GZ2.columns].to_numpy(), eager[GZ2.columns].to_numpy(), atol=1e-5)
