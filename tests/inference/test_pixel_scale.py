"""Prediction at a pixel scale: the job, its record, its refusals (issue 22, part 1)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from factories import make_run
from gzmorph.cli import main
from gzmorph.errors import CatalogError, ConfigError
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.predict import predict, predict_to_file
from gzmorph.models.rundir import load_run, read_run

FIELD = 40.0  # the tiny runs' recorded field: 0.2"/px at 200 px


def galaxies(folder, side: int, scale: float, n: int = 4) -> str:
    """``n`` elongated galaxies of fixed angular sizes (2-4"), drawn at ``scale`` "/px on ``side`` px."""
    folder.mkdir(parents=True, exist_ok=True)
    c = (side - 1) / 2
    yy, xx = (np.mgrid[:side, :side] - c) * scale
    for i in range(n):
        s = 2.0 + 0.7 * i
        sb = np.exp(-(xx**2 / (2 * s**2) + yy**2 / (2 * (0.5 * s) ** 2)))
        rgb = np.stack([sb, 0.8 * sb, 0.6 * sb], -1)
        Image.fromarray(np.round(255 * rgb).astype(np.uint8)).save(folder / f"{10 + i}.png")
    return str(folder)


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run") / "run", seed=3, train={"pixel_scale": 0.2, "pixel_scale_side": 200})


def test_a_run_records_its_scale_and_old_runs_load_with_the_gz2_default(scaled_run, tmp_path):
    cfg, _ = read_run(scaled_run)
    assert (cfg.pixel_scale, cfg.pixel_scale_side, cfg.field) == (0.2, 200, FIELD)
    stored = json.loads((scaled_run / "config.json").read_text())
    assert stored["train"]["pixel_scale"] == 0.2
    old = make_run(tmp_path / "old", seed=0)
    record = json.loads((old / "config.json").read_text())
    del record["train"]["pixel_scale"], record["train"]["pixel_scale_side"]  # a run from before the fields
    (old / "config.json").write_text(json.dumps(record))
    assert load_run(old, device="cpu").config.field == pytest.approx(0.09 * 424)


def test_two_pixel_scales_reach_the_network_alike(scaled_run, tmp_path, rendered_crops):
    """The crops the network gets from one galaxy drawn at two scales are the same with the scale."""
    sdss = galaxies(tmp_path / "sdss", 100, 0.396)  # 39.6"
    hsc = galaxies(tmp_path / "hsc", 120, 0.168)  # 20.2": each galaxy twice the fraction of the image
    seen = rendered_crops

    def crops(folder: str, scale) -> np.ndarray:
        seen.clear()
        predict(scaled_run, folder, pixel_scale=scale, progress=False, device="cpu")
        return np.concatenate([c.numpy() for c in seen])  # (4, 2, 3, S, S), rows in file order

    plain = np.abs(crops(sdss, None) - crops(hsc, None)).mean()
    scaled = np.abs(crops(sdss, 0.396) - crops(hsc, "hsc")).mean()
    assert scaled < 0.25 * plain
    # And the network's answers follow the crops.
    cols = ["Class1.1", "Class1.2", "Class1.3"]
    answers = {k: predict(scaled_run, f, pixel_scale=s, progress=False, device="cpu")[cols].to_numpy()
               for k, f, s in (("sdss", sdss, 0.396), ("hsc", hsc, "hsc"))}
    assert np.abs(answers["sdss"] - answers["hsc"]).max() < 0.01


def test_the_record_names_the_scale_and_resume_refuses_another(scaled_run, tmp_path):
    images = galaxies(tmp_path / "img", 100, 0.396, n=3)
    out = tmp_path / "p.parquet"
    summary = predict_to_file(scaled_run, images, out, config=PredictConfig(pixel_scale="sdss", progress=False,
                                                                            device="cpu"))
    assert summary.n_predicted == 3
    manifest = json.loads((tmp_path / "p.parquet.manifest.json").read_text())
    assert manifest["pixel_scale"] == 0.396 and manifest["model_field"] == FIELD
    with pytest.raises(Exception, match="settings|manifest|differ"):
        predict_to_file(scaled_run, images, out, config=PredictConfig(pixel_scale=0.3, progress=False, device="cpu"),
                        resume=True)


def test_an_image_outside_the_warps_range_is_an_error_row(scaled_run, tmp_path):
    folder = tmp_path / "mixed"
    galaxies(folder, 100, 0.396, n=2)
    galaxies(tmp_path / "small", 40, 0.2, n=1)  # 8" against 40": zoom 0.2
    (folder / "99.png").write_bytes((tmp_path / "small" / "10.png").read_bytes())
    frame = predict(scaled_run, str(folder), pixel_scale=0.2, progress=False, device="cpu")
    errors = frame.attrs["errors"]
    assert sorted(frame["GalaxyID"]) == [10, 11]
    assert list(errors["GalaxyID"]) == [99] and "outside the warp's range" in errors["reason"][0]


def test_runs_of_different_fields_are_refused_together(scaled_run, tmp_path):
    other = make_run(tmp_path / "other", seed=1)
    images = galaxies(tmp_path / "img", 64, 0.396, n=1)
    with pytest.raises(ConfigError, match="different fields"):
        predict([scaled_run, other], images, pixel_scale=0.396, progress=False, device="cpu")
    predict([scaled_run, other], images, progress=False, device="cpu")  # without a scale they average as before


def test_a_cache_cannot_be_predicted_at_a_pixel_scale(scaled_run, tmp_path):
    from gzmorph.data.cache import prepare
    from gzmorph.data.catalog import open_catalog

    images = galaxies(tmp_path / "img", 64, 0.396, n=2)
    prepare(open_catalog(images), tmp_path / "cache", size=40, progress=False)
    with pytest.raises(CatalogError, match="native side"):
        predict(scaled_run, str(tmp_path / "cache"), pixel_scale=0.396, progress=False, device="cpu")


@pytest.mark.parametrize("value, why", [("0", "positive"), ("-1", "positive"),
                                        ("0.00007", "degrees per pixel"), ("lsst2", "neither a number")])
def test_the_cli_refuses_bad_scales_in_one_line(scaled_run, tmp_path, capsys, value, why):
    images = galaxies(tmp_path / "img", 64, 0.396, n=1)
    code = main(["predict", "--model", str(scaled_run), "--images", images, "--out", str(tmp_path / "p.csv"),
                 "--pixel-scale", value, "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and why in err and len(err.splitlines()) == 1


def test_the_cli_predicts_at_a_survey_scale(scaled_run, tmp_path, capsys):
    images = galaxies(tmp_path / "img", 100, 0.396, n=2)
    out = tmp_path / "p.csv"
    assert main(["predict", "--model", str(scaled_run), "--images", images, "--out", str(out), "--pixel-scale",
                 "sdss", "--no-progress", "--device", "cpu"]) == 0
    assert len(pd.read_csv(out)) == 2


def test_a_training_config_takes_a_survey_name_and_refuses_none_and_bad_sides():
    from gzmorph.models.trainconfig import TrainConfig

    cfg = TrainConfig(pixel_scale="legacy", pixel_scale_side=256)
    assert cfg.pixel_scale == 0.262 and cfg.field == pytest.approx(67.072)
    with pytest.raises(ValueError, match="a number, a survey name or 'header'"):  # header: training/header_scale.py
        TrainConfig(pixel_scale=None)
    with pytest.raises(ValueError, match="pixel_scale_side must be a positive"):
        TrainConfig(pixel_scale_side=0)
    with pytest.raises(ValueError, match="absurd"):
        TrainConfig(pixel_scale=262)


def test_train_records_the_pixel_scale_given_and_refuses_a_bad_one(tiny_kaggle, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(tiny_kaggle), "--out", str(out), "--preset", "small", "--examples", "16",
            "--eval-every", "16", "--batch-size", "8", "--device", "cpu", "--workers", "0", "--no-progress"]
    assert main([*argv, "--pixel-scale", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "positive number of arcsec per pixel" in err
    assert main([*argv, "--pixel-scale", "hsc", "--pixel-scale-side", "256"]) == 0
    cfg, _ = read_run(out)
    assert (cfg.pixel_scale, cfg.pixel_scale_side) == (0.168, 256)
