"""Pixel scale as geometry (gzmorph.data.pixscale): known answers on generated galaxies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gzmorph.data.decode import DecodeOptions, decode_item, decode_measured
from gzmorph.data.pixscale import (GZ2_FIELD, SURVEY_PIXEL_SCALES, check_pixel_scale, header_pixel_scale,
                                   parse_pixel_scale, scaled_geometry, wcs_pixel_scale)
from gzmorph.nn import augment as aug

SIGMA_ARCSEC = 2.5  # the galaxy: a round Gaussian, 2.5" sigma
MODEL_FIELD = 60.0  # arcsec: the field the (virtual) model was trained at
WORKING = 64  # the decode size


def galaxy(side: int, scale: float) -> np.ndarray:
    """The same galaxy (surface brightness per arcsec^2, so the same pixel values) at ``scale`` "/px."""
    c = (side - 1) / 2
    yy, xx = (np.mgrid[:side, :side] - c) * scale  # arcsec
    return np.exp(-(xx**2 + yy**2) / (2 * SIGMA_ARCSEC**2))


def write_png(path, side: int, scale: float) -> str:
    sb = galaxy(side, scale)
    Image.fromarray(np.round(255 * np.repeat(sb[..., None], 3, -1)).astype(np.uint8)).save(path)
    return str(path)


def warped(path: str, options: DecodeOptions) -> torch.Tensor:
    """Crop 0 of the image as the network gets it: decode, geometry, the one warp."""
    image, geometry = decode_measured(path, WORKING, options)
    t = aug.place(aug.fixed_transforms(1), None if geometry is None else geometry[None])
    return aug.render_crops(torch.from_numpy(image[None]), t, aug.AugmentConfig())[0, 0].mean(0)  # (69, 69)


