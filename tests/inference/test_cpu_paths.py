"""The CPU speed paths give the rows of the plain path: fused p4m, one crop, decode thread, ONNX.

Generated images; a tiny p4m run whose batch norms hold non-trivial statistics (so
folding them is really checked).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gzmorph.data.decode import decode
from gzmorph.inference.predict import predict
from gzmorph.models.rundir import load_run, save_checkpoint
from gzmorph.nn import augment as aug
from gzmorph.nn.tta import run_tta

from discovery_helpers import make_p4m_run
from factories import make_images

pytestmark = pytest.mark.usefixtures("one_torch_thread")
FP32 = dict(workers=0, progress=False, batch_size=4, precision="fp32")


@pytest.fixture(scope="module")
def p4m_run(tmp_path_factory) -> Path:
    run_dir = make_p4m_run(tmp_path_factory.mktemp("runs") / "p4m", seed=2)
    run = load_run(run_dir)
    with torch.no_grad():
        for m in run.model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
        run.model.output.weight.normal_(0.0, 0.1)
        run.model.output.bias.fill_(0.3)
    save_checkpoint(run_dir / "checkpoints" / "best.pt", run.model, 0, run.config)
    return run_dir


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("imgs") / "images"
    make_images(folder, 11)
    return folder


def plain_path(run_dir: Path, folder: Path, tta: str) -> np.ndarray:
    """The path before the speed work: the network itself on both crops, transform by transform."""
    run = load_run(run_dir)
    files = sorted(folder.glob("*.jpg"), key=lambda p: int(p.stem))
    x = torch.from_numpy(np.stack([decode(p, run.image_size) for p in files]))
    with torch.inference_mode():
        outs = [run.model(aug.render_crops(x, aug.fixed_transforms(len(x), a, s, f), run.augment, run.pca)).numpy()
                for a, s, f in run_tta(tta, run)]  # the set matched to p4m's 90-degree period
    return np.mean(outs, axis=0)


def answers(frame: pd.DataFrame) -> np.ndarray:
    return frame.sort_values("GalaxyID").iloc[:, 1:38].to_numpy(np.float64)


@pytest.mark.parametrize("tta", ["none", "rot"])
def test_fused_one_crop_path_gives_the_plain_rows(p4m_run, images, tta):
    got = answers(predict(p4m_run, images, tta=tta, **FP32))
    np.testing.assert_allclose(got, plain_path(p4m_run, images, tta), atol=2e-6, rtol=0)


def test_rows_do_not_depend_on_decoding_processes_or_batch(p4m_run, images):
    ref = answers(predict(p4m_run, images, **FP32))
    other = answers(predict(p4m_run, images, **{**FP32, "workers": 2, "batch_size": 3}))
    np.testing.assert_allclose(other, ref, atol=2e-6, rtol=0)


@pytest.mark.slow
def test_onnx_runtime_gives_the_torch_rows(p4m_run, images, tmp_path):
    pytest.importorskip("onnxruntime")
    from gzmorph.sharing.onnx_model import export_onnx

    onnx_file = export_onnx(load_run(p4m_run), tmp_path / "p4m.onnx")["path"]
    torch_rows = predict(p4m_run, images, tta="rot", **FP32)
    onnx_rows = predict(onnx_file, images, tta="rot", **FP32)
    assert list(onnx_rows.columns) == list(torch_rows.columns)
    assert list(onnx_rows["GalaxyID"]) == list(torch_rows["GalaxyID"])
    np.testing.assert_allclose(answers(onnx_rows), answers(torch_rows), atol=1e-5, rtol=0)
    assert (onnx_rows["Q1_answer"] == torch_rows["Q1_answer"]).all()
