"""Issue 15: nothing lost, nothing overwritten, nothing mixed.

Each test reproduces one case found by feeding the CLI bad input (the item number of
the issue is in the test name) on small generated data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gzmorph.cli import main

from factories import make_images, make_run  # noqa: E402

# Tiny tensors on a shared 2-core machine: one torch thread is several times faster.
pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--workers", "0", "--batch-size", "4", "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder, 6)
    return folder


def _catalog(tmp_path: Path, images: Path, suffix: str) -> Path:
    frame = pd.DataFrame({"GalaxyID": [int(p.stem) for p in sorted(images.glob("*.jpg"))],
                          "path": [str(p) for p in sorted(images.glob("*.jpg"))]})
    path = tmp_path / f"cat{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_15_01_predict_out_equal_to_catalog_is_refused(tmp_path, images, run_a, suffix, capsys):
    """Item 1: `--out` equal to the catalog used to replace the catalog (exit 0)."""
    cat = _catalog(tmp_path, images, suffix)
    before = cat.read_bytes()
    rc = main(["predict", "--model", str(run_a), "--catalog", str(cat), "--out", str(cat), *FAST])
    assert rc == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert cat.read_bytes() == before


def test_15_01_predict_side_file_equal_to_input_is_refused(tmp_path, images, run_a, capsys):
    """Item 1: the error side file of --out may not be an input either (here the thresholds)."""
    out = tmp_path / "p.csv"
    from gzmorph.inference.parts import errors_path
    thresholds = errors_path(out)
    thresholds.write_text('{"thresholds": {}}')
    rc = main(["predict", "--model", str(run_a), "--images", str(images), "--out", str(out),
               "--triage-thresholds", str(thresholds), *FAST])
    assert rc == 2 and "would overwrite the input" in capsys.readouterr().err
    assert thresholds.read_text() == '{"thresholds": {}}' and not out.exists()


def test_15_09_predict_out_existing_directory_fails_before_work(tmp_path, images, run_a, capsys):
    """Item 9: --out naming a directory used to run the whole job, then die leaving *.parts/."""
    out = tmp_path / "dir.csv"
    out.mkdir()
    rc = main(["predict", "--model", str(run_a), "--images", str(images), "--out", str(out), *FAST])
    assert rc == 2
    assert "existing directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.csv"]


def test_15_01_evaluate_out_holding_the_predictions_file_is_refused(tmp_path, capsys):
    """Item 1: `evaluate --out` must not write a report file over an input."""
    preds = tmp_path / "metrics.json"
    preds.write_text("{}")
    rc = main(["evaluate", "--predictions", str(preds), "--labels", str(preds), "--out", str(tmp_path)])
    assert rc == 2 and "would overwrite the input" in capsys.readouterr().err
    assert preds.read_text() == "{}"


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_15_01_train_and_prepare_out_holding_the_data_is_refused(tmp_path, command, capsys):
    """Item 1: a run or cache folder that is (or holds) the data is refused before any work."""
    data = tmp_path / "cat.csv"
    data.write_text("GalaxyID,path\n1,a.jpg\n")
    argv = (["train", "--data", str(data), "--out", str(tmp_path)] if command == "train"
            else ["prepare", str(data), "--out", str(tmp_path), "--overwrite"])
    assert main(argv) == 2
    assert "holds the input" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cat.csv"]


def test_15_06_csv_and_parquet_outputs_in_one_folder_keep_their_own_errors(tmp_path, run_a, capsys):
    """Item 6: `x.csv` and `x.parquet` used to share `x.errors.csv`; the second erased the first's rows."""
    folder = tmp_path / "imgs"
    make_images(folder, 3)
    (folder / "bad.jpg").write_bytes(b"not a jpeg")
    for suffix in (".csv", ".parquet"):
        assert main(["predict", "--model", str(run_a), "--images", str(folder), "--out",
                     str(tmp_path / f"x{suffix}"), *FAST]) == 0
    from gzmorph.inference.parts import errors_path
    assert errors_path(tmp_path / "x.csv") != errors_path(tmp_path / "x.parquet")
    for suffix in (".csv", ".parquet"):
        errors = pd.read_csv(errors_path(tmp_path / f"x{suffix}"), dtype=str)
        assert errors["GalaxyID"].tolist() == ["bad"]
        # The finished output still resumes (its record matches its own error file).
        assert main(["predict", "--model", str(run_a), "--images", str(folder), "--out",
                     str(tmp_path / f"x{suffix}"), "--resume", *FAST]) == 0