def sigma_px(crop: torch.Tensor) -> float:
    """Second-moment size (pixels) of a round blob."""
    w = crop.double() / crop.sum()
    n = crop.shape[-1]
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64),
                            indexing="ij")
    cy, cx = (w * yy).sum(), (w * xx).sum()
    return float(((w * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / 2).sqrt())


def test_a_galaxy_at_two_pixel_scales_reaches_the_network_at_one_size(tmp_path):
    # SDSS-like: 0.396"/px, 128 px (50.7"); HSC-like: 0.168"/px, 240 px (40.3").
    sdss = write_png(tmp_path / "sdss.png", 128, 0.396)
    hsc = write_png(tmp_path / "hsc.png", 240, 0.168)
    expected = SIGMA_ARCSEC / (AUG_CROP * MODEL_FIELD / 69)  # 2.5" in crop pixels: the crop spans 207/424 of 60"

    plain = [sigma_px(warped(p, DecodeOptions())) for p in (sdss, hsc)]
    scaled = [sigma_px(warped(p, DecodeOptions(pixel_scale=s, model_field=MODEL_FIELD)))
              for p, s in ((sdss, 0.396), (hsc, 0.168))]
    # Without the scale the galaxy is 26% larger in the HSC image (a fraction of a smaller field) ...
    assert plain[1] / plain[0] == pytest.approx(50.688 / 40.32, rel=0.03)
    # ... with it both are the galaxy's 4" at the model's scale.
    assert scaled[0] == pytest.approx(expected, rel=0.03)
    assert scaled[1] == pytest.approx(expected, rel=0.03)
    a, b = (warped(p, DecodeOptions(pixel_scale=s, model_field=MODEL_FIELD)) for p, s in ((sdss, 0.396), (hsc, 0.168)))
    assert float((a - b).abs().max()) < 0.05  # the same tensor, up to resampling


AUG_CROP = aug.AugmentConfig().crop_fraction


def test_the_141_px_copy_and_the_424_px_original_give_the_same_crop(tmp_path):
    # One field, two sides: a run's recorded field (scale x side) is what counts.
    big = write_png(tmp_path / "big.png", 424, 0.1)
    small = write_png(tmp_path / "small.png", 141, 0.1 * 424 / 141)
    a = warped(big, DecodeOptions(pixel_scale=0.1, model_field=MODEL_FIELD))
    b = warped(small, DecodeOptions(pixel_scale=0.1 * 424 / 141, model_field=MODEL_FIELD))
    assert sigma_px(a) == pytest.approx(sigma_px(b), rel=0.02)


def test_fits_header_scales_compose_like_numbers(tmp_path):
    pytest.importorskip("astropy")
    from astropy.io import fits

    from gzmorph.data.composite import Stretch

    stretch = Stretch(bands=("g", "r", "z"), scales=(1.0, 1.0, 1.0), q=8.0, soft=0.5)
    sizes = []
    for name, side, scale in (("a", 100, 0.262), ("b", 180, 0.168), ("wide", 400, 0.262)):  # 26", 30", 105"
        hdu = fits.PrimaryHDU(np.repeat(galaxy(side, scale)[None], 3, 0).astype(np.float32) * 10)
        hdu.header["BANDS"] = "grz"
        hdu.header["CTYPE1"], hdu.header["CTYPE2"] = "RA---TAN", "DEC--TAN"
        hdu.header["CD1_1"], hdu.header["CD2_2"] = -scale / 3600, scale / 3600
        hdu.writeto(tmp_path / f"{name}.fits")
        sizes.append(sigma_px(warped(str(tmp_path / f"{name}.fits"),
                                     DecodeOptions(stretch, pixel_scale="header", model_field=MODEL_FIELD))))
    assert sizes[0] == pytest.approx(sizes[1], rel=0.04)
    assert sizes[2] == pytest.approx(sizes[0], rel=0.04)  # the wide one cut to the model's 60" first


def test_a_fits_without_a_usable_wcs_is_an_error_row_naming_why(tmp_path):
    pytest.importorskip("astropy")
    from astropy.io import fits

    from gzmorph.data.composite import Stretch

    path = tmp_path / "nowcs.fits"
    hdu = fits.PrimaryHDU(np.repeat(galaxy(64, 0.262)[None], 3, 0).astype(np.float32))
    hdu.header["BANDS"] = "grz"
    hdu.header["CD1_1"] = 0.262 / 3600  # a CD matrix without a celestial CTYPE is not a WCS
    hdu.writeto(path)
    stretch = Stretch(bands=("g", "r", "z"), scales=(1.0, 1.0, 1.0), q=8.0, soft=0.5)
    item = decode_item(3, str(path), WORKING, DecodeOptions(stretch, pixel_scale="header"))
    assert item.image is None and item.row == 3
    assert "no usable pixel scale in the FITS header" in item.reason
    # A number given for the job does not need the header.
    assert decode_item(3, str(path), WORKING, DecodeOptions(stretch, pixel_scale=0.262, model_field=MODEL_FIELD)
                       ).image is not None


def test_a_jpeg_has_no_header_scale(tmp_path):
    path = write_png(tmp_path / "g.png", 64, 0.4)
    item = decode_item(0, path, WORKING, DecodeOptions(pixel_scale="header"))
    assert item.image is None and "JPEG/PNG has no header pixel scale" in item.reason


def test_a_field_far_smaller_than_the_models_is_refused_per_image(tmp_path):
    path = write_png(tmp_path / "small.png", 40, 0.3)  # 12" against a 60" model: zoom 0.2
    item = decode_item(0, path, WORKING, DecodeOptions(pixel_scale=0.3, model_field=MODEL_FIELD))
    assert item.image is None and "zoom 0.2 is outside the warp's range 0.25-4; cut a wider cutout" in item.reason


def test_a_wider_field_is_cut_to_the_models_and_keeps_its_resolution(tmp_path):
    def sharp(side: int) -> str:  # a compact galaxy (0.6" sigma) at 0.1"/px
        c = (side - 1) / 2
        yy, xx = (np.mgrid[:side, :side] - c) * 0.1
        sb = np.exp(-(xx**2 + yy**2) / (2 * 0.6**2))
        path = tmp_path / f"{side}.png"
        Image.fromarray(np.round(255 * np.repeat(sb[..., None], 3, -1)).astype(np.uint8)).save(path)
        return str(path)

    options = DecodeOptions(pixel_scale=0.1, model_field=20.0)
    tight, wide = sharp(200), sharp(800)  # 20" (the model's field) and 80" (zoom 4, or more: 1000 px)
    image_t, geom_t = decode_measured(tight, WORKING, options)
    image_w, geom_w = decode_measured(wide, WORKING, options)
    assert geom_w[2] == pytest.approx(1.0) and geom_t[2] == pytest.approx(1.0)
    assert np.abs(image_w.astype(int) - image_t.astype(int)).max() <= 1  # the same pixels: no resolution lost
    image_x, geom_x = decode_measured(sharp(1000), WORKING, options)  # zoom 5: beyond the warp, but cut first
    assert geom_x[2] == pytest.approx(1.0) and sigma_px(torch.from_numpy(image_x[..., 0].astype(np.float32))) == \
        pytest.approx(sigma_px(torch.from_numpy(image_t[..., 0].astype(np.float32))), rel=0.02)


@pytest.mark.parametrize("value, why", [
    (0, "positive"), (-0.3, "positive"), (float("nan"), "positive"), ("inf", "positive"),
    (7.3e-5, "degrees per pixel? 7.3e-05 deg = 0.2628 arcsec"), (262, "milliarcsec? 262 mas = 0.262 arcsec"),
    ("wide", "neither a number"), (True, "must be a number"),
])
def test_bad_pixel_scales_say_why(value, why):
    with pytest.raises(ValueError, match=re_escape(why)):
        parse_pixel_scale(value)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_parse_survey_names_numbers_and_header():
    assert parse_pixel_scale("Legacy") == SURVEY_PIXEL_SCALES["legacy"] == 0.262
    assert parse_pixel_scale("hsc") == 0.168
    assert parse_pixel_scale(" 0.2 ") == 0.2
    assert parse_pixel_scale("header") == "header"
    assert parse_pixel_scale(None) is None
    assert check_pixel_scale(0.396) == 0.396


def test_wcs_and_header_scales():
    from astropy.io.fits import Header

    h = Header()
    assert wcs_pixel_scale(h) is None and header_pixel_scale(h) is None
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CDELT1"], h["CDELT2"] = -0.2 / 3600, 0.2 / 3600
    assert wcs_pixel_scale(h) == pytest.approx(0.2)
    h["PIXSCALE"] = 0.262
    assert header_pixel_scale(h) == 0.262  # the cutout service's own keyword wins
    assert header_pixel_scale(None) is None


def test_recentring_composes_with_the_models_field():
    found = np.array([0.1, -0.05, 1.5, 1.0], dtype=np.float32)
    lost = np.array([0.0, 0.0, 1.0, 0.0], dtype=np.float32)
    # A model at the GZ2 field takes the measured zoom as it is; at half that field, twice it.
    assert scaled_geometry(0.7, found, GZ2_FIELD).tolist() == pytest.approx([0.1, -0.05, 1.5, 1.0])
    assert scaled_geometry(0.7, found, GZ2_FIELD / 2)[2] == pytest.approx(3.0)
    # No galaxy found: the pixel-scale zoom replaces the plain centre crop's 1.
    assert scaled_geometry(0.7, lost, GZ2_FIELD).tolist() == pytest.approx([0.0, 0.0, 0.7, 0.0])
    assert scaled_geometry(0.7).tolist() == pytest.approx([0.0, 0.0, 0.7, 1.0])
    assert math.isclose(GZ2_FIELD, 0.09 * 424)


def test_recentring_a_fits_cutout_composes_with_its_header_scale(tmp_path):
    pytest.importorskip("sep")
    from gzmorph.data.composite import STRETCH_PRESETS
    from gzmorph.mock.fits import MOCK_SURVEYS, render_cutout, write_cube
    from gzmorph.mock.params import sample_params

    survey = MOCK_SURVEYS["legacy"]
    rng = np.random.default_rng(4)
    planes, _ = render_cutout(sample_params(rng), rng, 128, survey)
    write_cube(planes, tmp_path / "c.fits", survey)
    stretch = STRETCH_PRESETS["legacy-grz"]
    _, measured = decode_measured(tmp_path / "c.fits", WORKING, DecodeOptions(stretch, recentre=True))
    assert measured[3] == 1.0  # found
    _, both = decode_measured(tmp_path / "c.fits", WORKING,
                              DecodeOptions(stretch, recentre=True, pixel_scale="header", model_field=GZ2_FIELD / 2))
    # The offset is the measured one; the measured zoom meets a model of half the GZ2 field at twice the zoom.
    assert both[:2].tolist() == pytest.approx(measured[:2].tolist())
    assert both[2] == pytest.approx(2 * measured[2], rel=1e-5)
