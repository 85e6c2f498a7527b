"""The named presets: the paper's variants as the paper describes them, renamed presets, issue 20's p4m candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gzmorph.inference.science import _preset_of
from gzmorph.mock import render_galaxy, sample_params
from gzmorph.models.rundir import load_run, save_checkpoint, save_run
from gzmorph.nn import augment as aug
from gzmorph.nn.model import GalaxyNet, build_model
from gzmorph.training.recipes import PRESETS, RENAMED_PRESETS, get_preset


def test_relu_dense_is_as_wide_as_the_maxout_layers_linear_filters():
    paper, relu = GalaxyNet(get_preset("paper").model), GalaxyNet(get_preset("paper-relu-dense").model)
    for p, r in zip(paper.dense, relu.dense):
        assert r.pieces == 1 and r.linear.out_features == p.linear.out_features == 4096  # 2048 units x 2 pieces
    assert relu.output.in_features == 4096
    assert get_preset("paper-relu-dense").model.dense_activation == "relu"


def test_pooled_is_outside_the_paper_family_and_the_old_name_warns():
    assert "pooled" in PRESETS and "paper-pooled" not in PRESETS
    assert PRESETS["pooled"].model.viewpoint_merge == "mean"
    assert not any(PRESETS[name].model.viewpoint_merge == "mean" for name in PRESETS
                   if name.startswith("paper") and hasattr(PRESETS[name].model, "viewpoint_merge"))
    with pytest.warns(FutureWarning, match="'paper-pooled' is deprecated.*'pooled'"):
        old = get_preset("paper-pooled")
    assert old == get_preset("pooled") and RENAMED_PRESETS == {"paper-pooled": "pooled"}


def test_a_run_trained_as_paper_pooled_still_loads_and_is_named_pooled(tmp_path):
    with pytest.warns(FutureWarning):
        cfg = get_preset("paper-pooled").override(image_size=40)
    save_run(tmp_path / "run", cfg, {"pca": {}})
    save_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt", GalaxyNet(cfg.model), 7, cfg)
    run = load_run(tmp_path / "run", device="cpu")
    assert run.step == 7 and run.model.cfg.viewpoint_merge == "mean"
    assert _preset_of(run.config) == "pooled"


def _mock_galaxies(n: int = 2, size: int = 424) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.stack([render_galaxy(sample_params(rng, "disk"), rng, size=size) for _ in range(n)])  # (n, S, S, 3)


def _features(preset: str):
    cfg = get_preset(preset)
    torch.manual_seed(0)
    net = build_model(cfg.model).eval()

    def features(images: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(images))
        with torch.no_grad():
            return net.pooled_features(aug.render_crops(x, aug.fixed_transforms(len(x)), cfg.augment)).double()
    return features


def _turned(images: np.ndarray, angle: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).rotate(angle, resample=Image.BICUBIC)) for im in images])


@pytest.mark.parametrize("preset", ["p4m-72", "p4m-2crop"])
def test_p4m_candidates_are_invariant_to_quarter_turns_and_flips_of_mock_galaxies(preset):
    images = _mock_galaxies()
    features = _features(preset)
    ref = features(images)
    for changed in (np.rot90(images, 1, (1, 2)), np.rot90(images, 2, (1, 2)), images[:, :, ::-1]):
        torch.testing.assert_close(features(changed), ref, rtol=1e-5, atol=1e-5 * float(ref.abs().max()))


def test_only_the_two_crop_p4m_is_invariant_to_45_degree_turns_up_to_interpolation():
    """A turned image is resampled: compare with the change a turn of 0.0001 degrees makes (interpolation alone)."""
    images = _mock_galaxies()
    change = {}
    for preset in ("p4m", "p4m-2crop"):
        features = _features(preset)
        ref = features(images)
        rel = {a: float((features(_turned(images, a)) - ref).abs().max() / ref.abs().max()) for a in (1e-4, 45.0)}
        change[preset] = rel[45.0] / rel[1e-4]
    assert change["p4m-2crop"] < 1.5  # measured 0.94: the interpolation, nothing more
    assert change["p4m"] > 2.0  # measured 3.1: one crop sees a 45-degree turn
    assert get_preset("p4m-72").augment.out_size == 72 and get_preset("p4m-2crop").model.crops == 2


def test_provenance_tells_presets_that_share_a_network_apart():
    for name in ("p4m", "p4m-72", "p4m-2crop", "paper", "paper-recentred", "pooled"):
        assert _preset_of(get_preset(name)) == name
    assert _preset_of(get_preset("p4m").override(seed=3)) == "p4m"  # other settings do not matter
