"""Tests of gzmorph.nn.survey_augment: PSF blur, noise, resolution, colour and stretch on batches."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gzmorph.config import build
from gzmorph.errors import ConfigError
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.nn import survey_augment as sa
from gzmorph.nn.augment import SURVEY_STRENGTHS, AugmentConfig
from gzmorph.training.recipes import PRESETS, ROBUST_AUGMENT, get_preset

ALL_ON = AugmentConfig(psf_blur=3.0, noise=0.05, degrade=1.0, color_jitter=0.2, stretch_jitter=0.5)


def crops_from_flux(flux: torch.Tensor) -> torch.Tensor:
    """Display crops of linear flux ``(B, 2, 3, n, n)`` through the reference stretch."""
    return sa.to_display(flux)


def sigma_of(plane: torch.Tensor) -> float:
    """RMS radius along x of a centred blob ``(n, n)``: its Gaussian sigma."""
    n = plane.shape[-1]
    x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    w = plane.double() / plane.double().sum()
    return math.sqrt(float((w.sum(0) * x**2).sum()))


# ------------------------------------------------------------------ config
def test_strengths_validated_and_stored():
    cfg = AugmentConfig(**ROBUST_AUGMENT)
    assert AugmentConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for name, top in SURVEY_STRENGTHS.items():
        for bad in (-0.1, top * 1.01, math.nan, math.inf):
            with pytest.raises(ValueError, match=name):
                AugmentConfig(**{name: bad})
    with pytest.raises(ConfigError, match="noise must be in"):
        build(TrainConfig, {"augment": {"noise": -1}})


def test_paper_presets_keep_it_off_and_robust_preset_turns_it_on():
    for name in PRESETS:
        assert sa.survey_active(get_preset(name).augment) == (name == "p4m-robust"), name
    robust, p4m = get_preset("p4m-robust"), get_preset("p4m")
    # Everything but the new strengths is the p4m preset.
    assert robust.override(augment=p4m.augment) == p4m


# ------------------------------------------------------------------ identity
def test_off_is_the_identity_and_neutral_draws_change_nothing():
    x = torch.rand(4, 2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    assert sa.augment_survey(x, AugmentConfig(), seed=3) is x
    assert sa.apply_survey(x, sa.SurveyDraws.neutral(4)) is x
    # The stretch round trip is exact below the white level.
    assert torch.allclose(sa.to_display(sa.to_linear(x)), x, atol=1e-5)
    d = sa.SurveyDraws.neutral(4)
    d.gain = torch.ones(4) + 1e-7  # forces the flux path, with (nearly) neutral parameters
    assert torch.allclose(sa.apply_survey(x, d), x, atol=1e-4)


# ------------------------------------------------------------------ known answers
@pytest.mark.parametrize("fwhm", [2.0, 4.0, 6.0])
def test_blur_of_a_point_source_has_the_expected_width(fwhm):
    n = 41
    flux = torch.zeros(2, 2, 3, n, n)
    flux[..., n // 2, n // 2] = 0.5  # a faint point source: the stretch stays below white
    d = sa.SurveyDraws.neutral(2)
    d.blur_fwhm = torch.tensor([fwhm, 0.0])
    out = sa.to_linear(sa.apply_survey(crops_from_flux(flux), d))
    want = fwhm / (2 * math.sqrt(2 * math.log(2)))
    for crop in range(2):  # both crops of an example get the same PSF
        assert sigma_of(out[0, crop, 1]) == pytest.approx(want, rel=0.02)
        assert float(out[0, crop, 1].sum()) == pytest.approx(0.5, rel=1e-3)  # flux is kept
    assert sigma_of(out[1, 0, 1]) == pytest.approx(0.0, abs=1e-3)  # FWHM 0: untouched


def test_noise_has_the_expected_sd_per_example():
    x = torch.full((3, 2, 3, 64, 64), 0.5)
    d = sa.SurveyDraws.neutral(3)
    d.noise_sd, d.noise_seed = torch.tensor([0.0, 0.02, 0.08]), 11
    out = sa.apply_survey(x, d)
    assert torch.equal(out[0], x[0])
    for b, sd in ((1, 0.02), (2, 0.08)):
        assert float((out[b] - 0.5).std()) == pytest.approx(sd, rel=0.03)
        assert abs(float((out[b] - 0.5).mean())) < 0.1 * sd


def test_degrade_equals_area_down_then_bilinear_up():
    x = torch.rand(3, 2, 3, 48, 48, generator=torch.Generator().manual_seed(2))
    factor = torch.tensor([1.0, 1.7, 3.0])
    out = sa.degrade(x, factor)
    assert torch.equal(out[0], x[0])
    for b in (1, 2):
        s = round(48 / float(factor[b]))
        small = F.interpolate(x[b].reshape(1, 6, 48, 48), size=(s, s), mode="area")
        ref = F.interpolate(small, size=(48, 48), mode="bilinear", align_corners=False).reshape(2, 3, 48, 48)
        assert torch.allclose(out[b], ref, atol=1e-5)
    # Detail is lost: a checkerboard averages to grey.
    board = (torch.arange(48)[:, None] + torch.arange(48)[None, :]) % 2
    grey = sa.degrade(board.float().expand(1, 3, 48, 48), torch.tensor([2.0]))
    assert float((grey - 0.5).abs().max()) < 1e-5


def test_colour_jitter_scales_each_band_in_linear_flux():
    flux = torch.full((1, 2, 3, 8, 8), 0.01)
    d = sa.SurveyDraws.neutral(1)
    d.band_scale = torch.tensor([[2.0, 1.0, 0.5]])
    out = sa.to_linear(sa.apply_survey(crops_from_flux(flux), d))
    assert out[0, :, 0].mean() == pytest.approx(0.02, rel=1e-3)
    assert out[0, :, 1].mean() == pytest.approx(0.01, rel=1e-3)
    assert out[0, :, 2].mean() == pytest.approx(0.005, rel=1e-3)


def test_stretch_variation_is_another_lupton_composite():
    # Below the white level everywhere (colours within 2.5x), so the stretch inverts exactly.
    flux = 0.02 + torch.rand(2, 2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.03
    d = sa.SurveyDraws.neutral(2)
    d.beta, d.gain = torch.tensor([0.1, sa.REFERENCE_BETA]), torch.tensor([1.0, 2.0])
    out = sa.apply_survey(crops_from_flux(flux), d)
    # float32 through asinh, sinh and back: agreement to a few 1e-5
    assert torch.allclose(out[0], sa.to_display(flux[:1], 0.1)[0], atol=1e-4)
    assert torch.allclose(out[1], sa.to_display(2 * flux[1:])[0], atol=1e-4)
    # A softer stretch (larger beta) darkens the faint parts; colours (band ratios) are kept.
    assert float(out[0].mean()) < float(crops_from_flux(flux)[0].mean())
    assert torch.allclose(out[0, :, 0] / out[0, :, 1], flux[0, :, 0] / flux[0, :, 1], rtol=1e-3)


# ------------------------------------------------------------------ draws
def test_deterministic_under_seed_and_draws_in_range():
    x = torch.rand(8, 2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    a, b = sa.augment_survey(x, ALL_ON, seed=5), sa.augment_survey(x, ALL_ON, seed=5)
    assert torch.equal(a, b) and not torch.equal(a, sa.augment_survey(x, ALL_ON, seed=6))
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and a.shape == x.shape
    d = sa.sample_survey(2000, ALL_ON, torch.Generator().manual_seed(0))
    assert 0 <= float(d.blur_fwhm.min()) and float(d.blur_fwhm.max()) <= 3.0
    assert 1 <= float(d.degrade.min()) and float(d.degrade.max()) <= 2.0
    assert float(d.noise_sd.max()) <= 0.05
    assert float(d.beta.max()) <= sa.REFERENCE_BETA * math.exp(0.5) * (1 + 1e-6)
    assert float(d.band_scale.log().std()) == pytest.approx(0.2, rel=0.1)


def test_switching_one_off_keeps_the_other_draws():
    on = sa.sample_survey(16, ALL_ON, torch.Generator().manual_seed(1))
    off = sa.sample_survey(16, ALL_ON.__class__(**{**ALL_ON.to_dict(), "psf_blur": 0.0}),
                           torch.Generator().manual_seed(1))
    assert torch.equal(off.blur_fwhm, torch.zeros(16))
    assert torch.equal(on.noise_sd, off.noise_sd) and torch.equal(on.degrade, off.degrade)
    assert on.noise_seed == off.noise_seed


def test_survey_prob_perturbs_that_fraction_and_leaves_the_rest_as_rendered():
    half = AugmentConfig(**{**ALL_ON.to_dict(), "survey_prob": 0.5})
    full = sa.sample_survey(4000, ALL_ON, torch.Generator().manual_seed(2))
    part = sa.sample_survey(4000, half, torch.Generator().manual_seed(2))
    hit = part.noise_sd > 0
    assert float(hit.double().mean()) == pytest.approx(0.5, abs=0.03)
    # The perturbed examples keep exactly the draws they get at survey_prob 1 ...
    assert torch.equal(part.noise_sd[hit], full.noise_sd[hit])
    assert torch.equal(part.band_scale[hit], full.band_scale[hit])
    # ... and the others are neutral in every operation.
    miss = ~hit
    assert torch.equal(part.blur_fwhm[miss], torch.zeros(int(miss.sum())))
    assert torch.equal(part.degrade[miss], torch.ones(int(miss.sum())))
    assert torch.equal(part.band_scale[miss], torch.ones(int(miss.sum()), 3))
    assert torch.allclose(part.beta[miss], torch.full((int(miss.sum()),), sa.REFERENCE_BETA))
    x = torch.rand(64, 2, 3, 24, 24, generator=torch.Generator().manual_seed(3)) * 0.9
    y = sa.augment_survey(x, half, seed=11)
    d = sa.sample_survey(64, half, torch.Generator().manual_seed(11))
    same = (y - x).abs().amax(dim=(1, 2, 3, 4)) < 1e-4  # (64,) unchanged up to the stretch round trip
    assert torch.equal(same, d.noise_sd == 0) and 0 < int(same.sum()) < 64
    assert sa.augment_survey(x, AugmentConfig(**{**ALL_ON.to_dict(), "survey_prob": 0.0}), seed=11) is x
    with pytest.raises(ValueError, match="survey_prob"):
        AugmentConfig(survey_prob=1.5)
