"""Issue 25, the output-path guard: nothing a user points an output at is destroyed.

One test per item of the issue (its number in the name), on small generated data; each
fails without its fix.  The rule they check (``gzmorph.outputs``): no command writes
into or deletes a path that is an input of the job, or that it did not create.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from gzmorph.cli import main
from gzmorph.errors import OutputError, RunError
from gzmorph.outputs import MARKER, claim_folder
from gzmorph.runtime import atomic_write
from gzmorph.models.rundir import claim_run_dir

from factories import make_images, make_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--workers", "0", "--no-progress"]


def _digest(folder: Path) -> dict[str, str]:
    """Every file of a folder (hidden ones too) by its content."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_b(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "b", 2)


def test_issue25_01_resume_without_last_checkpoint_refuses_and_keeps_the_run(tmp_path, tiny_kaggle, capsys):
    """Item 1: `train --resume` without checkpoints/last.pt started a new paper run over the old one."""
    run = make_run(tmp_path / "r", 3)  # config.json and best.pt, no last.pt
    before = _digest(run)
    rc = main(["train", "--data", str(tiny_kaggle), "--out", str(run), "--resume", "--max-minutes", "0.05", *FAST])
    assert rc == 2 and "nothing to resume" in capsys.readouterr().err
    # Nor is it reinitialised in place without --resume.
    rc = main(["train", "--data", str(tiny_kaggle), "--out", str(run), "--preset", "small", "--examples", "8",
               "--batch-size", "4", "--eval-every", "8", *FAST])
    assert rc == 2 and "already holds a run" in capsys.readouterr().err
    assert _digest(run) == before


def test_issue25_02_predict_out_inside_a_cache_is_refused(tmp_path, run_a, capsys):
    """Item 2: `predict --cache c --out c/catalog.parquet` overwrote the cache (then KeyError: 'path')."""
    images = tmp_path / "imgs"
    make_images(images, 3)
    cache = tmp_path / "c"
    assert main(["prepare", str(images), "--out", str(cache), "--size", "24", *FAST]) == 0
    before = _digest(cache)
    for out in (cache / "catalog.parquet", cache / "new.csv", run_a / "p.csv"):
        rc = main(["predict", "--model", str(run_a), "--cache", str(cache), "--out", str(out), *FAST])
        assert rc == 2 and "inside the input folder" in capsys.readouterr().err
    # Every file of the input folder counts, also under another name (a hard link outside it).
    linked = tmp_path / "linked.parquet"
    os.link(cache / "catalog.parquet", linked)
    rc = main(["predict", "--model", str(run_a), "--cache", str(cache), "--out", str(linked), *FAST])
    assert rc == 2 and "is the same file as" in capsys.readouterr().err
    assert _digest(cache) == before


def test_issue25_03_weights_out_never_replaces_a_run_config_or_the_catalog(tmp_path, run_a, run_b, tiny_kaggle,
                                                                          capsys):
    """Item 3: `--weights-out r/config.json` replaced a run's config (and `--weights-out val.csv` the catalog)."""
    runs, labels = _digest(run_a), _digest(tiny_kaggle)
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}')
    for target, message in ((run_a / "config.json", "would overwrite the input"),
                            (tiny_kaggle / "training_solutions_rev1.csv", "inside the input folder"),
                            (mine, "not a weights file")):
        rc = main(["predict", "--model", str(run_a), str(run_b), "--fit-weights", str(tiny_kaggle),
                   "--weights-out", str(target), *FAST])
        assert rc == 2 and message in capsys.readouterr().err
    assert _digest(run_a) == runs and _digest(tiny_kaggle) == labels and mine.read_text() == '{"mine": true}'