class _Killed(Exception):
    pass


def _interrupt_after_first_part(monkeypatch) -> None:
    """Stop a prediction job right after its first part is written (as a kill would)."""
    from gzmorph.inference.parts import PartStore
    real = PartStore.write

    def write_once(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise _Killed

    monkeypatch.setattr(PartStore, "write", write_once)


def test_15_02_resume_with_other_weights_of_the_same_step_is_refused(tmp_path, images, monkeypatch, capsys):
    """Item 2: copying another run's checkpoint (same step) over A's used to resume into a mixed file."""
    import shutil
    run = make_run(tmp_path / "a", 1)
    other = make_run(tmp_path / "b", 2)
    out = tmp_path / "p.csv"
    argv = ["predict", "--model", str(run), "--images", str(images), "--out", str(out), "--chunk-rows", "4",
            *FAST]
    _interrupt_after_first_part(monkeypatch)
    with pytest.raises(_Killed):
        main(argv)
    monkeypatch.undo()
    shutil.copy(other / "checkpoints" / "best.pt", run / "checkpoints" / "best.pt")
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "model_weights" in err and str(run.resolve()) in err
    assert not out.exists()
    # A finished output is likewise refused once its model's weights change.
    assert main(argv) == 0
    make_run(run, 3)  # new weights, same step
    assert main([*argv, "--resume"]) == 2
    assert "model_weights" in capsys.readouterr().err


def test_15_03_broken_symlinks_and_fifos_are_error_rows(tmp_path, run_a, capsys):
    """Item 3: a broken symlink and a FIFO in --images used to vanish (22 of 23 inputs reported)."""
    import os
    folder = tmp_path / "imgs"
    make_images(folder, 3)
    (folder / "2000.jpg").symlink_to(tmp_path / "missing.jpg")
    os.mkfifo(folder / "2001.jpg")  # opening it for reading would block
    (folder / "2002.png").mkdir()
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(run_a), "--images", str(folder), "--out", str(out), *FAST]) == 0
    assert capsys.readouterr().out.startswith("6 inputs: 3 predicted")
    from gzmorph.inference.parts import errors_path
    errors = pd.read_csv(errors_path(out)).set_index("GalaxyID")["reason"].to_dict()
    assert errors == {2000: "broken symlink", 2001: "not a regular file", 2002: "not a regular file"}


def _kaggle_with_unlabelled(root: Path, unlabelled: list[int]) -> Path:
    from conftest import make_tiny_kaggle
    make_tiny_kaggle(root, n=20, side=48)
    labels = root / "training_solutions_rev1.csv"
    frame = pd.read_csv(labels)
    frame.iloc[unlabelled, 1:] = np.nan
    frame.to_csv(labels, index=False)
    return root


def _small_cfg():
    from gzmorph.training.recipes import get_preset
    return get_preset("small").override(examples=16, batch_size=8, eval_every=8, image_size=32)


