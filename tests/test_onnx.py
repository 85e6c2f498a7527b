"""ONNX export (issue 13): parity with torch, a dynamic batch axis, prediction and resume through the CLI.

The ``small`` preset's parity is checked on the demo-trained model in ``test_export.py``;
here a freshly initialised ``paper`` network (42M parameters, tiny batches) and the
exactly invariant ``p4m`` network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from gzmorph.cli import main  # noqa: E402
from gzmorph.inference.ensemble import Ensemble  # noqa: E402
from gzmorph.inference.predict import predict_to_file  # noqa: E402
from gzmorph.nn.model import build_model  # noqa: E402
from gzmorph.models.onnx import load_onnx  # noqa: E402
from gzmorph.sharing.onnx_model import export_onnx  # noqa: E402
from gzmorph.training.recipes import get_preset  # noqa: E402
from gzmorph.models.rundir import TrainedModel  # noqa: E402
from gzmorph.tree import GZ2  # noqa: E402

from factories import make_images, make_run, run_killed  # noqa: E402


def _fresh(preset: str, root: Path) -> TrainedModel:
    cfg = get_preset(preset)
    torch.manual_seed(0)
    model = build_model(cfg.model, GZ2).eval()
    return TrainedModel(model=model, tree=GZ2, augment=cfg.augment, pca={}, image_size=cfg.image_size, config=cfg,
                        step=0, run_dir=root / preset)


@pytest.mark.parametrize("preset", ["paper", "p4m"])
def test_onnx_matches_torch_with_a_dynamic_batch_axis(preset, tmp_path):
    trained = _fresh(preset, tmp_path)
    path = tmp_path / f"{preset}.onnx"
    result = export_onnx(trained, path)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param and not batch.dim_value  # symbolic, not a fixed size
    assert result["max_abs_diff"] <= 1e-4
    loaded = load_onnx(path)
    assert loaded.config.to_dict() == trained.config.to_dict()
    side = trained.augment.out_size
    gen = torch.Generator().manual_seed(5)
    for n in (2, 5):  # two batch sizes other than the export's example
        crops = torch.rand(n, 2, 3, side, side, generator=gen)
        with torch.inference_mode():
            expected, got = trained.model(crops), loaded.model(crops)
        assert got.shape == (n, 37)
        np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4, rtol=0)


def test_predict_with_an_onnx_model_through_the_cli_and_resume(tmp_path):
    run = make_run(tmp_path / "run", seed=3)
    folder = tmp_path / "images"
    make_images(folder, 10)
    model = tmp_path / "model.onnx"
    assert main(["export", str(run), "--format", "onnx", "--out", str(model)]) == 0
    common = ["--images", str(folder), "--tta", "rot", "--chunk-rows", "4", "--batch-size", "2", "--workers", "0",
              "--no-progress", "--device", "cpu"]
    assert main(["predict", "--model", str(run), "--out", str(tmp_path / "torch.csv"), *common]) == 0
    assert main(["predict", "--model", str(model), "--out", str(tmp_path / "onnx.csv"), *common]) == 0
    reference, full = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert len(full) == 10
    np.testing.assert_allclose(full.iloc[:, 1:].to_numpy(), reference.iloc[:, 1:].to_numpy(), atol=1e-4, rtol=0)

    killed = tmp_path / "killed.csv"
    status = run_killed("gzmorph.inference.parts:PartStore.write", 1,
                        ["predict", "--model", str(model), "--out", str(killed), *common])
    assert status == -9 and not killed.exists()
    forwards: list[int] = []
    real_call = Ensemble.__call__
    try:
        Ensemble.__call__ = lambda self, x: forwards.append(len(x)) or real_call(self, x)
        summary = predict_to_file(model, folder, killed, resume=True, tta="rot", chunk_rows=4, batch_size=2,
                                  workers=0, progress=False, device="cpu")
    finally:
        Ensemble.__call__ = real_call
    assert summary.n_resumed == 4 and sum(forwards) == 6  # the first chunk was not recomputed
    assert killed.read_bytes() == (tmp_path / "onnx.csv").read_bytes()
    # The manifest names the ONNX file by its content: another model is refused on resume.
    other = tmp_path / "other.onnx"
    assert main(["export", str(make_run(tmp_path / "run2", seed=4)), "--format", "onnx", "--out", str(other)]) == 0
    other.replace(model)
    assert main(["predict", "--model", str(model), "--out", str(killed), "--resume", *common]) == 2
