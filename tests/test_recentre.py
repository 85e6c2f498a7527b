"""Recentring and rescaling (the paper's section 7.3): ground truth on mock FITS, the one warp, runs and predict."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from gzmorph.cli import main
from gzmorph.data.cache import ImageCache, prepare
from gzmorph.data.catalog import open_catalog
from gzmorph.data.composite import STRETCH_PRESETS
from gzmorph.data.images import DecodeOptions, decode, decode_measured
from gzmorph.data.recentre import GZ2_SIDE_IN_R90, NO_GEOMETRY, measure
from gzmorph.inference.predict import predict
from gzmorph.mock import generate
from gzmorph.nn import augment as aug
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import read_run
from gzmorph.training.train import train

from factories import make_run

LEGACY = STRETCH_PRESETS["legacy-grz"]
MEASURE = DecodeOptions(LEGACY, recentre=True)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mock_fits(tmp_path_factory) -> Path:
    """60 labelled + 6 test mock grz cutouts of 96 px, galaxies off centre and of known sizes."""
    return generate(tmp_path_factory.mktemp("fits") / "mock", n=60, n_test=6, seed=0, size=96, format="fits",
                    workers=1, progress=False)


def test_recentring_recovers_the_true_centre_and_size(mock_fits: Path) -> None:
    truth = pd.read_csv(mock_fits / "truth.csv")
    truth = truth[truth["split"] == "train"]
    centre_err, size_err = [], []
    for row in truth.itertuples():
        image, geom = decode_measured(mock_fits / "images_training_rev1" / f"{row.GalaxyID}.fits", None, MEASURE)
        side = image.shape[0]
        assert geom[3] == 1.0  # found
        x, y = (side - 1) / 2 + geom[0] * side, (side - 1) / 2 + geom[1] * side
        r90 = side / (GZ2_SIDE_IN_R90 * geom[2])  # the zoom is side / (8.48 R90)
        centre_err.append(np.hypot(x - row.x_true, y - row.y_true))
        size_err.append(abs(r90 / row.r90_true - 1))
    centre_err, size_err = np.array(centre_err), np.array(size_err)
    # The bar: centre within 1 px, size within 10%, on at least 95% of the mock galaxies.
    assert (centre_err < 1.0).mean() >= 0.95, np.sort(centre_err)[-5:]
    assert (size_err < 0.10).mean() >= 0.95, np.sort(size_err)[-5:]
    # The galaxies really were off centre and of many sizes: the test is not trivially passed.
    offsets = np.hypot(truth.x_true - 47.5, truth.y_true - 47.5)
    assert offsets.max() > 8 and truth.r90_true.max() / truth.r90_true.min() > 2.5


def test_empty_sky_is_not_found_and_keeps_the_centre_crop() -> None:
    noise = np.random.default_rng(0).normal(0, 1, (64, 64)).astype(np.float32)
    placement = measure(noise)
    assert not placement.found
    assert placement.geometry().tolist() == NO_GEOMETRY.tolist()


def test_flux_radius_when_the_petrosian_radius_is_undefined() -> None:
    """A galaxy larger than the cutout: the Petrosian ratio never falls to 0.2, the flux radius is used."""
    side = 64
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    flat = 50.0 / (1 + (np.hypot(xx, yy) / 40.0) ** 2)  # a shallow profile filling the whole image
    image = (flat + np.random.default_rng(0).normal(0, 0.05, (side, side))).astype(np.float32)
    placement = measure(image)
    assert placement.method == "flux_radius" and 10 < placement.r90 < side
    assert abs(placement.x - (side - 1) / 2) < 1 and abs(placement.y - (side - 1) / 2) < 1


def test_place_is_the_same_single_warp_as_shifting_and_scaling() -> None:
    """A galaxy off centre, recentred by place(), renders as the same galaxy at the centre."""
    side = 96
    yy, xx = np.mgrid[:side, :side]
    def blob(cx: float, cy: float, r: float) -> np.ndarray:
        g = np.exp(-((xx - cx) ** 2 + ((yy - cy) * 1.8) ** 2) / (2 * r * r))
        return (255 * g[..., None] * np.array([1.0, 0.7, 0.4])).astype(np.uint8)
    centred = torch.from_numpy(blob(47.5, 47.5, 6.0)[None])
    moved = torch.from_numpy(blob(47.5 + 12, 47.5 - 7, 6.0)[None])
    cfg = aug.AugmentConfig()
    t = aug.fixed_transforms(1, angle=30.0)
    reference = aug.render_crops(centred, t, cfg)
    geometry = np.array([[12 / side, -7 / side, 1.0, 1.0]], np.float32)
    np.testing.assert_allclose(aug.render_crops(moved, aug.place(t, geometry), cfg), reference, atol=0.02)
    assert (aug.render_crops(moved, t, cfg) - reference).abs().max() > 0.3  # without it: another image
    # A zoom of 2 is the same map as the TTA scale 2; a shift in the perturbation is divided by the zoom.
    zoomed = aug.place(aug.fixed_transforms(1), np.array([[0, 0, 2.0, 1]], np.float32))
    torch.testing.assert_close(aug.render_crops(centred, zoomed, cfg),
                               aug.render_crops(centred, aug.fixed_transforms(1, scale=2.0), cfg))
    shifted = replace(aug.fixed_transforms(1), shift=torch.tensor([[0.04, 0.0]]))
    assert aug.place(shifted, np.array([[0.1, 0, 2.0, 1]], np.float32)).shift[0].tolist() == \
        pytest.approx([0.1 + 0.02, 0.0])


def test_paper_recentred_preset_is_the_paper_with_recentring() -> None:
    paper, recentred = get_preset("paper"), get_preset("paper-recentred")
    assert not paper.augment.recentre and recentred.augment.recentre
    assert replace(recentred, augment=paper.augment).to_dict() == paper.to_dict()


def test_fits_and_its_jpeg_rendering_predict_the_same(mock_fits: Path, tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", seed=3)
    jpegs = tmp_path / "jpeg"
    jpegs.mkdir()
    fits_dir = mock_fits / "images_test_rev1"
    for path in sorted(fits_dir.glob("*.fits")):
        Image.fromarray(decode(path, None, DecodeOptions(LEGACY))).save(jpegs / f"{path.stem}.jpg", quality=95)
    from_fits = predict(run, fits_dir, stretch=LEGACY, workers=0, progress=False)
    from_jpeg = predict(run, jpegs, workers=0, progress=False)
    assert from_fits["GalaxyID"].tolist() == from_jpeg["GalaxyID"].tolist() and len(from_fits) == 6
    cols = [c for c in from_fits.columns if c.startswith("Class")]
    diff = np.abs(from_fits[cols].to_numpy() - from_jpeg[cols].to_numpy())
    assert diff.max() < 0.02, diff.max()


def test_predict_cli_fits_with_recentring_end_to_end(mock_fits: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for path in sorted((mock_fits / "images_test_rev1").glob("*.fits")):
        (folder / path.name).write_bytes(path.read_bytes())
    # A cutout of empty sky: no galaxy near the centre, so the plain centre crop, flagged.
    from astropy.io import fits

    hdu = fits.PrimaryHDU(np.random.default_rng(1).normal(0, 0.01, (3, 96, 96)).astype(np.float32))
    hdu.header["BANDS"] = "grz"
    hdu.writeto(folder / "999.fits")
    run = make_run(tmp_path / "run", seed=4)
    out = tmp_path / "p.parquet"
    argv = ["predict", "--model", str(run), "--images", str(folder), "--bands", "g,r,z", "--stretch", "legacy-grz",
            "--out", str(out), "--workers", "0", "--no-progress"]
    assert main(argv + ["--recentre"]) == 0
    assert "no galaxy found in 1 (plain centre crop" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert frame.set_index("GalaxyID")["recentred"].to_dict() == {**{900000 + k: True for k in range(6)}, 999: False}
    # The same run without recentring: no column, and other numbers (the crop did move).
    plain = tmp_path / "plain.parquet"
    assert main(argv[:-5] + ["--out", str(plain), "--workers", "0", "--no-progress"]) == 0
    plain_frame = pd.read_parquet(plain)
    assert "recentred" not in plain_frame.columns
    assert np.abs(plain_frame["Class1.1"].to_numpy() - frame["Class1.1"].to_numpy()).max() > 1e-4
    # CSV output carries the column too.
    csv = tmp_path / "p.csv"
    assert main(argv[:-5] + ["--out", str(csv), "--workers", "0", "--no-progress", "--recentre"]) == 0
    assert pd.read_csv(csv).set_index("GalaxyID")["recentred"].to_dict() == \
        frame.set_index("GalaxyID")["recentred"].to_dict()


def test_a_run_trained_on_recentred_fits_records_it_and_predict_applies_it(mock_fits: Path, tmp_path: Path) -> None:
    base = get_preset("small")
    cfg = base.override(model=replace(base.model, conv_channels=(4, 4, 8, 8), dense_units=(16,)), image_size=48,
                        examples=64, batch_size=16, eval_every=64, warmup_examples=16,
                        augment=replace(base.augment, recentre=True))
    result = train(cfg, mock_fits, tmp_path / "run", device="cpu", workers=0, progress=False, stretch=LEGACY)
    assert result["finished"]
    stored, facts = read_run(tmp_path / "run")
    assert stored.augment.recentre and facts["stretch"]["bands"] == ["g", "r", "z"]
    assert facts["n_not_recentred"] == 0
    # No --recentre and no --stretch: the run's own settings.
    frame = predict(tmp_path / "run", mock_fits / "images_test_rev1", workers=0, progress=False)
    assert frame["recentred"].tolist() == [True] * 6 and len(frame.attrs["errors"]) == 0
    off = predict(tmp_path / "run", mock_fits / "images_test_rev1", workers=0, progress=False, recentre=False)
    assert "recentred" not in off.columns
    # A model package of the run carries both settings: the same predictions without flags.
    pytest.importorskip("safetensors")
    from gzmorph.sharing.package import export_package

    package = export_package(tmp_path / "run", tmp_path / "package", which="last")
    shared = predict(package, mock_fits / "images_test_rev1", workers=0, progress=False)
    assert shared["recentred"].tolist() == [True] * 6
    cols = [c for c in frame.columns if c.startswith("Class")]
    np.testing.assert_allclose(shared[cols].to_numpy(), frame[cols].to_numpy(), atol=1e-6)


def test_prepare_recentre_stores_the_geometry_and_predict_uses_it(mock_fits: Path, tmp_path: Path) -> None:
    catalog = open_catalog(mock_fits, split="test")
    cache = prepare(catalog, tmp_path / "cache", size=48, workers=0, progress=False, options=MEASURE)
    assert cache.geometry.shape == (6, 4) and cache.geometry[:, 3].all()
    reopened = ImageCache.open(tmp_path / "cache")
    np.testing.assert_array_equal(reopened.geometry, cache.geometry)
    assert json.loads((tmp_path / "cache" / "cache.json").read_text())["n_recentred"] == 6
    run = make_run(tmp_path / "run", seed=5, image_size=48)
    from_cache = predict(run, tmp_path / "cache", workers=0, progress=False, recentre=True)
    from_files = predict(run, mock_fits / "images_test_rev1", stretch=LEGACY, workers=0, progress=False,
                         recentre=True)
    cols = [c for c in from_cache.columns if c.startswith("Class")]
    np.testing.assert_allclose(from_cache[cols].to_numpy(), from_files[cols].to_numpy(), atol=1e-5)
    assert from_cache["recentred"].all()