def test_15_04_validation_split_without_labels_is_refused(tmp_path):
    """Item 4: a validation split with no labels reported RMSE 0.0000 and chose best.pt on it."""
    from gzmorph.errors import CatalogError
    from gzmorph.training.train import train
    data = _kaggle_with_unlabelled(tmp_path / "k", [18, 19])  # the last rows by id: the validation split
    with pytest.raises(CatalogError, match=r"validation split \(2 rows.*no labelled entries.*Class1\.1"):
        train(_small_cfg(), data, tmp_path / "run", device="cpu", workers=0, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_15_04_unlabelled_training_rows_are_dropped_and_counted(tmp_path):
    """Item 4: training rows without any label are dropped, and the count is recorded in config.json."""
    import json
    from gzmorph.training.trainset import load_training_data
    from gzmorph.tree import GZ2
    data = _kaggle_with_unlabelled(tmp_path / "k", [0, 3, 5])
    ds = load_training_data(data, _small_cfg(), GZ2, tmp_path / "run", workers=0, progress=False)
    assert ds.n_unlabelled == 3 and len(ds.train_images) == len(ds.train_labels) == 18 - 3
    assert not np.isnan(ds.train_labels.numpy()).all(axis=1).any()
    from gzmorph.training.train import train
    train(_small_cfg(), data, tmp_path / "run2", device="cpu", workers=0, progress=False)
    facts = json.loads((tmp_path / "run2" / "config.json").read_text())["data"]
    assert facts["n_unlabelled_dropped"] == 3 and facts["n_train"] == 15


def test_15_07_train_resume_on_other_data_is_refused(tmp_path, capsys):
    """Item 7: `train --resume` with another --data used to exit 0 and rewrite config.json."""
    import json
    import shutil
    from gzmorph.errors import RunError
    from gzmorph.training.train import train
    data = _kaggle_with_unlabelled(tmp_path / "k", [])
    run = tmp_path / "run"
    train(_small_cfg(), data, run, device="cpu", workers=0, progress=False)
    config_before = (run / "config.json").read_bytes()
    other = tmp_path / "k2"
    shutil.copytree(data, other)
    with pytest.raises(RunError, match="other data.*path"):
        train(_small_cfg(), other, run, device="cpu", workers=0, progress=False, resume=True)
    # Same path, other rows: the fingerprint tells.
    labels = data / "training_solutions_rev1.csv"
    pd.read_csv(labels).iloc[:-1].to_csv(labels, index=False)
    (data / "images_training_rev1" / "519.jpg").unlink()
    with pytest.raises(RunError, match="fingerprint"):
        train(_small_cfg(), data, run, device="cpu", workers=0, progress=False, resume=True)
    assert (run / "config.json").read_bytes() == config_before
    # The CLI says it in one line; --new-data continues and records what it left.
    argv = ["train", "--data", str(data), "--out", str(run), "--resume", "--preset", "small", "--examples", "16",
            "--batch-size", "8", "--eval-every", "8", "--image-size", "32", "--workers", "0", "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 2 and "--new-data" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="new data"):
        assert main([*argv, "--new-data"]) == 0
    facts = json.loads((run / "config.json").read_text())["data"]
    assert [h["until_step"] for h in facts["data_history"]] == [2]


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("damage", ["pickle", "empty", "truncated", "config"])
def test_15_08_corrupt_checkpoints_and_configs_give_one_line(tmp_path, images, damage, capsys, monkeypatch):
    """Item 8: a raw pickle, empty or truncated best.pt, or a broken config.json used to give a traceback."""
    import pickle
    monkeypatch.chdir(tmp_path)
    run = make_run(tmp_path / "run", 1)
    best = run / "checkpoints" / "best.pt"
    if damage == "pickle":
        best.write_bytes(pickle.dumps({"model": _Payload()}))
    elif damage == "empty":
        best.write_bytes(b"")
    elif damage == "truncated":
        best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])
    else:
        (run / "config.json").write_text('{"format": 2,\n  "train": ')
    rc = main(["predict", "--model", str(run), "--images", str(images), "--out", str(tmp_path / "p.csv"), *FAST])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert ("config.json" if damage == "config" else "best.pt") in err
    assert "weights_only" not in err and "Traceback" not in err
    assert not (tmp_path / "PWNED").exists()


