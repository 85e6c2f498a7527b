"""Training on FITS cutouts at their headers' pixel scales (issue 22: ``train --pixel-scale header``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gzmorph.cli import main
from gzmorph.data.composite import STRETCH_PRESETS
from gzmorph.mock.fits import MOCK_SURVEYS, write_cube
from gzmorph.models.rundir import read_run
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.nn import augment as aug
from gzmorph.training.recipes import get_preset
from gzmorph.training.trainset import load_training_data
from gzmorph.tree import GZ2, TreeConstraint

LEGACY = STRETCH_PRESETS["legacy-grz"]
# The same galaxy (id 1) three times: the reference at 0.262"/px, a cutout twice as wide
# at twice the scale (33.5": cut to the run's field) and one half as wide (8.4": enlarged).
VERSIONS = {1: (64, 0.262), 2: (64, 0.524), 3: (32, 0.262)}
# Other galaxies, so that the run's field (the median) is the reference's: 16.768".
OTHERS = [(64, 0.262)] * 5 + [(32, 0.524), (80, 0.2), (48, 0.3), (60, 0.3)]
FIELDS = [side * scale for side, scale in [*VERSIONS.values(), *OTHERS]]


def galaxy_planes(side: int, scale: float, size: float) -> np.ndarray:
    """An elongated, tilted, off-centre galaxy of fixed angular size, as (3, side, side) surface brightness."""
    c = (side - 1) / 2
    yy, xx = (np.mgrid[:side, :side] - c) * scale  # arcsec from the centre
    u, v = 0.8 * (xx - 0.6) + 0.6 * (yy + 0.3), -0.6 * (xx - 0.6) + 0.8 * (yy + 0.3)
    sb = 2.0 * np.exp(-(u**2 / (2 * size**2) + v**2 / (2 * (0.4 * size) ** 2)))
    return np.stack([0.6 * sb, sb, 1.5 * sb]).astype(np.float32)  # (3, side, side): g, r, z


def write_set(root: Path, no_scale: bool = False, jpeg: bool = False) -> Path:
    """A labelled catalog of FITS cutouts at the sides and scales above (ids in catalog order)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [*VERSIONS.values(), *OTHERS]
    paths = []
    for gid, (side, scale) in enumerate(rows, start=1):
        path = root / f"{gid}.fits"
        write_cube(galaxy_planes(side, scale, 1.5 if gid <= 3 else 1.0 + 0.2 * gid), path,
                   replace(MOCK_SURVEYS["legacy"], pixscale=scale))
        paths.append(path)
    if no_scale:  # a cutout whose header lost its scale: no PIXSCALE, no WCS
        from astropy.io import fits

        bare = root / f"{len(rows) + 1}.fits"
        fits.PrimaryHDU(galaxy_planes(64, 0.262, 2.0)).writeto(bare)
        # and one of 3.2" against the run's 16.8": zoom 0.19, outside the warp's range
        small = root / f"{len(rows) + 2}.fits"
        write_cube(galaxy_planes(16, 0.2, 0.5), small, replace(MOCK_SURVEYS["legacy"], pixscale=0.2))
        paths += [bare, small]
    if jpeg:
        from PIL import Image

        paths.append(root / "99.jpg")
        Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(paths[-1])
    raw = np.random.default_rng(0).normal(size=(len(paths), 37)).astype(np.float32)
    labels = TreeConstraint(GZ2)(torch.from_numpy(raw)).numpy()
    frame = pd.DataFrame(labels, columns=GZ2.columns)
    frame.insert(0, "path", [str(p) for p in paths])
    frame.insert(0, "GalaxyID", [int(p.stem) for p in paths])
    frame.to_csv(root / "catalog.csv", index=False)
    return root / "catalog.csv"


def tiny(**changes) -> TrainConfig:
    base = get_preset("small")
    return base.override(model=replace(base.model, conv_channels=(4, 4, 8, 8), dense_units=(16,)), image_size=48,
                         examples=32, batch_size=16, eval_every=32, val_fraction=0.25, precision="fp32", **changes)


def reference_crops(ds) -> np.ndarray:
    """The unperturbed training crops of galaxies 1-3 (the first training rows: ids sort first)."""
    t = aug.place(aug.fixed_transforms(3), None if ds.train_geometry is None else ds.train_geometry[:3])
    return aug.render_crops(ds.train_images[:3], t, tiny().augment, None).numpy()  # (3, 2, 3, S, S)


