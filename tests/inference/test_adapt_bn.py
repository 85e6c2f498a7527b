"""Test-time adaptation of BatchNorm statistics (``predict --adapt-bn``, issue 22)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from discovery_helpers import blob_images, make_p4m_run
from factories import make_run
from gzmorph.cli import main
from gzmorph.errors import ConfigError
from gzmorph.inference import adapt
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.job import PredictionJob
from gzmorph.inference.parts import adapt_path, manifest_path
from gzmorph.inference.predict import predict, predict_to_file
from gzmorph.models.rundir import load_run, save_checkpoint, save_run
from gzmorph.nn.model import build_model
from gzmorph.training.recipes import get_preset
from gzmorph.tree import GZ2

pytestmark = pytest.mark.usefixtures("one_torch_thread")
OPTS = {"progress": False, "device": "cpu", "batch_size": 16}


@pytest.fixture(scope="module")
def p4m_run(tmp_path_factory):
    return make_p4m_run(tmp_path_factory.mktemp("p4m") / "run", seed=2)


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    """40 target images, brighter and noisier than the blobs the (virtual) run was trained on."""
    folder = tmp_path_factory.mktemp("target") / "images"
    pixels = blob_images(folder, 40, seed=5)
    for i, img in enumerate(pixels):
        brighter = np.clip(img.astype(np.float64) * 0.6 + 90, 0, 255).astype(np.uint8)
        from PIL import Image

        Image.fromarray(brighter).save(folder / f"{1000 + i}.png")
    return folder


def test_the_statistics_are_the_mean_and_variance_of_the_target_inputs():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(4, 2, 1),
                        nn.BatchNorm2d(2))
    net[1].running_mean.fill_(5.0)  # trained statistics, to be forgotten
    x = torch.randn(6, 3, 9, 9) * 2 + 1
    before = {k: v.clone() for k, v in net.state_dict().items()}
    assert adapt.reestimate(net, [x]) == 1
    with torch.no_grad():
        h = net[0](x)
        mean, var = h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)
        normed = (h - mean[None, :, None, None]) / torch.sqrt(h.var((0, 2, 3), unbiased=False) + 1e-5)[
            None, :, None, None]
        h2 = net[4](torch.relu(normed * net[1].weight[None, :, None, None] + net[1].bias[None, :, None, None]))
    torch.testing.assert_close(net[1].running_mean, mean)
    torch.testing.assert_close(net[1].running_var, var)
    torch.testing.assert_close(net[5].running_mean, h2.mean((0, 2, 3)))  # dropout stayed off
    torch.testing.assert_close(net[5].running_var, h2.var((0, 2, 3), unbiased=True))
    assert not net.training and not any(m.training for m in net.modules())
    assert net[1].momentum == 0.1  # restored
    changed = {k for k in before if not torch.equal(before[k], net.state_dict()[k])}
    assert changed == {"1.running_mean", "1.running_var", "1.num_batches_tracked", "5.running_mean",
                       "5.running_var", "5.num_batches_tracked"}
    # Two equal batches: the mean is exact over all the images.
    adapt.reestimate(net, [x[:3], x[3:]])
    torch.testing.assert_close(net[1].running_mean, mean)


def test_adaptation_changes_only_the_normalisation_statistics(p4m_run, shifted):
    job = PredictionJob.open(p4m_run, str(shifted), PredictConfig(adapt_bn=True, **OPTS))
    model = job.ensemble.runs[0].model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    job.adapt()
    after = model.state_dict()
    stats = set(adapt.norm_state(model))
    assert stats and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in stats)
    for name, tensor in after.items():
        if name in stats:
            continue
        assert torch.equal(tensor, before[name]), name  # every other parameter and buffer, byte for byte
    moved = [k for k in stats if k.endswith("running_mean") and not torch.equal(after[k], before[k])]
    assert len(moved) == len([k for k in stats if k.endswith("running_mean")])
    assert job.adapted["n_images"] == 40 and job.adapted["max_images"] == 1024


def test_adapted_predictions_differ_on_shifted_images_and_are_recorded(p4m_run, shifted, tmp_path):
    plain = predict(p4m_run, str(shifted), **OPTS)
    out = tmp_path / "p.parquet"
    summary = predict_to_file(p4m_run, str(shifted), out, config=PredictConfig(adapt_bn=True, **OPTS))
    adapted = pd.read_parquet(out)
    assert np.abs(adapted["Class1.1"].to_numpy() - plain["Class1.1"].to_numpy()).max() > 1e-3
    record = json.loads(manifest_path(out).read_text())
    assert record["adapt_bn"]["n_images"] == 40 and len(record["adapt_bn"]["stats"]) == 40
    assert summary.n_adapted == 40 and "BatchNorm statistics adapted on 40 target images" in summary.message()
    assert adapt_path(out).is_file()
    # The caller's loaded run is never changed by a job that adapts.
    run = load_run(p4m_run, device="cpu")
    state = {k: v.clone() for k, v in run.model.state_dict().items()}
    predict(run, str(shifted), adapt_bn=True, **OPTS)
    assert all(torch.equal(v, run.model.state_dict()[k]) for k, v in state.items())


def test_a_resumed_job_uses_the_stored_statistics(p4m_run, shifted, tmp_path, monkeypatch):
    out = tmp_path / "p.csv"
    cfg = PredictConfig(adapt_bn=True, chunk_rows=16, **OPTS)
    first = predict_to_file(p4m_run, str(shifted), out, config=cfg)
    stored = adapt_path(out).read_bytes()
    written = out.read_bytes()
    manifest_path(out).unlink()  # as if killed before the end: no record, the parts are gone too
    out.unlink()

    def never(*args, **kwargs):
        raise AssertionError("a resumed job must not estimate the statistics again")

    monkeypatch.setattr(adapt, "adapt_ensemble", never)
    again = predict_to_file(p4m_run, str(shifted), out, config=cfg, resume=True)
    assert again.n_predicted == first.n_predicted and out.read_bytes() == written
    assert adapt_path(out).read_bytes() == stored


def test_too_few_target_images_is_a_one_line_error(p4m_run, tmp_path, capsys):
    blob_images(tmp_path / "few", 31)
    with pytest.raises(ConfigError, match="at least 32 decodable target images.*got 31"):
        predict(p4m_run, str(tmp_path / "few"), adapt_bn=True, **OPTS)
    code = main(["predict", "--model", str(p4m_run), "--images", str(tmp_path / "few"), "--out",
                 str(tmp_path / "p.csv"), "--adapt-bn", "--no-progress", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "got 31" in err
    with pytest.raises(ValueError, match="adapt_bn_images must be >= 32"):
        PredictConfig(adapt_bn=True, adapt_bn_images=8)


def test_a_network_without_normalisation_layers_is_refused(tmp_path, shifted):
    run = make_run(tmp_path / "paper-like", seed=0)  # the small preset: no BatchNorm
    with pytest.raises(ConfigError, match="paper-like: its network has no BatchNorm layers"):
        predict(run, str(shifted), adapt_bn=True, **OPTS)


def test_a_cyclic_run_adapts_too(tmp_path, shifted):
    base = get_preset("cyclic")
    cfg = base.override(model=replace(base.model, channels=(4, 4, 8)), image_size=40, seed=0)
    torch.manual_seed(0)
    model = build_model(cfg.model, GZ2)
    save_run(tmp_path / "cyc", cfg, {"pca": {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}})
    save_checkpoint(tmp_path / "cyc" / "checkpoints" / "best.pt", model, 0, cfg)
    frame = predict(tmp_path / "cyc", str(shifted), adapt_bn=True, **OPTS)
    assert len(frame) == 40


@pytest.mark.slow
def test_ray_uses_the_statistics_computed_once(p4m_run, shifted, tmp_path):
    """And the pixel scale's geometry: Ray and the local job write the same rows and record."""
    ray = pytest.importorskip("ray")
    from gzmorph.inference.ray import predict_ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        opts = {**OPTS, "chunk_rows": 16, "adapt_bn": True, "pixel_scale": 0.5}
        local = predict_to_file(p4m_run, str(shifted), tmp_path / "local.parquet", **opts)
        remote = predict_ray(p4m_run, str(shifted), tmp_path / "ray.parquet", actors=2, cpus_per_actor=1, **opts)
    finally:
        if started:
            ray.shutdown()
    pd.testing.assert_frame_equal(remote.read()[0], local.read()[0], check_exact=True)
    record = json.loads(manifest_path(tmp_path / "local.parquet").read_text())
    ray_record = json.loads((tmp_path / "ray.parquet" / "_manifest.json").read_text())
    assert ray_record["adapt_bn"] == record["adapt_bn"]
    assert ray_record["pixel_scale"] == record["pixel_scale"] == 0.5
    assert adapt_path(tmp_path / "ray.parquet").is_file()


def test_a_kept_file_of_other_images_is_not_reused(p4m_run, shifted, tmp_path):
    out = tmp_path / "p.csv"
    few = tmp_path / "other"
    blob_images(few, 33, seed=9)
    predict_to_file(p4m_run, str(few), out, config=PredictConfig(adapt_bn=True, **OPTS))
    out.unlink()
    manifest_path(out).unlink()
    # --resume with a kept file estimated on other images: estimated again, on these.
    summary = predict_to_file(p4m_run, str(shifted), out, config=PredictConfig(adapt_bn=True, **OPTS), resume=True)
    assert summary.n_adapted == 40
    fresh = predict_to_file(p4m_run, str(shifted), tmp_path / "q.csv", config=PredictConfig(adapt_bn=True, **OPTS))
    assert json.loads(manifest_path(out).read_text())["adapt_bn"] == \
        json.loads(manifest_path(tmp_path / "q.csv").read_text())["adapt_bn"]
    assert fresh.n_adapted == 40
