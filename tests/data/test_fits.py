"""FITS cutouts: the three layouts, bad data as documented treatments or error rows, composites."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from gzmorph.data.composite import STRETCH_PRESETS, SurveyOptions, make_composite, require_survey_extra, \
    resolve_stretch
from gzmorph.data.decode import DecodeOptions, ImageError, decode
from gzmorph.data.pool import iter_decoded
from gzmorph.data.catalog import open_catalog
from gzmorph.errors import ConfigError, MissingExtraError
from gzmorph.inference.predict import predict
from gzmorph.mock.fits import MOCK_SURVEYS, render_cutout, write_cube
from gzmorph.mock.params import sample_params

from factories import make_run

LEGACY = STRETCH_PRESETS["legacy-grz"]
OPTS = DecodeOptions(LEGACY)
SIDE = 48

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _planes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    planes, _ = render_cutout(sample_params(rng), rng, SIDE, MOCK_SURVEYS["legacy"])
    return planes  # (3, SIDE, SIDE) float32, bands g, r, z


def _cube(path: Path, planes: np.ndarray, **header) -> Path:
    hdu = fits.PrimaryHDU(planes)
    hdu.header["BANDS"] = "grz"
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def test_three_layouts_give_the_same_composite(tmp_path: Path) -> None:
    planes = _planes()
    cube = _cube(tmp_path / "cube.fits", planes)
    # One image HDU per band, named by EXTNAME / FILTER, in another order than the composite's.
    hdus = [fits.PrimaryHDU()]
    for k in (2, 0, 1):
        ext = fits.ImageHDU(planes[k], name="grz"[k].upper() if k != 1 else "IMG1")
        if k == 1:
            ext.header["FILTER"] = "r DECam SDSS c0002"
        hdus.append(ext)
    fits.HDUList(hdus).writeto(tmp_path / "mef.fits")
    # One file per band, named through {band} in a catalog's path column.
    for k, band in enumerate("grz"):
        fits.PrimaryHDU(planes[k]).writeto(tmp_path / f"one_{band}.fits")
    pd.DataFrame({"GalaxyID": [1], "path": ["one_{band}.fits"]}).to_csv(tmp_path / "cat.csv", index=False)
    band_path = open_catalog(tmp_path / "cat.csv").paths[0]
    reference = make_composite(planes - np.median(planes, axis=(1, 2), keepdims=True), LEGACY)
    for path in (cube, tmp_path / "mef.fits", band_path):
        np.testing.assert_array_equal(decode(path, None, OPTS), reference, err_msg=str(path))
    assert decode(cube, 24, OPTS).shape == (24, 24, 3)


def test_folder_of_fits_is_a_catalog_with_fits_ids(tmp_path: Path) -> None:
    planes = _planes()
    _cube(tmp_path / "12.fits", planes)
    _cube(tmp_path / "13.fits.gz", planes)
    (tmp_path / "14.txt").write_text("not an image")
    cat = open_catalog(tmp_path)
    assert cat.ids.tolist() == [12, 13]
    np.testing.assert_array_equal(decode(cat.paths[1], None, OPTS), decode(cat.paths[0], None, OPTS))


def close(a: np.ndarray, b: np.ndarray) -> bool:
    diff = np.abs(a.astype(int) - b)
    return bool(diff.mean() < 0.3 and np.percentile(diff, 99) <= 3)


def test_bad_pixels_and_data_types_have_their_documented_treatment(tmp_path: Path) -> None:
    planes = _planes()
    clean = decode(_cube(tmp_path / "clean.fits", planes), None, OPTS)
    # Negative (or any) sky pedestal: the median is subtracted, the composite does not change.
    shifted = decode(_cube(tmp_path / "sky.fits", planes - np.float32(0.5)), None, OPTS)
    assert np.abs(shifted.astype(int) - clean).max() <= 1
    # A few NaN/inf pixels read as sky, not as NaN or a crash.
    holes = planes.copy()
    holes[1, :5, :5] = np.nan
    holes[0, 40, 40] = np.inf
    repaired = decode(_cube(tmp_path / "nan.fits", holes), None, OPTS)
    assert repaired[:5, :5, 1].max() <= clean[:5, :5, 1].max() + 2
    assert np.abs(repaired[10:30, 10:30].astype(int) - clean[10:30, 10:30]).max() <= 1
    # Integer data with BSCALE (astropy applies it) and raw integer counts, stored big-endian as FITS does.
    hdu = fits.PrimaryHDU(planes.copy())
    hdu.header["BANDS"] = "grz"
    hdu.scale("int16", bscale=1e-3, bzero=0)
    hdu.writeto(tmp_path / "int16.fits")
    # Quantised to 1e-3 nanomaggy: the same picture up to the colour of a few faint sky pixels.
    assert close(decode(tmp_path / "int16.fits", None, OPTS), clean)
    raw = fits.PrimaryHDU(np.round(planes / 1e-3).astype(">i2"))
    raw.header["BANDS"] = "grz"
    raw.writeto(tmp_path / "counts.fits")
    counts = DecodeOptions(resolve_stretch("legacy-grz", scales="1.6e-3,1e-3,0.6e-3"))
    assert close(decode(tmp_path / "counts.fits", None, counts), clean)
    big = planes.astype(">f4")
    assert decode(_cube(tmp_path / "big.fits", big), None, OPTS).tolist() == clean.tolist()


@pytest.mark.parametrize("case, reason", [
    ("nan_band", "band r: 100% of the pixels are NaN/inf"),
    ("zero_band", "band z is empty (all pixels are 0)"),
    ("missing_band", "missing band z (the cube has g,r,i)"),
    ("corrupt", "not a readable FITS file"),
    ("truncated", "FITS"),
])
def test_bad_cutouts_are_error_rows_naming_the_file(tmp_path: Path, case: str, reason: str) -> None:
    planes = _planes()
    path = tmp_path / f"{case}.fits"
    if case == "nan_band":
        planes[1] = np.nan
        _cube(path, planes)
    elif case == "zero_band":
        planes[2] = 0
        _cube(path, planes)
    elif case == "missing_band":
        hdu = fits.PrimaryHDU(planes)
        hdu.header["BANDS"] = "gri"
        hdu.writeto(path)
    elif case == "corrupt":
        path.write_bytes(b"SIMPLE  =  this is not a FITS header" * 10)
    else:
        _cube(tmp_path / "whole.fits", planes)
        path.write_bytes((tmp_path / "whole.fits").read_bytes()[:4000])
    with pytest.raises(ImageError) as err:
        decode(path, None, OPTS)
    assert str(path) in str(err.value) and reason in err.value.reason
    [(_, image, why, _)] = list(iter_decoded([path], size=24, workers=0, options=OPTS))
    assert image is None and reason in why


def test_a_prediction_job_keeps_going_past_bad_cutouts(tmp_path: Path) -> None:
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k in range(3):
        _cube(folder / f"{k}.fits", _planes(k))
    planes = _planes(9)
    planes[0] = 0
    _cube(folder / "7.fits", planes)
    (folder / "8.fits").write_bytes(b"garbage")
    run = make_run(tmp_path / "run", seed=0)
    frame = predict(run, folder, stretch=LEGACY, workers=0, progress=False, batch_size=2)
    errors = frame.attrs["errors"]
    assert frame["GalaxyID"].tolist() == [0, 1, 2]
    assert errors["GalaxyID"].tolist() == [7, 8]
    assert "band g is empty" in errors["reason"][0] and errors["path"][1].endswith("8.fits")
    # Without a stretch, FITS rows say what is missing instead of guessing the bands.
    bare = predict(run, folder, workers=0, progress=False).attrs["errors"]
    assert len(bare) == 5 and bare["reason"].str.contains("--bands, --stretch").all()


def test_stretch_presets_are_data_and_options_override_them() -> None:
    assert set(STRETCH_PRESETS) == {"sdss-gri", "legacy-grz", "hsc-gri"}
    assert STRETCH_PRESETS["legacy-grz"].bands == ("g", "r", "z")
    # HSC counts (zero point 27) are 63.1 per nanomaggy: the same look needs a 63x softer range.
    assert STRETCH_PRESETS["hsc-gri"].soft == pytest.approx(63.1 * STRETCH_PRESETS["legacy-grz"].soft)
    custom = SurveyOptions(stretch="legacy-grz", bands="G,R,I", stretch_q=3).resolve()
    assert custom.bands == ("G", "R", "I") and custom.q == 3 and custom.soft == LEGACY.soft
    assert SurveyOptions().resolve() is None
    with pytest.raises(ConfigError, match="unknown stretch"):
        resolve_stretch("sdss-ugr")
    with pytest.raises(ConfigError, match="three different band names"):
        resolve_stretch("legacy-grz", bands="g,g,z")


def test_composite_maps_the_reddest_band_to_red() -> None:
    planes = np.zeros((3, 8, 8), np.float32)
    planes[2, 3:5, 3:5] = 5.0  # light in z only
    rgb = make_composite(planes, LEGACY)
    assert rgb[4, 4, 0] > 200 and rgb[4, 4, 1] == 0 and rgb[4, 4, 2] == 0
    assert rgb[0, 0].tolist() == [0, 0, 0]


def test_fits_features_without_the_extra_say_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sep", None)  # import sep now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'gzmorph\[survey\]'"):
        require_survey_extra()
