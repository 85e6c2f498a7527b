"""Test-time sets matched to each network's symmetry period (issue 20, part 2)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from discovery_helpers import make_p4m_run
from factories import make_run
from gzmorph.inference.ensemble import Ensemble
from gzmorph.models.rundir import load_run
from gzmorph.nn import augment as aug
from gzmorph.nn.model import MODEL_PRESETS, build_model
from gzmorph.nn.symmetric import SymmetricConfig
from gzmorph.nn.tta import ROT_STEP, Symmetry, matched_tta, network_symmetry, run_tta
from gzmorph.runtime import resolve_device
from gzmorph.training.recipes import PRESETS, get_preset


def _symmetry(preset: str) -> Symmetry:
    cfg = get_preset(preset)
    return network_symmetry(cfg.model, cfg.augment)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_rot_angles_cover_one_period_evenly(preset):
    sym = _symmetry(preset)
    rot = matched_tta("rot", sym)
    angles = [a for a, s, f in rot]
    n = round(sym.period / ROT_STEP)
    assert all(s == 1.0 and not f for _, s, f in rot)
    assert angles[0] == 0.0 and len(angles) == n
    assert np.allclose(np.diff(angles + [sym.period]), sym.period / n)  # even, and wrapping round to 0
    paper = matched_tta("paper", sym)
    if sym.exact:  # 10 angles over the period x 3 scales, no flip when mirroring is a symmetry
        assert sorted({a for a, _, _ in paper}) == pytest.approx([sym.period * k / 10 for k in range(10)])
        assert len(paper) == 30 * (1 if sym.flip else 2)
    else:
        assert paper == aug.TTA_SETS["paper"]


def test_each_preset_gets_its_own_period():
    assert _symmetry("p4m") == Symmetry(90.0, True, True)
    assert [a for a, _, _ in matched_tta("rot", _symmetry("p4m"))] == [9.0 * k for k in range(10)]
    assert _symmetry("p4m-72") == Symmetry(90.0, True, True)
    assert _symmetry("p4m-2crop") == Symmetry(45.0, True, True)
    assert _symmetry("cyclic") == Symmetry(90.0, True, True)
    assert _symmetry("pooled") == Symmetry(45.0, True, True)
    # The paper's network keeps the sets it always had (its viewpoint *set* repeats every 45 degrees).
    assert _symmetry("paper") == Symmetry(45.0, True, False)
    assert matched_tta("rot", _symmetry("paper")) == aug.TTA_SETS["rot"]
    assert matched_tta("paper", _symmetry("paper")) == aug.TTA_SETS["paper"]
    assert matched_tta("none", _symmetry("p4m")) == aug.TTA_SETS["none"]
    # A second crop at another angle than 45 adds no turn symmetry and breaks the mirror one.
    cfg = get_preset("p4m-2crop")
    assert network_symmetry(cfg.model, replace(cfg.augment, second_crop_angle=30.0)) == Symmetry(90.0, False, True)
    with pytest.raises(ValueError, match="unknown TTA set"):
        matched_tta("bogus", _symmetry("p4m"))


def _tiny(preset: str) -> tuple[torch.nn.Module, aug.AugmentConfig]:
    cfg = get_preset(preset)
    if isinstance(cfg.model, SymmetricConfig):
        model_cfg = replace(cfg.model, channels=(3, 4), pool_after=(0,), hidden=8)
    else:
        model_cfg = replace(MODEL_PRESETS["small"], viewpoint_merge=cfg.model.viewpoint_merge)
    torch.manual_seed(0)
    return build_model(model_cfg).double().eval(), replace(cfg.augment, out_size=24 if preset != "pooled" else 69)


@pytest.mark.parametrize("preset", ["p4m", "p4m-2crop", "pooled"])
def test_the_recorded_period_is_the_networks_own(preset):
    """Sampling at a + period (or mirrored) changes nothing; half a period does: the period is not too long or short."""
    net, augment = _tiny(preset)
    sym = network_symmetry(get_preset(preset).model, augment)
    imgs = torch.randint(0, 256, (2, 60, 60, 3), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)

    def out(angle, flip=False):
        with torch.no_grad():
            return net(aug.render_crops(imgs, aug.fixed_transforms(2, angle, 1.0, flip), augment).double())

    ref = out(7.0)
    torch.testing.assert_close(out(7.0 + sym.period), ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out(7.0, flip=True), ref, atol=1e-6, rtol=1e-5)
    assert (out(7.0 + sym.period / 2) - ref).abs().max() > 1e-5


def test_prediction_averages_each_run_over_its_own_set(tmp_path):
    runs = [load_run(make_p4m_run(tmp_path / "p4m"), device="cpu"), load_run(make_run(tmp_path / "paper", 0),
                                                                              device="cpu")]
    ens = Ensemble(runs, resolve_device("cpu"), tta="rot")
    assert ens.run_transforms == [run_tta("rot", runs[0]), aug.TTA_SETS["rot"]]
    assert len(ens.run_transforms[0]) == 10 and max(a for a, _, _ in ens.run_transforms[0]) == 81.0
    images = np.random.default_rng(0).integers(0, 256, (3, runs[0].image_size, runs[0].image_size, 3), np.uint8)
    got = ens.predict_runs(images)[0]
    x = torch.from_numpy(images)
    with torch.inference_mode():
        want = np.mean([runs[0].model(aug.render_crops(x, aug.fixed_transforms(3, a, s, f), runs[0].augment,
                                                       runs[0].pca)).numpy() for a, s, f in run_tta("rot", runs[0])], 0)
    np.testing.assert_allclose(got, want, atol=1e-6)