def test_one_galaxy_at_three_scales_reaches_the_network_alike(tmp_path):
    catalog = write_set(tmp_path / "set")
    ds = load_training_data(catalog, tiny(pixel_scale="header"), GZ2, tmp_path / "run", workers=0, progress=False,
                            stretch=LEGACY)
    assert np.median(FIELDS) == pytest.approx(64 * 0.262)  # the set is built so: the reference is at the field
    assert ds.header_scale["field"] == pytest.approx(np.median(FIELDS))
    zoom = ds.train_geometry[:3, 2].numpy()
    assert zoom == pytest.approx([1.0, 1.0, 0.5], abs=1e-5)  # the wide one was cut, the narrow one is enlarged
    crops = reference_crops(ds)
    scaled = [np.abs(crops[k] - crops[0]).mean() for k in (1, 2)]
    plain = reference_crops(load_training_data(catalog, tiny(), GZ2, tmp_path / "plain", workers=0,
                                               progress=False, stretch=LEGACY))
    unscaled = [np.abs(plain[k] - plain[0]).mean() for k in (1, 2)]
    assert max(scaled) < 0.2 * min(unscaled), (scaled, unscaled)
    assert max(scaled) < 0.02  # what is left: the coarser pixels of two versions


def test_recentring_and_header_scales_compose(tmp_path):
    catalog = write_set(tmp_path / "set")
    cfg = tiny(pixel_scale="header", augment=replace(tiny().augment, recentre=True))
    ds = load_training_data(catalog, cfg, GZ2, tmp_path / "run", workers=0, progress=False, stretch=LEGACY)
    g = ds.train_geometry[:3].numpy()
    assert (g[:, 3] == 1).all()  # found: the measured zoom brings each to the GZ2 convention, then to the field
    # The same galaxy: the same offset (fraction of the side) and zoom x side (one angular size) in every version.
    sides = np.array([v[0] * v[1] for v in VERSIONS.values()])
    assert g[:, 2] / sides == pytest.approx(np.full(3, g[0, 2] / sides[0]), rel=0.08)


