"""Survey-robust augmentation in training: off leaves a run byte-identical, on changes what it learns."""

from __future__ import annotations

import pytest
import torch

from gzmorph.training import train as train_module
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train


def _short(preset: str):
    return get_preset(preset).override(examples=64, batch_size=16, eval_every=64, image_size=48, precision="fp32")


def _weights(run) -> dict:
    return torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_off_is_byte_identical_and_on_changes_training(tiny_kaggle, tmp_path, monkeypatch):
    kw = dict(device="cpu", workers=0, progress=False)
    train(_short("p4m"), tiny_kaggle, tmp_path / "plain", **kw)
    robust = _short("p4m-robust")
    train(robust, tiny_kaggle, tmp_path / "robust", **kw)
    # The same p4m run without the survey step at all: the code path adds nothing when off.
    monkeypatch.setattr(train_module, "augment_survey", lambda crops, cfg, seed: crops)
    train(_short("p4m"), tiny_kaggle, tmp_path / "bypassed", **kw)
    train(robust, tiny_kaggle, tmp_path / "robust-bypassed", **kw)
    plain, bypassed = _weights(tmp_path / "plain"), _weights(tmp_path / "bypassed")
    assert all(torch.equal(plain[k], bypassed[k]) for k in plain)
    on, on_bypassed = _weights(tmp_path / "robust"), _weights(tmp_path / "robust-bypassed")
    assert any(not torch.equal(on[k], on_bypassed[k]) for k in on)  # the preset really augments