def test_issue25_04_review_export_never_replaces_the_review_predictions(tmp_path, capsys):
    """Item 4: `review export --out p.parquet` replaced the review's own predictions file."""
    from gzmorph.review.sample import write_sample
    from gzmorph.review.server import ReviewConfig, open_session

    preds, images = write_sample(tmp_path, n=4, seed=1, size=32)
    session = open_session(ReviewConfig(predictions=preds, catalog=images, db=tmp_path / "r.sqlite"))
    gid = str(session.predictions.index[0])
    session.store.record_answer(gid, "ann", "Q1", session.tree.questions[0].columns[0])
    before = preds.read_bytes()
    rc = main(["review", "export", "--db", str(tmp_path / "r.sqlite"), "--out", str(preds)])
    assert rc == 2 and "would overwrite the input" in capsys.readouterr().err
    assert preds.read_bytes() == before
    labels = tmp_path / "labels.csv"
    assert main(["review", "export", "--db", str(tmp_path / "r.sqlite"), "--out", str(labels)]) == 0
    # An existing file is replaced only when asked.
    assert main(["review", "export", "--db", str(tmp_path / "r.sqlite"), "--out", str(labels)]) == 2
    assert main(["review", "export", "--db", str(tmp_path / "r.sqlite"), "--out", str(labels), "--overwrite"]) == 0


def test_issue25_05_mock_recognises_its_datasets_by_its_marker_not_by_truth_csv(tmp_path, capsys):
    """Item 5: `mock --out` deleted the images of any folder holding a truth.csv."""
    folder = tmp_path / "kaggle"
    make_images(folder / "images_training_rev1", 2)
    (folder / "truth.csv").write_text("GalaxyID,kind\n1000,spiral\n")
    before = _digest(folder)
    rc = main(["mock", "--n", "1", "--out", str(folder), "--size", "32", "--workers", "0", "--no-progress"])
    assert rc == 2 and MARKER in capsys.readouterr().err
    assert _digest(folder) == before
    # Its own dataset (marked) is replaced as before.
    own = tmp_path / "m"
    assert main(["mock", "--n", "2", "--out", str(own), "--size", "32", "--workers", "0", "--no-progress"]) == 0
    assert main(["mock", "--n", "1", "--out", str(own), "--size", "32", "--workers", "0", "--no-progress"]) == 0
    assert len(list((own / "images_training_rev1").glob("*.jpg"))) == 1