def test_15_10_resume_truncates_metrics_to_the_checkpoint_step(tmp_path, monkeypatch):
    """Item 10: a kill between a metrics line and its checkpoint left that step twice after --resume."""
    import json
    from gzmorph.training import train as train_module
    data = _kaggle_with_unlabelled(tmp_path / "k", [])
    run = tmp_path / "run"
    real = train_module.save_checkpoint
    calls = []

    def dying(path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # step 2's metrics line is written, its checkpoints are not
            raise _Killed
        real(path, *args, **kwargs)

    monkeypatch.setattr(train_module, "save_checkpoint", dying)
    with pytest.raises(_Killed):
        train_module.train(_small_cfg().override(examples=24), data, run, device="cpu", workers=0, progress=False)
    monkeypatch.undo()
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    train_module.train(_small_cfg().override(examples=24), data, run, device="cpu", workers=0, progress=False,
                       resume=True)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_15_12_csv_with_byte_order_mark_is_read(tmp_path):
    """Item 12: "CSV UTF-8" from a spreadsheet (BOM first) was refused: no id column '\\ufeffGalaxyID'."""
    from gzmorph.data.catalog import open_catalog
    from gzmorph.evaluation.inputs import read_table
    path = tmp_path / "labels.csv"
    path.write_bytes("GalaxyID,Class1.1,Class1.2,Class1.3\n7,0.5,0.25,0.25\n".encode("utf-8-sig"))
    catalog = open_catalog(path, path_column=None)
    assert catalog.ids.tolist() == [7] and catalog.label_columns == ["Class1.1", "Class1.2", "Class1.3"]
    assert list(read_table(path).columns)[0] == "GalaxyID"


def test_15_13_ids_that_are_not_canonical_integers_stay_strings(tmp_path):
    """Item 13: image files `0.jpg` and `-0.jpg` both became id 0 (two output rows with one id)."""
    from gzmorph.data.catalog import open_catalog
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("0.jpg", "-0.jpg", "-5.jpg"):
        (folder / name).write_bytes(b"")
    ids = open_catalog(folder).ids
    assert ids.dtype == object and sorted(ids.tolist()) == ["-0", "-5", "0"]
    (folder / "-0.jpg").unlink()
    assert open_catalog(folder).ids.tolist() == [-5, 0]


def test_15_15_empty_prediction_id_is_named_and_ids_stay_integers(tmp_path):
    """Item 15: one empty id gave "no id in common (e.g. ['nan', '100023.0', ...])"."""
    from gzmorph.errors import CatalogError
    from gzmorph.evaluation.inputs import load_predictions
    from gzmorph.tree import GZ2
    path = tmp_path / "preds.csv"
    path.write_text("GalaxyID,Class1.1\n100023,0.5\n,0.25\n100024,0.75\n")
    with pytest.raises(CatalogError, match=r"preds\.csv: 1 empty id.*row 1 \(file line 3\)"):
        load_predictions(path, GZ2, "GalaxyID")
    path.write_text("GalaxyID,Class1.1,Class1.2\n100023,0.5,\n100024,0.25,\n")  # an empty column
    keys, _, _ = load_predictions(path, GZ2, "GalaxyID")
    assert keys.dtype == np.int64 and keys.tolist() == [100023, 100024]


@pytest.fixture(scope="module")
def kaggle_missing_image(tmp_path_factory) -> Path:
    """A small Kaggle layout whose label row 501 has no image file."""
    from conftest import make_tiny_kaggle
    root = make_tiny_kaggle(tmp_path_factory.mktemp("k") / "kaggle", n=6, side=40)
    (root / "images_training_rev1" / "501.jpg").unlink()
    return root


def test_15_11_evaluate_needs_labels_only(tmp_path, kaggle_missing_image, capsys):
    """Item 11: `evaluate --labels KAGGLE_DIR` refused labels whose images are missing ("label row(s) without an image")."""
    labels = pd.read_csv(kaggle_missing_image / "training_solutions_rev1.csv")
    preds = tmp_path / "preds.csv"
    labels.iloc[:5].to_csv(preds, index=False)
    out = tmp_path / "report"
    assert main(["evaluate", "--predictions", str(preds), "--labels", str(kaggle_missing_image),
                 "--out", str(out), "--bins", "3"]) == 0
    assert "5 images matched" in capsys.readouterr().out
    unmatched = pd.read_csv(out / "unmatched_ids.csv")
    # Item 16: the id column is called as in the catalog, not "id".
    assert list(unmatched.columns) == ["GalaxyID", "present_in"] and unmatched["GalaxyID"].tolist() == [505]


def test_15_16_predict_on_catalog_with_a_missing_image_reports_an_error_row(tmp_path, kaggle_missing_image, run_a,
                                                                         capsys):
    """Item 16: a catalog with one missing image stopped `predict` ("label row(s) without an image")."""
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(run_a), "--catalog", str(kaggle_missing_image), "--out", str(out),
                 *FAST]) == 0
    assert capsys.readouterr().out.startswith("6 inputs: 5 predicted")
    from gzmorph.inference.parts import errors_path
    errors = pd.read_csv(errors_path(out))
    assert errors["GalaxyID"].tolist() == [501] and errors["reason"].tolist() == ["file not found"]


@pytest.mark.parametrize("bad, message", [("", r"row 1 \(file line 3\), column 'Class1.2'.*empty"),
                                          ("5.0", r"row 1 \(file line 3\), column 'Class1.2'.*outside \[0, 1\]"),
                                          ("-1.0", r"row 1 \(file line 3\), column 'Class1.2'.*outside")], ids=["nan", "above-1", "below-0"])