def test_a_run_records_the_median_field_as_a_number_and_predicts_at_header_scales(tmp_path, capsys):
    catalog = write_set(tmp_path / "set", no_scale=True)
    out = tmp_path / "run"
    argv = ["train", "--data", str(catalog), "--out", str(out), "--preset", "small", "--examples", "32",
            "--eval-every", "32", "--batch-size", "16", "--image-size", "48", "--val-fraction", "0.25",
            "--device", "cpu", "--workers", "0", "--no-progress", "--stretch", "legacy-grz", "--pixel-scale", "header"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "pixel scale from the FITS headers: 12 images" in printed and "skipped 2 undecodable" in printed
    cfg, facts = read_run(out)
    assert isinstance(cfg.pixel_scale, float) and cfg.pixel_scale_side == int(np.median([s for s, _ in
                                                                                      [*VERSIONS.values(), *OTHERS]]))
    assert cfg.field == pytest.approx(np.median(FIELDS))
    record = facts["header_pixel_scale"]
    assert (record["n_images"], record["field_min"], record["field_max"]) == (12, pytest.approx(min(FIELDS)),
                                                                              pytest.approx(max(FIELDS)))
    assert record["n_rescaled"] == sum(abs(f / np.median(FIELDS) - 1) > 1e-3 for f in FIELDS)
    skipped = pd.read_csv(out / "skipped.csv")
    assert skipped["GalaxyID"].tolist() == [13, 14] and "no usable pixel scale" in skipped["reason"][0]
    assert "outside the warp's range" in skipped["reason"][1]  # as prediction refuses it
    assert json.loads((out / "config.json").read_text())["train"]["pixel_scale"] == pytest.approx(cfg.pixel_scale)
    # The run predicts the same files at their headers' scales; the galaxy drawn three times gets one answer.
    def spread(*scale: str) -> float:
        pred = tmp_path / f"p{len(scale)}.csv"
        assert main(["predict", "--model", str(out), "--catalog", str(catalog), "--out", str(pred), "--stretch",
                     "legacy-grz", *scale, "--workers", "0", "--no-progress", "--device", "cpu"]) == 0
        frame = pd.read_csv(pred).set_index("GalaxyID")
        assert (13 in frame.index) == (14 in frame.index) == (not scale)  # error rows at header scales
        answers = frame.loc[[1, 2, 3], ["Class1.1", "Class1.2", "Class1.3"]].to_numpy()
        return float(np.abs(answers - answers[0]).max())

    at_header, without = spread("--pixel-scale", "header"), spread()
    assert at_header < 0.03 and at_header < 0.5 * without, (at_header, without)
    # Resuming goes on at the recorded field, and "header" again is no new value.
    with pytest.warns(UserWarning, match="ignoring the new values of examples$"):
        assert main([*argv, "--resume", "--examples", "48"]) == 0
    resumed, resumed_facts = read_run(out)
    assert resumed.field == pytest.approx(cfg.field) and resumed_facts["header_pixel_scale"]["n_images"] == 12


def test_header_with_jpegs_is_a_one_line_error_before_decoding(tmp_path, capsys, monkeypatch):
    catalog = write_set(tmp_path / "set", jpeg=True)
    import gzmorph.data.source as source

    monkeypatch.setattr(source.Source, "load", lambda *a, **k: pytest.fail("decoded before refusing"))
    code = main(["train", "--data", str(catalog), "--out", str(tmp_path / "run"), "--preset", "small",
                 "--device", "cpu", "--workers", "0", "--no-progress", "--stretch", "legacy-grz",
                 "--pixel-scale", "header"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "99.jpg" in err and "not a FITS cutout" in err and "number or a survey name" in err


def test_a_training_config_keeps_header_until_the_headers_are_read():
    cfg = TrainConfig(pixel_scale="header")
    assert cfg.pixel_scale == "header"
    with pytest.raises(ValueError, match="known once training has read"):
        cfg.field


def test_a_set_without_any_header_scale_is_a_one_line_error(tmp_path):
    from astropy.io import fits

    from gzmorph.errors import CatalogError

    catalog = write_set(tmp_path / "set")
    for path in pd.read_csv(catalog)["path"]:
        fits.PrimaryHDU(galaxy_planes(64, 0.262, 1.5)).writeto(path, overwrite=True)  # no PIXSCALE, no WCS
    with pytest.raises(CatalogError, match="none of the 12 FITS cutouts has a usable pixel scale"):
        load_training_data(catalog, tiny(pixel_scale="header"), GZ2, tmp_path / "run", workers=0, progress=False,
                           stretch=LEGACY)


def test_fine_tuning_at_header_scales_keeps_the_starting_runs_field(tmp_path, capsys):
    first = write_set(tmp_path / "set")  # median field 16.768"
    wide = tmp_path / "wide"
    wide.mkdir()
    paths = []
    for gid in range(1, 9):  # another survey's cutouts: all 64 px at 0.3"/px, a 19.2" field
        paths.append(wide / f"{gid}.fits")
        write_cube(galaxy_planes(64, 0.3, 1.0 + 0.2 * gid), paths[-1], replace(MOCK_SURVEYS["legacy"], pixscale=0.3))
    frame = pd.read_csv(first).iloc[:8].assign(path=[str(p) for p in paths])
    frame.to_csv(wide / "catalog.csv", index=False)
    common = ["--preset", "small", "--examples", "32", "--eval-every", "32", "--batch-size", "16", "--image-size",
              "48", "--val-fraction", "0.25", "--device", "cpu", "--workers", "0", "--no-progress", "--stretch",
              "legacy-grz", "--pixel-scale", "header"]
    assert main(["train", "--data", str(first), "--out", str(tmp_path / "a"), *common]) == 0
    start = read_run(tmp_path / "a")[0].field
    assert main(["train", "--data", str(wide / "catalog.csv"), "--out", str(tmp_path / "b"), "--init-from",
                 str(tmp_path / "a"), *common]) == 0
    assert f"shown at its field {start:.4g}" in capsys.readouterr().out
    cfg, facts = read_run(tmp_path / "b")
    assert start == pytest.approx(np.median(FIELDS)) and cfg.field == pytest.approx(start)
    record = facts["header_pixel_scale"]
    assert record["field_median"] == pytest.approx(64 * 0.3) and record["n_rescaled"] == 8