def test_issue25_06_temporary_names_are_unique_and_never_someone_elses(tmp_path, run_a):
    """Item 6: `export --out X` first deleted `.X.tmp`, even when that was the run being exported."""
    pytest.importorskip("safetensors")
    victim = tmp_path / ".pkg.tmp"
    shutil.copytree(run_a, victim)
    before = _digest(victim)
    assert main(["export", str(victim), "--out", str(tmp_path / "pkg")]) == 0
    assert _digest(victim) == before and (tmp_path / "pkg" / "model.safetensors").is_file()
    # Files too: a user's `.name.tmp` beside an atomically written file survives.
    mine = tmp_path / ".out.txt.tmp"
    mine.write_text("mine")
    atomic_write(tmp_path / "out.txt", lambda tmp: tmp.write_text("new"))
    assert mine.read_text() == "mine" and (tmp_path / "out.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == [".out.txt.tmp", ".pkg.tmp"]


def test_issue25_08_analyze_out_is_never_an_image_folder(tmp_path, run_a, capsys):
    """Item 8: `analyze --out` wrote PNGs and HTML among the images (then counted as galaxies)."""
    images = tmp_path / "imgs"
    make_images(images, 4)
    before = _digest(images)
    for out in (images, images / "analysis"):
        rc = main(["analyze", "--model", str(run_a), "--images", str(images), "--out", str(out), *FAST])
        assert rc == 2 and "input" in capsys.readouterr().err
    # Nor into another folder of the user's images (not an input of this job).
    other = tmp_path / "other"
    make_images(other, 2)
    rc = main(["analyze", "--model", str(run_a), "--images", str(images), "--out", str(other), *FAST])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert _digest(images) == before and len(list(other.iterdir())) == 2


def test_issue25_14_prepare_overwrite_only_replaces_a_cache(tmp_path, capsys):
    """Item 14: `prepare --overwrite` into a folder that is not a cache replaced the user's catalog.parquet."""
    images = tmp_path / "imgs"
    make_images(images, 3)
    folder = tmp_path / "mine"
    folder.mkdir()
    pd.DataFrame({"GalaxyID": [1], "path": ["x.jpg"]}).to_parquet(folder / "catalog.parquet")
    (folder / "errors.csv").write_text("id,path,reason\n")
    before = _digest(folder)
    rc = main(["prepare", str(images), "--out", str(folder), "--overwrite", "--size", "24", *FAST])
    assert rc == 2 and "not written as a cache" in capsys.readouterr().err
    assert _digest(folder) == before


def test_issue25_14_train_out_must_be_new_or_a_run(tmp_path, tiny_kaggle, capsys):
    """Item 14: `train --out` accepted a non-empty folder that is not a run, or the image folder."""
    folder = tmp_path / "mine"
    make_images(folder, 2)
    before = _digest(folder)
    for out, message in ((folder, "not written as a run"), (tiny_kaggle / "images_training_rev1", "input")):
        rc = main(["train", "--data", str(tiny_kaggle), "--out", str(out), "--preset", "small", "--examples", "8",
                   "--batch-size", "4", "--eval-every", "8", *FAST])
        assert rc == 2 and message in capsys.readouterr().err
    assert _digest(folder) == before
    assert "training_solutions_rev1.csv" in _digest(tiny_kaggle)


def test_issue25_14_predict_never_replaces_the_mock_test_labels(tmp_path, run_a, capsys):
    """Item 14: `predict --split test --out m/test_solutions_rev1.csv` replaced the mock's test labels."""
    m = tmp_path / "m"
    assert main(["mock", "--n", "2", "--n-test", "2", "--out", str(m), "--size", "32", *FAST]) == 0
    before = _digest(m)
    rc = main(["predict", "--model", str(run_a), "--catalog", str(m), "--split", "test",
               "--out", str(m / "test_solutions_rev1.csv"), *FAST])
    assert rc == 2 and "inside the input folder" in capsys.readouterr().err
    assert _digest(m) == before


@pytest.mark.slow
def test_issue25_14_export_onnx_refuses_an_existing_file_unless_overwrite(tmp_path, run_a, capsys):
    """Item 14: `export --format onnx --out existing.onnx` overwrote it silently."""
    pytest.importorskip("onnxscript")
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"mine")
    rc = main(["export", str(run_a), "--format", "onnx", "--out", str(existing)])
    assert rc == 2 and "--overwrite" in capsys.readouterr().err and existing.read_bytes() == b"mine"
    assert main(["export", str(run_a), "--format", "onnx", "--out", str(existing), "--overwrite"]) == 0
    assert existing.read_bytes() != b"mine"


def test_issue25_guard_trusts_only_the_markers_it_writes(tmp_path):
    """The guard's proof of ownership is the marker the creating command wrote, of the right kind."""
    run = make_run(tmp_path / "run", 0)  # written by save_run, the one run writer
    assert json.loads((run / MARKER).read_text())["gzmorph"] == "run"
    with pytest.raises(OutputError, match="holds a gzmorph run"):
        claim_folder(run, "cache")
    with pytest.raises(RunError, match="already holds a run"):
        claim_run_dir(run, resume=False)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")  # a common file name proves nothing
    with pytest.raises(OutputError, match="not written as a run"):
        claim_run_dir(plain, resume=False)


def test_issue25_guard_never_deletes_a_folder_of_error_parts_it_did_not_write(tmp_path, run_a, capsys):
    """A prediction starting afresh deletes its error-part folder only when that holds its own parts."""
    images = tmp_path / "imgs"
    make_images(images, 2)
    out = tmp_path / "p.csv"
    foreign = tmp_path / "p.csv.parts.errors"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("mine")
    rc = main(["predict", "--model", str(run_a), "--images", str(images), "--out", str(out), *FAST])
    assert rc == 2 and "not the error parts" in capsys.readouterr().err
    assert (foreign / "mine.txt").read_text() == "mine"
