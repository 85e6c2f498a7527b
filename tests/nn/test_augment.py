"""Tests of gzmorph.nn.augment: crop geometry, perturbations, brightness, colour PCA, TTA sets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.augment import AugmentConfig, Transforms

CFG = AugmentConfig()
N = CFG.out_size


def ramp_images(side: int, b: int = 1) -> torch.Tensor:
    """Float (B, 3, side, side): channel 0 = column index / (side-1), 1 = row index, 2 = 0.5."""
    r = torch.arange(side, dtype=torch.float32) / (side - 1)
    x = torch.stack([r.expand(side, side), r[:, None].expand(side, side), torch.full((side, side), 0.5)])
    return x.expand(b, 3, side, side).clone()


def expected_ramp(side: int, lin: float, offset: float = 0.0) -> torch.Tensor:
    """Ramp value at each output column for input coordinate x = lin * u + offset (normalised)."""
    u = (2 * torch.arange(N, dtype=torch.float64) + 1) / N - 1  # output pixel centres
    x = lin * u + offset
    pixel = ((x + 1) * side - 1) / 2  # align_corners=False
    return (pixel / (side - 1)).float()


def random_images(b: int = 3, side: int = 141, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, side, side, 3), generator=g, dtype=torch.uint8)


def render(images, angle=0.0, scale=1.0, flip=False, cfg=CFG, pca=None):
    return aug.render_crops(images, aug.fixed_transforms(len(images), angle, scale, flip), cfg, pca)


# ------------------------------------------------------------------ config
def test_config_roundtrip_and_validation():
    cfg = AugmentConfig(shift=0.01, scale_max=1.2)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert AugmentConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown AugmentConfig fields"):
        AugmentConfig.from_dict({**d, "bogus": 1})
    for bad in ({"crop_fraction": 0}, {"crop_fraction": 1.5}, {"out_size": 0}, {"out_size": 2.5},
                {"shift": -0.1}, {"scale_max": 0.9}, {"brightness_std": -1}, {"second_crop_angle": math.inf}):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)


# ----------------------------------------------------------------- geometry
def test_output_shape_dtype_range_and_input_layouts():
    imgs = random_images(3)
    crops = render(imgs)
    assert crops.shape == (3, 2, 3, N, N) and crops.dtype == torch.float32
    assert crops.min() >= 0 and crops.max() <= 1
    as_float = imgs.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(render(as_float), crops)


def test_centre_crop_samples_the_expected_pixels():
    side = 141
    crops = render(ramp_images(side))
    want = expected_ramp(side, CFG.crop_fraction)
    torch.testing.assert_close(crops[0, 0, 0], want.expand(N, N), atol=1e-5, rtol=0)  # x ramp along columns
    torch.testing.assert_close(crops[0, 0, 1], want[:, None].expand(N, N), atol=1e-5, rtol=0)  # y along rows
    # The crop spans crop_fraction of the side: end-to-end 207/424 * 141 * 68/69 pixels.
    span = (crops[0, 0, 0, 0, -1] - crops[0, 0, 0, 0, 0]) * (side - 1)
    assert span.item() == pytest.approx(CFG.crop_fraction * side * (N - 1) / N, abs=1e-3)


def test_shift_and_scale():
    side = 141
    t = Transforms(angle=torch.zeros(1), shift=torch.tensor([[4 / 424, -4 / 424]]), scale=torch.tensor([1.3]),
                   flip=torch.zeros(1, dtype=torch.bool), brightness=torch.zeros(1))
    crops = aug.render_crops(ramp_images(side), t, CFG)
    lin = CFG.crop_fraction / 1.3
    torch.testing.assert_close(crops[0, 0, 0, 0], expected_ramp(side, lin, 2 * 4 / 424), atol=1e-5, rtol=0)
    torch.testing.assert_close(crops[0, 0, 1, :, 0], expected_ramp(side, lin, -2 * 4 / 424), atol=1e-5, rtol=0)


def test_rotation_by_90_is_rot90_and_flip_is_mirror():
    imgs = random_images(2)
    base = render(imgs)
    # float32 sampling noise reaches ~1.2e-5 on some CPUs' kernels; a wrong turn differs by ~0.1.
    for k in range(1, 4):
        torch.testing.assert_close(render(imgs, angle=90.0 * k), torch.rot90(base, k, dims=(-2, -1)),
                                   atol=5e-5, rtol=0)
    torch.testing.assert_close(render(imgs, flip=True)[:, 0], base[:, 0].flip(-1), atol=1e-6, rtol=0)


def test_second_crop_is_first_turned_45_degrees():
    imgs = random_images(2)
    for angle in (0.0, 30.0):
        crops = render(imgs, angle=angle)
        torch.testing.assert_close(crops[:, 1], render(imgs, angle=angle + 45)[:, 0], atol=1e-5, rtol=0)
    # Crops differ from each other for a generic image.
    assert not torch.allclose(crops[:, 0], crops[:, 1], atol=1e-2)


def test_antialias_makes_large_sources_match_the_working_size():
    small = random_images(2, side=141)
    big = small.repeat_interleave(3, dim=1).repeat_interleave(3, dim=2)  # 423 px, box-downscale -> small
    torch.testing.assert_close(render(big), render(small), atol=1e-5, rtol=0)
    aliased = render(big, cfg=AugmentConfig(antialias=False))
    assert aliased.shape == (2, 2, 3, N, N)
    # Without the prefilter the crops sample single source pixels: visibly different.
    assert (aliased - render(small)).abs().max() > 0.05


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="square"):
        render(torch.zeros(1, 100, 120, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        render(torch.zeros(1, 3, 100, 100, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        render(torch.zeros(1, 100, 100, 3))
    with pytest.raises(ValueError, match="transforms for"):
        aug.render_crops(random_images(2), aug.fixed_transforms(3), CFG)


# ------------------------------------------------------------ random draws
def test_sample_transforms_ranges_and_reproducibility():
    n = 4000
    t = aug.sample_transforms(n, CFG, torch.Generator().manual_seed(1))
    again = aug.sample_transforms(n, CFG, torch.Generator().manual_seed(1))
    for name in ("angle", "shift", "scale", "flip", "brightness"):
        assert torch.equal(getattr(t, name), getattr(again, name))
    g = torch.Generator().manual_seed(1)
    first, second = aug.sample_transforms(8, CFG, g), aug.sample_transforms(8, CFG, g)
    assert not torch.equal(first.angle, second.angle)  # fresh perturbation each draw
    assert 0 <= t.angle.min() and t.angle.max() < 360 and t.angle.std() > 90
    assert t.shift.abs().max() <= 4 / 424 and t.shift.abs().max() > 3.9 / 424
    log_s = torch.log(t.scale)
    assert log_s.abs().max() <= math.log(1.3) + 1e-6 and log_s.mean().abs() < 0.02
    assert 0.45 < t.flip.float().mean() < 0.55
    assert t.brightness.std().item() == pytest.approx(0.5, rel=0.05)


def test_disabled_perturbations_are_neutral_without_changing_other_draws():
    cfg = AugmentConfig(rotate=False, flip=False, shift=0.0, scale_max=1.0, brightness_std=0.0)
    t = aug.sample_transforms(50, cfg, torch.Generator().manual_seed(3))
    assert t.angle.abs().max() == 0 and not t.flip.any() and t.shift.abs().max() == 0
    assert torch.allclose(t.scale, torch.ones(50)) and t.brightness.abs().max() == 0
    full = aug.sample_transforms(50, CFG, torch.Generator().manual_seed(3))
    only_rot = aug.sample_transforms(50, AugmentConfig(flip=False), torch.Generator().manual_seed(3))
    assert torch.equal(full.angle, only_rot.angle) and torch.equal(full.scale, only_rot.scale)


def test_transforms_indexing_and_validation():
    t = aug.sample_transforms(5, CFG, torch.Generator().manual_seed(0))
    assert len(t) == 5 and len(t[1:3]) == 2 and torch.equal(t[1:3].shift, t.shift[1:3])
    assert len(t[4]) == 1 and torch.equal(t[4].shift, t.shift[4:5])
    with pytest.raises(ValueError, match="shift"):
        Transforms(torch.zeros(2), torch.zeros(2), torch.ones(2), torch.zeros(2, dtype=torch.bool), torch.zeros(2))


# ------------------------------------------------------------- brightness
def test_brightness_shift_along_the_principal_component_and_clipping():
    pca = {"eigenvector": [0.6, 0.6, 0.52915026], "eigenvalue": 0.02}
    grey = torch.full((2, 3, 141, 141), 0.5)
    t = aug.fixed_transforms(2)
    t.brightness = torch.tensor([1.5, -2.0])
    crops = aug.render_crops(grey, t, CFG, pca)
    vec = torch.tensor(pca["eigenvector"])
    for i, alpha in enumerate((1.5, -2.0)):
        want = (0.5 + alpha * 0.02 * vec)[None, :, None, None].expand(2, 3, N, N)
        torch.testing.assert_close(crops[i], want, atol=1e-6, rtol=0)
    white = aug.render_crops(torch.ones(2, 3, 141, 141), t, CFG, pca)
    assert white.max() <= 1.0 and white[0].min() == 1.0
    # No PCA (or an empty dict): no brightness change at all.
    torch.testing.assert_close(aug.render_crops(grey, t, CFG, {}), torch.full((2, 2, 3, N, N), 0.5))


def test_color_pca_recovers_the_dominant_colour_direction():
    rng = np.random.default_rng(0)
    d = np.array([0.7, 0.5, 0.3]) / np.linalg.norm([0.7, 0.5, 0.3])
    amp = rng.uniform(-0.3, 0.3, size=(20, 32, 32, 1))
    noise = rng.normal(0, 0.01, size=(20, 32, 32, 3))
    imgs = np.clip(np.round((0.5 + amp * d + noise) * 255), 0, 255).astype(np.uint8)
    pca = aug.color_pca(imgs, max_pixels=5000, seed=1)
    assert np.allclose(pca["eigenvector"], d, atol=0.02)
    assert pca["eigenvalue"] == pytest.approx(0.3**2 / 3, rel=0.1)  # variance of U(-0.3, 0.3)
    assert aug.color_pca(torch.from_numpy(imgs), max_pixels=5000, seed=1) == pca
    json.dumps(pca)  # stored with the run
    with pytest.raises(ValueError, match="uint8"):
        aug.color_pca(imgs.astype(np.float32))


# --------------------------------------------------------------- TTA sets
def test_tta_sets():
    assert aug.tta_transforms("none") == [(0.0, 1.0, False)]
    paper = aug.tta_transforms("paper")
    assert len(paper) == 60 and len(set(paper)) == 60
    assert sorted({a for a, _, _ in paper}) == [36.0 * k for k in range(10)]
    assert sorted({s for _, s, _ in paper}) == pytest.approx([1 / 1.2, 1.0, 1.2])
    rot = aug.tta_transforms("rot")
    assert len(rot) == 5 and {a % 45 for a, _, _ in paper} == {a for a, _, _ in rot}
    with pytest.raises(ValueError, match="unknown TTA set"):
        aug.tta_transforms("bogus")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    imgs = random_images(4)
    t = aug.sample_transforms(4, CFG, torch.Generator().manual_seed(0))
    pca = {"eigenvector": [0.6, 0.6, 0.52915026], "eigenvalue": 0.02}
    cpu = aug.render_crops(imgs, t, CFG, pca)
    gpu = aug.render_crops(imgs.cuda(), t.to("cuda"), CFG, pca)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_render_crops_does_not_synchronise_the_gpu():
    imgs = random_images(4).cuda()
    t = aug.sample_transforms(4, CFG, torch.Generator().manual_seed(0)).to("cuda")
    pca = {"eigenvector": [0.6, 0.6, 0.52915026], "eigenvalue": 0.02}
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        crops = aug.render_crops(imgs, t, CFG, pca)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert crops.shape == (4, 2, 3, N, N)
