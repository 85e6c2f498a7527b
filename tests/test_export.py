"""Sharing a model (issue 13): the package, its card, the hash check, hf: references, push, ONNX.

One model trained by ``gzmorph demo`` (tiny settings) is exported once as a package
holding ``model.onnx`` too; the demo's test galaxies are then predicted from the run,
the package, an offline Hub cache and the ONNX file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("safetensors")
pytest.importorskip("huggingface_hub")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from gzmorph.cli import main  # noqa: E402
from gzmorph.errors import MissingExtraError, RunError  # noqa: E402
from gzmorph.inference.predict import predict  # noqa: E402
from gzmorph.models.package import read_package_config, sha256_file  # noqa: E402
from gzmorph.sharing.package import export_package  # noqa: E402
from gzmorph.models.resolve import resolve_model  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OPTS = dict(tta="rot", device="cpu", workers=0, progress=False, batch_size=8)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("share") / "demo"
    assert main(["demo", "--out", str(out), "--n", "120", "--examples", "256", "--minutes", "1",
                 "--tta", "none", "--workers", "0", "--device", "cpu", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def package(demo) -> Path:
    out = demo.parent / "package"
    assert main(["export", str(demo / "run"), "--out", str(out), "--report", str(demo / "report"), "--onnx"]) == 0
    return out


def _answers(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("Class")]].to_numpy(np.float64)


def _hub_cache(root: Path, package: Path, repo: str = "org/name") -> Path:
    """The Hub cache layout: models--ORG--NAME/snapshots/<commit>/ plus refs/main and refs/v1."""
    cache = root / "hub"
    entry = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(package, entry / "snapshots" / COMMIT)
    (entry / "refs").mkdir()
    for ref in ("main", "v1"):
        (entry / "refs" / ref).write_text(COMMIT)
    return cache


def test_demo_model_predicts_the_same_from_package_hub_and_onnx(demo, package, tmp_path, monkeypatch):
    images = demo / "data" / "images_test_rev1"
    reference = _answers(predict(demo / "run", images, **OPTS))
    assert len(reference) == 20
    from_package = _answers(predict(package, images, **OPTS))
    np.testing.assert_array_equal(from_package, reference)  # the same weights, the same torch code

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(_hub_cache(tmp_path, package)))
    for ref in ("hf:org/name", "hf:org/name@v1", f"hf:org/name@{COMMIT}"):
        np.testing.assert_array_equal(_answers(predict(ref, images, **OPTS)), reference)
    with pytest.raises(RunError, match="hf:org/other: not found in the offline cache"):
        resolve_model("hf:org/other")

    from_onnx = _answers(predict(package / "model.onnx", images, **OPTS))
    assert np.abs(from_onnx - reference).max() < 1e-4


def test_package_holds_pickle_free_weights_and_the_preprocessing(demo, package):
    assert sorted(p.name for p in package.iterdir()) == ["README.md", "config.json", "model.onnx",
                                                         "model.safetensors", "triage_thresholds.json"]
    config = read_package_config(package)
    run_config = json.loads((demo / "run" / "config.json").read_text())
    assert config["train"] == run_config["train"]
    assert config["preprocessing"]["pca"] == run_config["data"]["pca"]
    assert config["preprocessing"]["image_size"] == run_config["train"]["image_size"]
    assert set(config["preprocessing"]["tta"]) == {"none", "rot", "paper"}
    assert len(config["preprocessing"]["tta"]["paper"]) == 60
    assert config["weights"]["sha256"] == sha256_file(package / "model.safetensors")
    assert config["onnx"]["sha256"] == sha256_file(package / "model.onnx")
    assert b"torch._utils" not in (package / "model.safetensors").read_bytes()  # not a pickle


def test_model_card_states_the_facts(demo, package):
    card = (package / "README.md").read_text()
    config = read_package_config(package)
    run_data = json.loads((demo / "run" / "config.json").read_text())["data"]
    records = [json.loads(line) for line in (demo / "run" / "metrics.jsonl").read_text().splitlines()]
    report = json.loads((demo / "report" / "metrics.json").read_text())
    thresholds = json.loads((demo / "report" / "triage_thresholds.json").read_text())
    assert f"`{run_data['source']}`" in card
    assert f"{run_data['n_train']} for training, {run_data['n_val']} for validation" in card
    assert f"label columns present: {len(run_data['label_columns'])} of 37" in card
    assert "| optimizer | adamw |" in card and "| examples | 256 |" in card
    per_question = next(r for r in records if r["step"] == config["weights"]["step"])["val_rmse_questions"]
    for q in ("Q1", "Q6", "Q11"):
        assert f"| {q} | {config['tree']['questions'][int(q[1:]) - 1]['text']} | {per_question[q]:.4f} |" in card
    assert f"RMSE **{report['rmse']:.4f}** over {report['n_matched']} images" in card
    assert f"| Q1 | {thresholds['thresholds']['Q1']:.3f} |" in card
    assert config["triage_thresholds"] == thresholds
    assert json.loads((package / "triage_thresholds.json").read_text()) == thresholds
    assert f"`{config['weights']['sha256']}`" in card
    assert f"gzmorph {config['versions']['gzmorph']}, torch {config['versions']['torch']}" in card


def test_tampered_weights_are_refused(package, tmp_path, capsys):
    bad = tmp_path / "bad"
    shutil.copytree(package, bad)
    weights = bad / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one weight changed
    weights.write_bytes(bytes(data))
    expected = read_package_config(bad)["weights"]["sha256"]
    with pytest.raises(RunError) as err:
        resolve_model(bad)
    assert str(weights) in str(err.value) and expected in str(err.value) and sha256_file(weights) in str(err.value)
    status = main(["predict", "--model", str(bad), "--images", str(tmp_path), "--out", str(tmp_path / "p.csv")])
    assert status == 2 and "refusing to load" in capsys.readouterr().err
    onnx_file = bad / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")  # the package's ONNX file is checked too
    with pytest.raises(RunError, match="model.onnx: its SHA-256 is"):
        resolve_model(onnx_file)


def test_push_uploads_the_package(demo, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, **kw: calls.append(("create", kw)))

    def upload_folder(self, **kw):
        calls.append(("upload", {**kw, "files": sorted(p.name for p in Path(kw["folder_path"]).iterdir())}))
        return "https://huggingface.co/org/name/commit/abc"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "pushed"
    assert main(["export", str(demo / "run"), "--out", str(out), "--push", "hf:org/name@dev"]) == 0
    (_, create), (_, upload) = calls
    assert create["repo_id"] == "org/name" and create["exist_ok"]
    assert upload["repo_id"] == "org/name" and upload["revision"] == "dev"
    assert Path(upload["folder_path"]) == out
    assert upload["files"] == ["README.md", "config.json", "model.safetensors"]


def test_export_refuses_an_existing_folder_and_bad_references(demo, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    assert main(["export", str(demo / "run"), "--out", str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["export", str(demo / "run"), "--out", str(tmp_path / "x"), "--push", "org/name"]) == 2
    assert "hf:ORG/NAME" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_fine_tuning_and_analysis_take_a_package_but_not_onnx(demo, package, tmp_path):
    assert resolve_model(package, purpose="fine-tuned").config.to_dict() == \
        resolve_model(demo / "run").config.to_dict()
    with pytest.raises(Exception, match="an ONNX model cannot be analyzed"):
        resolve_model(package / "model.onnx", purpose="analyzed")


def test_without_the_extra_the_error_names_it(demo, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'gzmorph\[share\]'"):
        export_package(demo / "run", tmp_path / "pkg")
