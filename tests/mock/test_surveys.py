"""Mock survey views: the same galaxies at other pixel scales, PSFs, depths, bands and stretches."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzmorph.errors import ConfigError
from gzmorph.mock import generate
from gzmorph.mock.dataset import galaxy_rng
from gzmorph.mock.params import sample_params
from gzmorph.mock.render import render_galaxy
from gzmorph.mock.surveys import FIELD_ARCSEC, SDSS_PIXSCALE, SURVEY_VIEWS, SurveyView, render_view


def _galaxy(i: int = 0, **changes):
    p = sample_params(galaxy_rng(3, "train", i, "params"), kind="smooth")
    return dataclasses.replace(p, **changes)


def _radius(img: np.ndarray, aperture: float) -> float:
    """Flux-weighted RMS radius (px) above the sky inside a centred circular aperture (px)."""
    lum = img.astype(np.float64).mean(-1)
    lum = lum - np.median(lum)
    n = lum.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r2 = xx**2 + yy**2
    inside = r2 <= aperture**2
    return float(np.sqrt((lum * r2)[inside].sum() / lum[inside].sum()))


def test_the_sdss_view_is_the_gz2_like_image_byte_for_byte():
    for i in range(3):
        p = sample_params(galaxy_rng(0, "train", i, "params"))
        a = render_galaxy(p, galaxy_rng(0, "train", i, "render"), 96)
        b = render_view(p, galaxy_rng(0, "train", i, "render"), SURVEY_VIEWS["sdss"], 96)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("survey", ["legacy", "hsc"])
def test_a_galaxy_is_larger_in_pixels_by_the_pixel_scale_ratio(survey):
    # A bright isolated galaxy, no field sources worth counting, sharp PSF: its size is geometry.
    p = _galaxy(dx=0.0, dy=0.0, r_eff=20.0, psf_fwhm=4.0, sky_noise=0.05, star_flux=0.0)
    view = dataclasses.replace(SURVEY_VIEWS[survey], psf_factor=1.0, red_band_k=0.0, beta=10.0, soft=0.235)
    want = SDSS_PIXSCALE / view.pixscale
    sdss = render_view(p, galaxy_rng(3, "train", 0, "render"), dataclasses.replace(view, pixscale=SDSS_PIXSCALE),
                       64)
    other = render_view(p, galaxy_rng(3, "train", 0, "render"), view, round(64 * want))  # the same field
    # The same angular aperture in both images (12 SDSS pixels).
    ratio = _radius(other, 12 * want) / _radius(sdss, 12)
    assert ratio == pytest.approx(want, rel=0.1)


def test_views_differ_in_sharpness_depth_and_colour():
    p = _galaxy(1)
    imgs = {s: render_view(p, galaxy_rng(3, "train", 1, "render"), v, 100 if s != "hsc" else 160)
            for s, v in SURVEY_VIEWS.items() if s != "sdss"}
    # HSC-like: finer pixels, sharper PSF, deeper: the sky is smoother relative to the galaxy.
    for s, img in imgs.items():
        corner = img[:12, :12].astype(float)
        assert corner.std() < 12, s
    assert SURVEY_VIEWS["legacy"].red_band_k > 0  # g r z: the red channel is redder


def test_generate_view_keeps_ids_and_labels_and_records_the_scale(tmp_path):
    sdss = generate(tmp_path / "sdss", 3, 2, seed=5, size=48, workers=0, progress=False)
    hsc = generate(tmp_path / "hsc", 3, 2, seed=5, size=80, workers=0, progress=False, view="hsc")
    for name in ("training_solutions_rev1.csv", "test_solutions_rev1.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(sdss / name), pd.read_csv(hsc / name))
    with Image.open(hsc / "images_test_rev1" / "900001.jpg") as im:
        assert im.size == (80, 80)
    meta = json.loads((hsc / ".gzmorph.json").read_text())
    assert meta["view"] == "hsc" and meta["pixscale"] == SURVEY_VIEWS["hsc"].pixscale
    with pytest.raises(ConfigError, match="wider than the mock field"):
        generate(tmp_path / "big", 1, size=400, workers=0, progress=False, view="hsc")
    with pytest.raises(ConfigError, match="view must be one of"):
        generate(tmp_path / "bad", 1, size=64, workers=0, progress=False, view="euclid")


def test_view_validation():
    with pytest.raises(ValueError, match="pixscale must be positive"):
        SurveyView(pixscale=0)
    with pytest.raises(ValueError, match="does not fit the mock field"):
        render_view(_galaxy(), galaxy_rng(3, "train", 0, "render"), SURVEY_VIEWS["legacy"],
                    int(FIELD_ARCSEC / 0.262) + 5)
