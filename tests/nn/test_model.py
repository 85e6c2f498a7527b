"""Tests of gzmorph.nn.model: architecture, parameter count, presets, invariance, GPU-style paths."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.model import MODEL_PRESETS, GalaxyNet, ModelConfig, count_parameters, get_model_config
from gzmorph.tree import GZ2, Question, Tree, check_labels

# Tiny tensors: one torch thread, set for this module only (conftest), not at import.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rand_crops(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, 3, 69, 69, generator=torch.Generator().manual_seed(seed))


_BUILT: dict[str, GalaxyNet] = {}


def built(name: str) -> GalaxyNet:
    """``paper`` and ``small`` are built once (a paper-sized net takes a while to initialise)."""
    if name not in ("paper", "small"):
        torch.manual_seed(0)
        return GalaxyNet(name).eval()
    if name not in _BUILT:
        torch.manual_seed(0)
        _BUILT[name] = GalaxyNet(name).eval()
    return _BUILT[name]


@pytest.fixture(scope="module")
def small() -> GalaxyNet:
    return built("small")


@pytest.fixture(scope="module")
def pooled() -> GalaxyNet:
    # He-normal weights: the paper's tiny initial weights give nearly input-independent
    # outputs, which would make the invariance tests vacuous.
    torch.manual_seed(0)
    return GalaxyNet(replace(MODEL_PRESETS["pooled"], init="kaiming")).eval()


def test_paper_parameter_count():
    conv = [(3, 32, 6, 40), (32, 64, 5, 16), (64, 128, 3, 6), (128, 128, 3, 4)]  # in, out, kernel, out side
    n_conv = sum(i * o * k * k + o * s * s for i, o, k, s in conv)  # weights + untied biases
    features = 16 * 128 * 2 * 2  # 16 viewpoints x 128 maps x 2x2 after the last pooling = 8192
    n_dense = (features * 4096 + 4096) + (2048 * 4096 + 4096) + (2048 * 37 + 37)  # maxout: 2 pieces
    assert n_conv + n_dense == 42_377_125
    model = built("paper")
    assert count_parameters(model) == n_conv + n_dense
    assert [tuple(c.bias.shape) for c in model.convs] == [(32, 40, 40), (64, 16, 16), (128, 6, 6), (128, 4, 4)]
    assert model.first_layer_weight.shape == (32, 3, 6, 6)


def test_paper_initialisation():
    model = built("paper")
    stds = [c.conv.weight.std().item() for c in model.convs]
    stds += [d.linear.weight.std().item() for d in model.dense] + [model.output.weight.std().item()]
    assert np.allclose(stds, [0.01, 0.01, 0.01, 0.1, 0.001, 0.001, 0.01], rtol=0.1)
    biases = [c.bias for c in model.convs] + [d.linear.bias for d in model.dense] + [model.output.bias]
    for b, want in zip(biases, [0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.1]):
        assert torch.all(b == want)


_VARIANT_CHECKS = {
    "filters-8433": lambda m: m.first_layer_weight.shape == (32, 3, 8, 8),
    "2dense": lambda m: len(m.dense) == 1,
    "conv4-256": lambda m: m.cfg.viewpoint_features == 1024 and m.dense[0].linear.in_features == 16 * 1024,
    # ReLU units as many as the maxout layers' linear filters (2048 x 2), no maxout pieces
    "relu-dense": lambda m: m.dense[0].linear.out_features == 4096 and m.dense[0].pieces == 1,
    "pooled": lambda m: m.dense[0].linear.in_features == 512,
    "small": lambda m: count_parameters(m) < 2_000_000,
    "paper": lambda m: m.dense[0].linear.in_features == 8192,
}


@pytest.mark.parametrize("name", sorted(MODEL_PRESETS))
def test_every_preset_runs_and_obeys_the_tree(name):
    model = built(name)
    assert _VARIANT_CHECKS[name](model)
    with torch.no_grad():
        out = model(rand_crops())
        raw = model(rand_crops(), constrain=False)
    assert out.shape == raw.shape == (2, 37) and out.dtype == torch.float32
    df = pd.DataFrame(out.numpy().astype(np.float64), columns=GZ2.columns)
    assert check_labels(df, GZ2, tol=1e-4, id_column=None).empty
    assert raw.min() >= 0 and raw.max() <= 1


def test_features_and_conv_activations(small):
    with torch.no_grad():
        feats = small.features(rand_crops(3))
        acts = small.conv_activations(torch.rand(5, 3, 45, 45))
    assert feats.shape == (3, 256)
    assert list(acts) == ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "pool4"]
    assert [tuple(a.shape) for a in acts.values()] == [
        (5, 8, 40, 40), (5, 8, 20, 20), (5, 16, 16, 16), (5, 16, 8, 8), (5, 32, 6, 6), (5, 32, 4, 4), (5, 32, 2, 2)]
    assert all(a.min() >= 0 for a in acts.values())  # after ReLU


def test_pooled_is_invariant_to_90_degree_rotations_and_flips_of_the_crops(pooled):
    crops = rand_crops(3)
    with torch.no_grad():
        ref = pooled(crops)
        assert (pooled(rand_crops(3, seed=1)) - ref).abs().max() > 1e-3  # outputs depend on the input
        for k in (1, 2, 3):
            torch.testing.assert_close(pooled(torch.rot90(crops, k, dims=(-2, -1))), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(pooled(crops.flip(-1)), ref, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(pooled(crops.flip(-2)), ref, atol=1e-5, rtol=1e-4)


def test_pooled_sees_the_same_viewpoints_for_rotations_by_45_degrees_and_flips(pooled):
    # The reasoning behind the "rot" TTA set: angle a and a + 45 (or a flip) give equal outputs.
    g = torch.Generator().manual_seed(1)
    imgs = torch.randint(0, 256, (2, 141, 141, 3), generator=g, dtype=torch.uint8)
    cfg = aug.AugmentConfig()

    def predict(angle, flip=False):
        with torch.no_grad():
            return pooled(aug.render_crops(imgs, aug.fixed_transforms(2, angle, 1.0, flip), cfg))

    ref = predict(9.0)
    for angle, flip in ((54.0, False), (99.0, False), (9.0, True), (144.0, True)):
        torch.testing.assert_close(predict(angle, flip), ref, atol=1e-5, rtol=1e-4)
    assert (predict(27.0) - ref).abs().max() > 1e-4  # other offsets do differ


def test_dropout_only_in_training_mode(small):
    crops = rand_crops()
    with torch.no_grad():
        assert torch.equal(small(crops), small(crops))
        small.train()
        try:
            assert not torch.equal(small(crops), small(crops))
        finally:
            small.eval()


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = GalaxyNet("small").train()
    target = torch.rand(4, 37)
    loss = (model(rand_crops(4)) - target).square().mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_any_tree():
    tree = Tree("two", (Question("A", "a?", ("x", "y"), ("A1", "A2")),
                        Question("B", "b?", ("u", "v", "w"), ("B1", "B2", "B3"), parent="A1")))
    model = GalaxyNet("small", tree).eval()
    with torch.no_grad():
        out = model(rand_crops())
    assert out.shape == (2, 5)
    torch.testing.assert_close(out[:, :2].sum(1), torch.ones(2))
    torch.testing.assert_close(out[:, 2:].sum(1), out[:, 0])


@pytest.mark.slow
def test_channels_last_bf16_autocast_and_compile_capture(small):
    crops = rand_crops()
    with torch.no_grad():
        ref = small(crops)
        cl = GalaxyNet("small").eval()
        cl.load_state_dict(small.state_dict())
        cl = cl.to(memory_format=torch.channels_last)
        assert cl.first_layer_weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(cl(crops), ref, atol=1e-5, rtol=1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = small(crops)
        assert half.dtype == torch.float32 and torch.isfinite(half).all()
        assert (half - ref).abs().max() < 0.05
    # The whole forward is one graph: no Python control flow on tensor values or shapes.
    compiled = torch.compile(small, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(crops), ref, atol=1e-5, rtol=1e-4)


def test_config_validation_and_serialisation():
    cfg = MODEL_PRESETS["filters-8433"]
    d = json.loads(json.dumps(cfg.to_dict()))
    assert ModelConfig.from_dict(d) == cfg and get_model_config(d) == cfg
    assert get_model_config("paper") == ModelConfig()
    with pytest.raises(ValueError, match="unknown model preset"):
        get_model_config("nope")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({**d, "extra": 1})
    bad = [dict(conv_kernels=(6, 5, 3)), dict(pool_after=(4,)), dict(dense_activation="tanh"),
           dict(viewpoint_merge="max"), dict(init="xavier"), dict(dropout=1.0), dict(maxout_pieces=1),
           dict(conv_kernels=(20, 5, 3, 3)), dict(conv_channels=(32, 0, 128, 128)), dict(conv_channels=None),
           dict(dense_units=("2048",))]
    for kwargs in bad:
        with pytest.raises(ValueError):
            ModelConfig(**kwargs)
    assert ModelConfig(dense_units=()).dense_units == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_channels_last_training_step_without_host_sync():
    torch.manual_seed(0)
    model = GalaxyNet("small").cuda().to(memory_format=torch.channels_last).train()
    crops, target = rand_crops(8).cuda(), torch.rand(8, 37, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(crops)
        loss = (out - target).square().mean()
        loss.backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert out.dtype == torch.float32 and torch.isfinite(loss).item()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