def test_15_05_nan_and_out_of_range_predictions_are_refused(tmp_path, bad, message):
    """Item 5: NaN cells were left out silently and 5.0 / -1.0 scored as given."""
    from gzmorph.errors import CatalogError
    from gzmorph.evaluation.inputs import load_predictions
    from gzmorph.tree import GZ2
    path = tmp_path / "preds.csv"
    path.write_text(f"GalaxyID,Class1.1,Class1.2\n1,0.5,0.5\n2,0.5,{bad}\n3,1.0000001,0\n")
    with pytest.raises(CatalogError, match=message):
        load_predictions(path, GZ2, "GalaxyID")
    path.write_text("GalaxyID,Class1.1,Class1.2,Class1.3\n1,0.5,0.5,\n2,0.5,0.5,\n")  # Class1.3 not predicted
    assert load_predictions(path, GZ2, "GalaxyID")[0].tolist() == [1, 2]


def test_15_14_file_names_with_newline_comma_quote_are_counted_and_recorded_exactly(tmp_path, run_a, capsys):
    """Item 14: names holding a newline, comma or quote gave wrong counts and altered recorded paths.

    (Not reproduced on this branch: kept as a guard of the exact counts and paths.)
    """
    import shutil
    folder = tmp_path / "imgs"
    good = make_images(folder, 2)
    shutil.copy(good[0], folder / "a\nb.jpg")
    shutil.copy(good[1], folder / 'c,"d.jpg')
    (folder / "bad\nx.jpg").write_bytes(b"")
    (folder / 'bad,"y.jpg').write_bytes(b"junk")
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(run_a), "--images", str(folder), "--out", str(out), *FAST]) == 0
    assert capsys.readouterr().out.startswith("6 inputs: 4 predicted")
    from gzmorph.inference.parts import errors_path
    preds = pd.read_csv(out, dtype={"GalaxyID": str})
    errors = pd.read_csv(errors_path(out), dtype={"GalaxyID": str})
    assert sorted(preds["GalaxyID"]) == sorted(["1000", "1001", "a\nb", 'c,"d'])
    assert sorted(errors["path"]) == sorted([str((folder / "bad\nx.jpg").resolve()),
                                             str((folder / 'bad,"y.jpg').resolve())])


def _run_trained_on(path: Path, seed: int, columns: list[str] | None) -> Path:
    from gzmorph.models.rundir import read_run, save_run
    run = make_run(path, seed)
    cfg, data = read_run(run)
    save_run(run, cfg, {**data, **({"label_columns": columns} if columns is not None else {})})
    return run


def test_15_17_answers_the_model_never_learned_are_marked(tmp_path, images):
    """Item 17: a model trained on some answer columns wrote confident numbers for the others."""
    import json
    from gzmorph.inference.predict import predict_to_file
    from gzmorph.inference.parts import manifest_path
    from gzmorph.tree import GZ2
    q1 = ["Class1.1", "Class1.2", "Class1.3"]
    run = _run_trained_on(tmp_path / "q1", 1, q1)
    opts = dict(workers=0, progress=False, batch_size=4, device="cpu")
    with pytest.warns(UserWarning, match=r"never trained on 34 answer column\(s\) of Q2, Q3.*NaN"):
        summary = predict_to_file(run, images, tmp_path / "p.parquet", **opts)
    frame, _ = summary.read()
    assert frame[q1].notna().all().all() and frame[GZ2.columns[3:]].isna().all().all()
    assert frame["Q1_confidence"].notna().all() and frame["Q2_confidence"].isna().all()
    assert frame["Q2_answer"].isna().all() and not frame["Q2_needs_expert"].any()
    # Kaggle CSV: the numbers the format needs, a warning, and the list in the manifest.
    with pytest.warns(UserWarning, match="kept in the CSV"):
        predict_to_file(run, images, tmp_path / "p.csv", **opts)
    assert pd.read_csv(tmp_path / "p.csv")[GZ2.columns].notna().all().all()
    assert json.loads(manifest_path(tmp_path / "p.csv").read_text())["untrained"] == GZ2.columns[3:]
    # An ensemble's trained set is the union of its members'.
    full = _run_trained_on(tmp_path / "all", 2, None)
    both, _ = predict_to_file([run, full], images, tmp_path / "both.parquet", **opts).read()
    assert both[GZ2.columns].notna().all().all()
    # evaluate scores the trained answers only.
    from gzmorph.evaluation.evaluate import evaluate
    labels = frame[["GalaxyID"]].assign(**{c: 1 / 3 for c in q1}, **{c: 0.5 for c in ("Class2.1", "Class2.2")})
    with pytest.warns(UserWarning, match="not scored"):
        ev = evaluate(tmp_path / "p.parquet", labels)
    assert ev.rmse_columns == q1
