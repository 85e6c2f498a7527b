"""Symmetry-built networks: group algebra, equivariance, exact invariance of every preset, training paths."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model, model_config_from_dict
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.training.recipes import PRESETS, get_preset
from gzmorph.models.rundir import load_run
from gzmorph.runtime import load_checkpoint, resolve_device
from gzmorph.nn.symmetric import (D4_ORDER, SYMMETRIC_PRESETS, GroupConv, LiftConv, SymmetricConfig, SymmetricNet,
                               d4_transform)
from gzmorph.nn.symmetric import _d4_tables as d4_tables  # the group tables are what is under test here
from gzmorph.training.averaging import WeightAverage
from gzmorph.training.train import train
from gzmorph.tree import GZ2, check_labels

SYMMETRIC_RECIPES = sorted(name for name, cfg in PRESETS.items() if isinstance(cfg.model, SymmetricConfig))


def _crops(b: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, 3, side, side, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _net(cfg: SymmetricConfig) -> SymmetricNet:
    torch.manual_seed(0)
    return SymmetricNet(cfg).double().eval()


def test_d4_tables_form_the_dihedral_group():
    mul, inv = d4_tables()
    probe = torch.arange(9.0).reshape(3, 3)
    assert len({tuple(d4_transform(probe, g).flatten().tolist()) for g in range(D4_ORDER)}) == D4_ORDER
    for a in range(D4_ORDER):
        assert mul[0][a] == mul[a][0] == a and mul[a][inv[a]] == 0
        for b in range(D4_ORDER):
            torch.testing.assert_close(d4_transform(d4_transform(probe, b), a), d4_transform(probe, mul[a][b]))
    assert any(mul[a][b] != mul[b][a] for a in range(D4_ORDER) for b in range(D4_ORDER))  # not abelian


@pytest.mark.parametrize("layer", ["lift", "group"])
def test_group_convolutions_are_equivariant(layer):
    """Turning the input by t turns every output map by t and moves orientation g to t g."""
    mul, inv = d4_tables()
    torch.manual_seed(0)
    conv = (LiftConv(3, 4, 5) if layer == "lift" else GroupConv(2, 4, 3)).double()
    x = torch.rand(2, 3 if layer == "lift" else 2 * D4_ORDER, 10, 10, dtype=torch.float64)
    y = conv(x).unflatten(1, (4, D4_ORDER))  # (B, 8C, H, W) -> (B, C, 8, H, W)
    for t in range(D4_ORDER):
        xt = d4_transform(x, t)
        if layer == "group":  # the input's orientation axis moves too
            xt = xt.unflatten(1, (2, D4_ORDER))[:, :, [mul[inv[t]][g] for g in range(D4_ORDER)]].flatten(1, 2)
        yt = conv(xt).unflatten(1, (4, D4_ORDER))
        expect = d4_transform(y, t)[:, :, [mul[inv[t]][g] for g in range(D4_ORDER)]]
        torch.testing.assert_close(yt, expect, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(SYMMETRIC_PRESETS))
def test_presets_are_exactly_invariant_to_90_degree_turns_and_flips(name):
    cfg = replace(SYMMETRIC_PRESETS[name], channels=(3, 4, 6), pool_after=(0, 1), hidden=16)
    net = _net(cfg)
    crops = _crops(3, 24)
    with torch.no_grad():
        ref = net(crops)
        assert check_labels(pd.DataFrame(ref.numpy(), columns=GZ2.columns), GZ2).empty  # tree-constrained
        assert (net(_crops(3, 24, seed=1)) - ref).abs().max() > 1e-4  # outputs depend on the input
        assert (net(torch.roll(crops, 1, -1)) - ref).abs().max() > 1e-6  # ... and not only on D4-orbits
        for k in (1, 2, 3):
            torch.testing.assert_close(net(torch.rot90(crops, k, dims=(-2, -1))), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(net(crops.flip(-1)), ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(net(crops.flip(-2)), ref, rtol=1e-10, atol=1e-10)


def test_shipped_presets_are_invariant_at_their_own_size():
    for name in SYMMETRIC_RECIPES:
        cfg = get_preset(name)
        net = _net(cfg.model)
        crops = _crops(2, cfg.augment.out_size)
        with torch.no_grad():
            torch.testing.assert_close(net(crops.rot90(1, (-2, -1)).flip(-1)), net(crops), rtol=1e-9, atol=1e-9)


def test_two_crops_add_invariance_to_45_degree_turns():
    """With crops=2, rendering at angle a + 45 (crop 0 <- crop 1, crop 1 <- crop 0 turned 90) changes nothing."""
    net = _net(SymmetricConfig(channels=(3, 4), pool_after=(0,), hidden=8, crops=2)).float()
    one = _net(SymmetricConfig(channels=(3, 4), pool_after=(0,), hidden=8, crops=1)).float()
    imgs = torch.randint(0, 256, (2, 60, 60, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    cfg = aug.AugmentConfig(out_size=24)

    def predict(model, angle, flip=False):
        with torch.no_grad():
            return model(aug.render_crops(imgs, aug.fixed_transforms(2, angle, 1.0, flip), cfg))

    ref = predict(net, 9.0)
    for angle, flip in ((54.0, False), (99.0, False), (9.0, True), (144.0, True)):
        torch.testing.assert_close(predict(net, angle, flip), ref, atol=1e-5, rtol=1e-4)
    assert (predict(one, 54.0) - predict(one, 9.0)).abs().max() > 1e-4  # one crop: only 90-degree invariance


def test_config_validation_and_round_trip():
    for cfg in SYMMETRIC_PRESETS.values():
        assert model_config_from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="family"):
        SymmetricConfig(family="so2")
    with pytest.raises(ValueError, match="odd"):
        SymmetricConfig(stem_kernel=4)
    with pytest.raises(ValueError, match="cyclic"):
        SymmetricConfig(family="p4m", roll_after=(0,))
    with pytest.raises(ValueError, match="unknown"):
        SymmetricConfig.from_dict({"family": "p4m", "width": 3})
    net = SymmetricNet(SymmetricConfig(channels=(2, 2), pool_after=(0, 1)))
    with pytest.raises(ValueError, match="odd side"):
        net(torch.rand(1, 2, 3, 30, 30))  # 30 -> 15: the second pooling would break the symmetry


def test_weight_average_follows_its_formula():
    model = torch.nn.Linear(2, 1)
    ema = WeightAverage(model, decay=0.9)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, step=1000)  # past the ramp-up: the decay is 0.9
    torch.testing.assert_close(ema.model.weight, 0.9 * start + 0.1 * model.weight.detach())
    ema.update(model, step=0)  # ramp-up: decay (1 + 0) / (10 + 0) = 0.1
    torch.testing.assert_close(ema.model.weight, 0.1 * (0.9 * start + 0.1 * model.weight) + 0.9 * model.weight)


def test_cpu_precision_is_decided_once():
    assert not resolve_device("cpu").autocast
    assert not resolve_device("cpu", precision="fp32").autocast
    assert resolve_device("cpu", precision="bf16").autocast
    with pytest.raises(ValueError, match="precision"):
        resolve_device("cpu", precision="fp16")


def _tiny_cfg(**changes) -> TrainConfig:
    base = get_preset(SYMMETRIC_RECIPES[0])
    model = replace(base.model, channels=(2, 4), pool_after=(0, 1), hidden=8)
    return replace(base, model=model, augment=replace(base.augment, out_size=24), examples=64, batch_size=8,
                   eval_every=32, warmup_examples=8, image_size=48, **changes)


def test_symmetric_run_trains_in_bf16_saves_the_average_and_predicts_with_it(tiny_kaggle, tmp_path):
    seen: list[torch.dtype] = []
    real_build = build_model

    def spy(cfg, tree):
        net = real_build(cfg, tree)
        net.stages[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype) if m.training else None)
        return net

    import gzmorph.training.train as train_module
    orig = train_module.build_model
    train_module.build_model = spy
    try:
        train(_tiny_cfg(precision="bf16"), tiny_kaggle, tmp_path / "bf16", device="cpu", workers=0, progress=False)
        train(_tiny_cfg(precision="fp32"), tiny_kaggle, tmp_path / "fp32", device="cpu", workers=0, progress=False)
    finally:
        train_module.build_model = orig
    assert seen[0] == torch.bfloat16 and seen[-1] == torch.float32
    ckpt = load_checkpoint(tmp_path / "fp32" / "checkpoints" / "best.pt")
    assert set(ckpt) >= {"model", "ema", "optimizer", "step", "config"}
    differs = [k for k in ckpt["model"] if not torch.equal(ckpt["model"][k], ckpt["ema"][k])]
    assert differs, "the average equals the raw weights"
    trained = load_run(tmp_path / "fp32", device="cpu")
    assert isinstance(trained.model, SymmetricNet)
    for k, v in trained.model.state_dict().items():
        assert torch.equal(v, ckpt["ema"][k])


@pytest.mark.parametrize("family", ["p4m", "cyclic"])
def test_bf16_prediction_of_a_symmetric_run(family, tiny_kaggle, tmp_path):
    """bf16 prediction turns the nets to channels_last: p4m's 5-D weight banks must survive that."""
    from gzmorph.inference.predict import predict

    cfg = _tiny_cfg(precision="fp32")
    cfg = replace(cfg, model=replace(get_preset(family).model, channels=(2, 4), pool_after=(0, 1), hidden=8))
    train(cfg, tiny_kaggle, tmp_path / "run", device="cpu", workers=0, progress=False)
    images = tiny_kaggle / "images_training_rev1"
    fp32 = predict(tmp_path / "run", images, precision="fp32", device="cpu", workers=0, progress=False)
    bf16 = predict(tmp_path / "run", images, precision="bf16", device="cpu", workers=0, progress=False)
    cols = GZ2.columns
    assert len(bf16) == len(fp32) == 40
    np.testing.assert_allclose(bf16[cols].to_numpy(), fp32[cols].to_numpy(), atol=0.03)


def test_analysis_of_a_symmetric_run(tiny_kaggle, tmp_path):
    """The Section 9 figures work for a network without viewpoints: its stages' maps of crop 0."""
    from gzmorph.evaluation.analyze import analyze

    train(_tiny_cfg(ema_decay=0.0), tiny_kaggle, tmp_path / "run", device="cpu", workers=0, progress=False)
    page = analyze(tmp_path / "run", tiny_kaggle, tmp_path / "analysis", n_units=2, n_examples=2, n_errors=2,
                   device="cpu", workers=0, progress=False)
    assert page.exists()
    assert (tmp_path / "analysis" / "activations_conv1.png").exists()
    assert (tmp_path / "analysis" / "filters.png").exists()
