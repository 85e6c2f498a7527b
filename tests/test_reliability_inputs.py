"""Issue 25, inputs and answers: one-line errors, checked model outputs, honest training and review.

One test per item of the issue (its number in the name) and for the two leftovers of
the earlier round, on small generated data; each fails without its fix.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gzmorph.cli import main
from gzmorph.errors import CatalogError, RunError
from gzmorph.inference.ensemble import Ensemble
from gzmorph.runtime import resolve_device
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import load_run, read_run, save_run
from gzmorph.training.train import train
from gzmorph.tree import GZ2

from conftest import make_tiny_kaggle  # noqa: E402
from factories import SIZE, make_images, make_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--workers", "0", "--no-progress"]


def _tiny_cfg(**changes):
    base = get_preset("small")
    return base.override(model=replace(base.model, conv_channels=(4, 4, 8, 8), dense_units=(16,)),
                         image_size=SIZE, batch_size=8, examples=16, eval_every=8, **changes)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder, 4)
    return folder


@pytest.fixture(scope="module")
def trained(tiny_kaggle, tmp_path_factory) -> Path:
    """A really trained tiny run (2 steps): checkpoints/last.pt and best.pt to resume from."""
    out = tmp_path_factory.mktemp("trained") / "run"
    train(_tiny_cfg(), tiny_kaggle, out, device="cpu", workers=0, progress=False)
    return out


def _one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2 and "Traceback" not in err and err.count("error:") == 1, err
    for word in words:
        assert word in err, err


# ---------------------------------------------------------------------------------- item 7
def test_issue25_07_review_server_answers_only_its_host_and_origin(tmp_path):
    """Item 7: DNS rebinding: an answer stored as `alice` with `Host: attacker.example`."""
    from starlette.testclient import TestClient

    from gzmorph.review.app import create_app
    from gzmorph.review.sample import write_sample
    from gzmorph.review.server import ReviewConfig, open_session

    from review.review_helpers import csrf_of  # tests/review, a folder of tests/ (on the path)

    preds, imgs = write_sample(tmp_path, n=4, seed=1, size=32)
    session = open_session(ReviewConfig(predictions=preds, catalog=imgs, db=tmp_path / "r.sqlite",
                                        allowed_hosts=("review.lab.example",)))
    app = create_app(session)
    evil = TestClient(app, base_url="http://attacker.example:8000", follow_redirects=False)
    assert evil.get("/").status_code == 403  # no page, so no CSRF token to read
    own = TestClient(app, base_url="http://127.0.0.1:8000", follow_redirects=False)
    csrf = csrf_of(own.get("/").text)
    form = {"csrf": csrf, "reviewer": "alice", "question": ""}
    foreign = own.post("/settings", data=form, headers={"Origin": "http://attacker.example:8000"})
    assert foreign.status_code == 403
    assert own.post("/settings", data=form, headers={"Origin": "null"}).status_code == 403
    assert own.post("/settings", data=form, headers={"Origin": "http://127.0.0.1:8000"}).status_code == 303
    gid = str(session.predictions.index[0])
    answer = {"csrf": csrf, "question": "Q1", "answer": GZ2.questions[0].columns[0]}
    r = own.post(f"/galaxy/{gid}/answer", data=answer, headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403 and session.store.table().empty
    # A configured name is served.
    proxy = TestClient(app, base_url="http://review.lab.example", follow_redirects=False)
    assert proxy.get("/").status_code == 200


# ---------------------------------------------------------------------------------- item 9
def test_issue25_09_ensemble_averages_an_answer_over_the_runs_trained_on_it(tmp_path):
    """Item 9: a Q1-only run and a full run: Class2.1 was the mean of a real and an untrained value."""
    q1_only, full = make_run(tmp_path / "q1", 1), make_run(tmp_path / "full", 2)
    cfg, facts = read_run(q1_only)
    save_run(q1_only, cfg, {**facts, "label_columns": list(GZ2.questions[0].columns)})
    ens = Ensemble.load([q1_only, full], resolve_device("cpu"), "none")
    x = np.random.default_rng(0).integers(0, 255, (3, SIZE, SIZE, 3), dtype=np.uint8)
    per_run = ens.predict_runs(x)  # (2, 3, 37)
    probs, reasons = ens.predict_checked(x)
    c11, c21 = GZ2.columns.index("Class1.1"), GZ2.columns.index("Class2.1")
    assert np.allclose(probs[:, c11], per_run[:, :, c11].mean(axis=0), atol=1e-6)
    assert np.allclose(probs[:, c21], per_run[1, :, c21], atol=1e-6)  # the full run alone
    assert not np.allclose(per_run[0, :, c21], per_run[1, :, c21])  # (the mean would differ)
    assert (reasons == "").all()


# --------------------------------------------------------------------------------- item 10
def test_issue25_10_bad_configs_and_files_are_one_line_errors(tmp_path, run_a, images, tiny_kaggle, capfd):
    """Item 10: tracebacks from `"model": 5`, a package without preprocessing, an existing ONNX folder, review files."""
    bad = tmp_path / "r5"
    shutil.copytree(run_a, bad)
    stored = json.loads((bad / "config.json").read_text())
    stored["train"]["model"] = 5
    (bad / "config.json").write_text(json.dumps(stored))
    for argv in (["predict", "--model", str(bad), "--images", str(images), "--out", str(tmp_path / "p.csv")],
                 ["export", str(bad), "--out", str(tmp_path / "pkg")],
                 ["train", "--data", str(tiny_kaggle), "--out", str(tmp_path / "ft"), "--init-from", str(bad)]):
        _one_line_error(main(argv), capfd.readouterr().err, "model must be a model configuration")
    assert not (tmp_path / "ft").exists()
    (tmp_path / "x.onnx").mkdir()
    _one_line_error(main(["export", str(run_a), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]),
                    capfd.readouterr().err, "directory")
    preds = tmp_path / "none.parquet"
    review = ["review", "--predictions", str(preds), "--images", str(images), "--db"]
    _one_line_error(main([*review, str(tmp_path / "r.sqlite")]), capfd.readouterr().err, "no such prediction")
    from gzmorph.review.sample import write_sample

    preds, imgs = write_sample(tmp_path / "s", n=3, seed=1, size=32)
    review = ["review", "--predictions", str(preds), "--images", str(imgs), "--db"]
    (tmp_path / "notdb").write_text("hello, not SQLite " * 20)
    for db, words in ((tmp_path / "missing" / "r.sqlite", "does not exist"), (tmp_path, "is a directory"),
                      (tmp_path / "notdb", "not a review database")):
        _one_line_error(main([*review, str(db)]), capfd.readouterr().err, words)
    _one_line_error(main(["review", "export", "--db", str(tmp_path / "no.sqlite"), "--out", str(tmp_path / "l.csv")]),
                    capfd.readouterr().err, "no such review database")


def _crafted_onnx(path: Path, run: Path, value: float, outputs: int = 1) -> Path:
    """An ONNX file with gzmorph's metadata whose network outputs the constant ``value``."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from gzmorph.models.onnx import META_KEY

    cfg, facts = read_run(run)
    side = cfg.augment.out_size
    flat = 2 * 3 * side * side
    nodes = [helper.make_node("Flatten", ["crops"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "zeros"], ["zero"]),
             helper.make_node("Add", ["zero", "value"], ["probabilities"])]
    inits = [helper.make_tensor("zeros", TensorProto.FLOAT, [flat, GZ2.n_answers], [0.0] * flat * GZ2.n_answers),
             helper.make_tensor("value", TensorProto.FLOAT, [1], [value])]
    outs = [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", GZ2.n_answers])]
    if outputs > 1:
        nodes.append(helper.make_node("Identity", ["zero"], ["extra"]))
        outs.append(helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["batch", GZ2.n_answers]))
    graph = helper.make_graph(nodes, "crafted", [helper.make_tensor_value_info(
        "crops", TensorProto.FLOAT, ["batch", 2, 3, side, side])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps({"format": 1, "train": cfg.to_dict(), "pca": facts["pca"],
                                                   "step": 0})
    path.write_bytes(model.SerializeToString())
    return path


def test_issue25_10_onnx_graph_with_other_outputs_is_refused(tmp_path, run_a, images, capfd):
    """Item 10: an ONNX graph with the wrong number of outputs gave a traceback."""
    pytest.importorskip("onnxruntime")
    crafted = _crafted_onnx(tmp_path / "two.onnx", run_a, 0.5, outputs=2)
    rc = main(["predict", "--model", str(crafted), "--images", str(images), "--out", str(tmp_path / "p.csv")])
    _one_line_error(rc, capfd.readouterr().err, "expected exactly one")


# --------------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("value, reason", [(2.0, "outside [0, 1]"), (float("nan"), "not finite")])
def test_issue25_11_model_outputs_that_are_not_probabilities_become_error_rows(tmp_path, run_a, images, value,
                                                                               reason):
    """Item 11: a constant 2.0 was written as all-ones rows (Q1 sums to 3); NaN rows were not flagged."""
    pytest.importorskip("onnxruntime")
    from gzmorph.inference.predict import PredictConfig, predict_to_file
    from gzmorph.models.onnx import load_onnx

    crafted = _crafted_onnx(tmp_path / "c.onnx", run_a, value)
    out = tmp_path / "p.parquet"
    summary = predict_to_file([crafted], images, out, workers=0, progress=False)
    assert summary.n_predicted == 0 and summary.n_failed == 4
    assert len(pd.read_parquet(out)) == 0
    errors = pd.read_csv(tmp_path / "p.parquet.errors.csv")
    assert len(errors) == 4 and errors["reason"].str.contains(reason, regex=False).all()
    # A Ray actor computes its chunks with the same function (called here without a cluster).
    ray_mod = pytest.importorskip("gzmorph.inference.ray")
    from gzmorph.inference.job import PredictionJob

    job = PredictionJob.open([load_onnx(crafted)], images, PredictConfig(device="cpu", tta="none", workers=0),
                             layout="ray-parts", runtime=resolve_device("cpu"))
    k, table, errs = ray_mod.ChunkActor(job, "cpu", 1, 0).compute(0)
    assert k == 0 and table.num_rows == 0 and errs.num_rows == 4
    assert all(reason in r for r in errs.column("reason").to_pylist())


def test_issue25_11_output_check_is_the_tree_rule():
    """Outputs breaking the tree's sums are refused too; real constrained outputs pass (bf16 slack)."""
    from gzmorph.tree import TreeConstraint

    good = TreeConstraint(GZ2)(torch.randn(4, GZ2.n_answers)).numpy()
    assert (GZ2.output_problems(good) == "").all()
    assert (GZ2.output_problems(good.astype(np.float32) * (1 + 2 ** -8)) == "").all()
    broken = good.copy()
    broken[0, :3] = [0.5, 0.5, 0.5]  # Q1 sums to 1.5, each value in [0, 1]
    assert "Q1 sums to 1.5" in GZ2.output_problems(broken)[0]


# --------------------------------------------------------------------------------- item 12
def test_issue25_12_divergence_stops_training_and_nan_weights_are_refused(tmp_path, tiny_kaggle, run_a, images,
                                                                         capfd):
    """Item 12: `--lr 1e12` logged NaN losses yet ended "finished", and NaN weights predicted a silent 1/3."""
    with pytest.raises(RunError, match="training diverged"):
        train(_tiny_cfg(lr=1e12), tiny_kaggle, tmp_path / "d", device="cpu", workers=0, progress=False)
    # Nothing written after the divergence: the metrics and checkpoints hold only finite numbers.
    records = [json.loads(line) for line in (tmp_path / "d" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_rmse"]) for r in records)
    for which in ("best", "last"):
        if (tmp_path / "d" / "checkpoints" / f"{which}.pt").exists():
            load_run(tmp_path / "d", which, device="cpu")  # refuses non-finite weights
    nan_run = tmp_path / "nan"
    shutil.copytree(run_a, nan_run)
    ckpt = torch.load(nan_run / "checkpoints" / "best.pt", weights_only=True)
    name = next(iter(ckpt["model"]))
    ckpt["model"][name].view(-1)[0] = float("nan")
    torch.save(ckpt, nan_run / "checkpoints" / "best.pt")
    rc = main(["predict", "--model", str(nan_run), "--images", str(images), "--out", str(tmp_path / "p.csv"), *FAST])
    _one_line_error(rc, capfd.readouterr().err, "NaN or infinite", name)


# --------------------------------------------------------------------------------- item 13
def test_issue25_13_fits_band_names_must_match_the_header(tmp_path):
    """Item 13: a 3-plane cube whose BANDS says `g,r` was read with --bands g,r,i (its third plane as i)."""
    fits = pytest.importorskip("astropy.io.fits")
    from gzmorph.data.fits import FitsError, read_bands

    hdu = fits.PrimaryHDU(np.random.default_rng(0).normal(size=(3, 32, 32)).astype(np.float32))
    hdu.header["BANDS"] = "g,r"
    hdu.writeto(tmp_path / "cube.fits")
    with pytest.raises(FitsError, match="names 2 bands for a cube of 3 planes"):
        read_bands(tmp_path / "cube.fits", ("g", "r", "i"))


def test_issue25_13_cutouts_far_smaller_than_the_field_are_error_rows(tmp_path, run_a):
    """Item 13: 3x3 and 8x8 cutouts were predicted without a word."""
    from gzmorph.inference.predict import predict_to_file

    folder = tmp_path / "imgs"
    make_images(folder, 2)
    for side, gid in ((3, 7), (8, 8)):
        Image.fromarray(np.full((side, side, 3), 128, np.uint8)).save(folder / f"{gid}.png")
    summary = predict_to_file([run_a], folder, tmp_path / "p.csv", workers=0, progress=False)
    assert summary.n_predicted == 2 and summary.n_failed == 2
    errors = pd.read_csv(tmp_path / "p.csv.errors.csv")
    assert sorted(errors["GalaxyID"]) == [7, 8] and errors["reason"].str.contains("minimum").all()


# --------------------------------------------------------------------------------- item 14
def test_issue25_14_tif_files_are_read_and_other_files_counted(tmp_path):
    """Item 14: `.tif/.tiff` files were ignored without being counted."""
    from gzmorph.data.catalog import open_catalog

    folder = tmp_path / "imgs"
    make_images(folder, 1)
    for gid, suffix in ((7, ".tif"), (8, ".tiff")):
        Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(folder / f"{gid}{suffix}")
    (folder / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="1 files without an image suffix"):
        cat = open_catalog(folder)
    assert sorted(cat.ids.tolist()) == [7, 8, 1000]


def test_issue25_14_resume_without_preset_warns_only_about_given_values(trained, tiny_kaggle, tmp_path):
    """Item 14: `train --resume` without --preset warned about "new values" the user never gave."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for extra, expected in (([], None), (["--lr", "0.5"], "lr")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(["train", "--data", str(tiny_kaggle), "--out", str(run), "--resume", *extra, *FAST]) == 0
        ignoring = [str(w.message) for w in caught if "ignoring the new values" in str(w.message)]
        assert ignoring == ([] if expected is None else [ignoring[0]])
        if expected:
            assert ignoring[0].endswith("of lr")


def test_issue25_14_resume_of_a_run_with_a_corrupt_best_checkpoint_refuses(trained, tiny_kaggle, tmp_path, capfd):
    """Item 14: `train --resume` said "finished" on a run whose best.pt is empty or corrupt."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "checkpoints" / "best.pt").write_bytes(b"")
    rc = main(["train", "--data", str(tiny_kaggle), "--out", str(run), "--resume", *FAST])
    _one_line_error(rc, capfd.readouterr().err, "best.pt: empty file")


def test_issue25_14_package_config_is_covered_by_its_digest(tmp_path, run_a):
    """Item 14: an edited crop_fraction, or a weights file of `../other/...`, was accepted."""
    pytest.importorskip("safetensors")
    from gzmorph.models.package import config_digest, load_package
    from gzmorph.sharing.package import export_package

    pkg = export_package(run_a, tmp_path / "pkg")
    config = json.loads((pkg / "config.json").read_text())
    edited = json.loads(json.dumps(config))
    edited["train"]["augment"]["crop_fraction"] = 0.9
    (pkg / "config.json").write_text(json.dumps(edited))
    with pytest.raises(RunError, match="config_sha256"):
        load_package(pkg, device="cpu")
    shutil.copy(pkg / "model.safetensors", tmp_path / "other.safetensors")
    outside = json.loads(json.dumps(config))
    outside["weights"]["file"] = "../other.safetensors"
    outside["config_sha256"] = config_digest(outside)  # a consistent digest: the name itself is refused
    (pkg / "config.json").write_text(json.dumps(outside))
    with pytest.raises(RunError, match="not a plain file name"):
        load_package(pkg, device="cpu")


# ------------------------------------------------------------------------------- leftovers
def test_issue25_leftover_evaluate_drops_bad_rows_only_when_asked(tmp_path):
    """The earlier round's leftover: an optional flag of `evaluate` to leave bad prediction rows out, counted."""
    from gzmorph.evaluation.evaluate import evaluate
    from gzmorph.tree import TreeConstraint

    probs = TreeConstraint(GZ2)(torch.randn(6, GZ2.n_answers, generator=torch.Generator().manual_seed(0))).numpy()
    labels = pd.DataFrame(probs, columns=GZ2.columns).assign(GalaxyID=range(6))
    preds = labels.copy()
    preds.loc[1, "Class1.1"] = np.nan
    preds.loc[4, "Class1.2"] = 1.5
    with pytest.raises(CatalogError, match="row 1"):
        evaluate(preds, labels)
    ev = evaluate(preds, labels, drop_bad_rows=True, out=tmp_path / "report")
    assert ev.n_matched == 4 and sorted(ev.dropped_rows["GalaxyID"]) == [1, 4]
    assert len(pd.read_csv(tmp_path / "report" / "dropped_rows.csv")) == 2
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n_dropped_rows"] == 2


@pytest.mark.slow
def test_issue25_leftover_refused_ddp_resume_is_one_line(trained, tmp_path, capfd):
    """The earlier round's leftover: a refused DDP resume printed a traceback from a child process."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    other = make_tiny_kaggle(tmp_path / "other", n=16, seed=5)
    rc = main(["train", "--data", str(other), "--out", str(run), "--resume", "--gpus", "2", "--device", "cpu", *FAST])
    _one_line_error(rc, capfd.readouterr().err, "other data")
