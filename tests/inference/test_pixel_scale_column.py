"""Per-row pixel scales from a catalogue column: ``--pixel-scale column:NAME`` (issue 22, part 1)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from factories import make_run
from gzmorph.cli import main
from gzmorph.data.catalog import open_catalog
from gzmorph.data.decode import DecodeOptions
from gzmorph.data.pixscale import parse_pixel_scale, row_pixel_scale, scale_column
from gzmorph.data.pool import iter_decoded
from gzmorph.errors import CatalogError
from gzmorph.inference.config import PredictConfig
from gzmorph.inference.predict import predict, predict_to_file
from test_pixel_scale import FIELD, galaxies

COLS = ["Class1.1", "Class1.2", "Class1.3"]
SDSS, HSC = (100, 0.396), (120, 0.168)  # (side px, arcsec/px): 39.6" and 20.2" fields


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    """The tiny run of ``test_pixel_scale`` (field 40")."""
    return make_run(tmp_path_factory.mktemp("run") / "run", seed=3, train={"pixel_scale": 0.2, "pixel_scale_side": 200})


@pytest.fixture(scope="module")
def merged(tmp_path_factory) -> Path:
    """One catalogue of the same 4 galaxies drawn as SDSS-like and HSC-like PNGs, each row with its own scale."""
    root = tmp_path_factory.mktemp("merged")
    galaxies(root / "sdss", *SDSS)
    galaxies(root / "hsc", *HSC)
    rows = [(f"{prefix}{i}", f"{folder}/{10 + i}.png", scale)
            for prefix, folder, (_, scale) in (("s", "sdss", SDSS), ("h", "hsc", HSC)) for i in range(4)]
    path = root / "merged.csv"
    pd.DataFrame(rows, columns=["objid", "path", "scale"]).to_csv(path, index=False)
    return path


def answers(frame: pd.DataFrame, prefix: str) -> np.ndarray:
    """``(4, 3)`` answers of the rows whose id starts with ``prefix``, in galaxy order."""
    rows = frame[frame["objid"].str.startswith(prefix)].sort_values("objid")
    return rows[COLS].to_numpy()


def run_predict(run, source, **options) -> pd.DataFrame:
    return predict(run, str(source), id_column="objid", progress=False, device="cpu", workers=0, **options)


# ------------------------------------------------------------------ the spec
def test_the_spec_parses_keeps_the_other_forms_and_is_refused_for_training():
    from gzmorph.models.trainconfig import TrainConfig

    assert parse_pixel_scale(" Column: cutout_pixscale ") == "column:cutout_pixscale"  # the name keeps its case
    assert scale_column("column:Scale") == "Scale" and scale_column(0.262) is None and scale_column("header") is None
    assert (parse_pixel_scale("hsc"), parse_pixel_scale("header"), parse_pixel_scale("0.2")) == (0.168, "header", 0.2)
    with pytest.raises(ValueError, match="name the catalogue column"):
        parse_pixel_scale("column:")
    with pytest.raises(ValueError, match="'column:NAME'"):
        parse_pixel_scale("colum:x")
    with pytest.raises(ValueError, match="a number, a survey name or 'header'"):
        TrainConfig(pixel_scale="column:cutout_pixscale")  # a run records one field


@pytest.mark.parametrize("value, why", [(np.nan, "empty or NaN"), (None, "empty"), ("  ", "empty"),
                                        (-1.0, "positive number"), ("abc", "must be a number"),
                                        (0.0001, "degrees per pixel"), (262.0, "milliarcsec")])
def test_a_bad_row_value_says_why_and_names_column_and_value(value, why):
    with pytest.raises(ValueError, match=why) as info:
        row_pixel_scale(value, "scale")
    assert "'scale'" in str(info.value)
    assert row_pixel_scale(" 0.262 ", "scale") == 0.262  # a CSV cell read as text


# ------------------------------------------------------------------ plumbing
def test_the_catalogue_keeps_the_column_and_subsets_it(merged):
    catalog = open_catalog(merged, id_column="objid", scale_column="scale")
    assert catalog.pixel_scales.dtype == np.float64
    np.testing.assert_array_equal(catalog.pixel_scales, [0.396] * 4 + [0.168] * 4)
    part = catalog.subset(np.array([5, 0]))
    assert list(part.ids) == ["h1", "s0"] and list(part.pixel_scales) == [0.168, 0.396]
    assert open_catalog(merged, id_column="objid").pixel_scales is None  # read only when asked


@pytest.mark.parametrize("fmt", ["parquet", "fits", "ecsv", "votable"])
def test_every_catalogue_format_gives_its_column(merged, fmt):
    from astropy.table import Table

    table = Table.from_pandas(pd.read_csv(merged))
    path = merged.parent / f"merged.{ {'votable': 'vot'}.get(fmt, fmt) }"
    if fmt == "parquet":
        table.to_pandas().to_parquet(path)
    else:
        table.write(path, format={"ecsv": "ascii.ecsv"}.get(fmt, fmt), overwrite=True)
    catalog = open_catalog(path, id_column="objid", scale_column="scale")
    np.testing.assert_array_equal(catalog.pixel_scales, [0.396] * 4 + [0.168] * 4)
    assert catalog.paths[4].endswith("hsc/10.png")


def test_worker_processes_decode_each_row_at_its_own_scale(merged):
    """The pool sends each chunk's scales with its paths: every row's zoom is its own field over the model's."""
    catalog = open_catalog(merged, id_column="objid", scale_column="scale")
    options = DecodeOptions(pixel_scale="column:scale", model_field=FIELD)
    items = list(iter_decoded(catalog.paths, size=40, workers=2, chunk=3, options=options,
                              scales=catalog.pixel_scales))
    zooms = [item.geometry[2] for item in items]
    np.testing.assert_allclose(zooms[4:], HSC[0] * HSC[1] / FIELD, rtol=1e-5)  # 20.2"/40": enlarged
    np.testing.assert_allclose(zooms[:4], SDSS[0] * SDSS[1] / FIELD, rtol=1e-5)  # 39.6"/40"
    with pytest.raises(ValueError, match="one scale per path"):
        next(iter_decoded(catalog.paths, size=40, workers=0, options=options))


# ------------------------------------------------------------------ known answers
def test_one_galaxy_at_two_scales_reaches_the_network_alike_with_the_column(scaled_run, merged, rendered_crops):
    """The crops of each galaxy's SDSS-like and HSC-like rows match, as with one number per folder."""
    seen = rendered_crops

    def crops_and_answers(**options) -> tuple[np.ndarray, pd.DataFrame]:
        seen.clear()
        frame = run_predict(scaled_run, merged, **options)
        return np.concatenate([c.numpy() for c in seen]), frame  # (8, ...), rows in catalogue order

    crops, per_row = crops_and_answers(pixel_scale="column:scale")
    plain_crops, plain = crops_and_answers()
    assert len(per_row) == 8 and per_row.attrs["errors"].empty
    # s0-s3 against h0-h3: the same galaxies at two scales.
    assert np.abs(crops[:4] - crops[4:]).mean() < 0.25 * np.abs(plain_crops[:4] - plain_crops[4:]).mean()
    scaled_gap = np.abs(answers(per_row, "s") - answers(per_row, "h")).max()
    assert scaled_gap < 0.01  # as close as the single-number test of test_pixel_scale
    assert scaled_gap < np.abs(answers(plain, "s") - answers(plain, "h")).max()


def test_each_row_equals_that_row_predicted_alone_at_its_number(scaled_run, merged):
    per_row = run_predict(scaled_run, merged, pixel_scale="column:scale")
    folder = merged.parent
    for prefix, survey, (_, scale) in (("s", "sdss", SDSS), ("h", "hsc", HSC)):
        alone = predict(scaled_run, str(folder / survey), pixel_scale=scale, progress=False, device="cpu",
                        workers=0).sort_values("GalaxyID")
        np.testing.assert_allclose(answers(per_row, prefix), alone[COLS].to_numpy(), atol=1e-5)


def test_bad_values_are_error_rows_naming_the_value_and_the_others_are_predicted(scaled_run, merged, tmp_path):
    table = pd.read_csv(merged)
    table["path"] = [str(merged.parent / p) for p in table["path"]]
    table["scale"] = table["scale"].astype(object)
    table.loc[1, "scale"], table.loc[2, "scale"], table.loc[5, "scale"] = None, "-0.2", "abc"  # s1, s2, h1
    bad = tmp_path / "bad.csv"
    table.to_csv(bad, index=False)
    out = tmp_path / "p.csv"
    summary = predict_to_file(scaled_run, bad, out, config=PredictConfig(
        pixel_scale="column:scale", id_column="objid", progress=False, device="cpu", workers=0))
    assert (summary.n_predicted, summary.n_failed) == (5, 3)
    assert sorted(pd.read_csv(out)["objid"]) == ["h0", "h2", "h3", "s0", "s3"]
    errors = pd.read_csv(summary.errors_file).set_index("objid")
    assert "no pixel scale in column 'scale'" in errors.loc["s1", "reason"]
    assert "positive number" in errors.loc["s2", "reason"] and "-0.2" in errors.loc["s2", "reason"]
    assert "'abc'" in errors.loc["h1", "reason"]
    assert errors.loc["h1", "path"].endswith("hsc/11.png")


def test_the_manifest_records_the_spec_and_resume_refuses_another(scaled_run, merged, tmp_path):
    out = tmp_path / "p.parquet"
    config = PredictConfig(pixel_scale="column:scale", id_column="objid", progress=False, device="cpu", workers=0)
    assert predict_to_file(scaled_run, merged, out, config=config).n_predicted == 8
    manifest = json.loads((tmp_path / "p.parquet.manifest.json").read_text())
    assert manifest["pixel_scale"] == "column:scale" and manifest["model_field"] == FIELD
    for other, why in (("sdss", "other settings \\(pixel_scale"), ("column:other", "no column 'other'")):
        with pytest.raises(Exception, match=why):
            predict_to_file(scaled_run, merged, out, config=PredictConfig(
                pixel_scale=other, id_column="objid", progress=False, device="cpu", workers=0), resume=True)
    table = pd.read_csv(merged)
    table.loc[0, "scale"] = 0.4  # the same spec over other values: the resumed rows would not match
    table.to_csv(tmp_path / "edited.csv", index=False)
    (tmp_path / "sdss").symlink_to(merged.parent / "sdss")
    (tmp_path / "hsc").symlink_to(merged.parent / "hsc")
    with pytest.raises(Exception, match="other settings \\(pixel_scales"):
        predict_to_file(scaled_run, tmp_path / "edited.csv", out, config=config, resume=True)


# ------------------------------------------------------------------ refusals
def test_the_cli_refuses_a_missing_column_in_one_line_before_decoding(scaled_run, merged, tmp_path, capsys):
    code = main(["predict", "--model", str(scaled_run), "--catalog", str(merged), "--id-column", "objid",
                 "--out", str(tmp_path / "p.csv"), "--pixel-scale", "column:cutout_pixscale", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(merged) in err and "'cutout_pixscale'" in err
    assert not (tmp_path / "p.csv").exists()


def test_a_folder_and_a_cache_are_refused(scaled_run, merged, tmp_path):
    from gzmorph.data.cache import prepare

    with pytest.raises(CatalogError, match="no catalogue columns"):
        predict(scaled_run, str(merged.parent / "sdss"), pixel_scale="column:scale", progress=False, device="cpu")
    prepare(open_catalog(merged.parent / "sdss"), tmp_path / "cache", size=40, progress=False)
    with pytest.raises(CatalogError, match="native side"):  # as a single number is refused
        predict(scaled_run, str(tmp_path / "cache"), pixel_scale="column:scale", progress=False, device="cpu")


def test_a_cutouts_folder_is_predicted_at_its_cutout_pixscale(scaled_run, merged, tmp_path):
    """``gzmorph cutouts`` writes ``cutout_pixscale``: its folder reads as it is."""
    folder = tmp_path / "cutouts"
    folder.mkdir()
    table = pd.read_csv(merged).rename(columns={"scale": "cutout_pixscale"})
    table["path"] = [str(merged.parent / p) for p in table["path"]]
    table.to_parquet(folder / "catalog.parquet")
    (folder / "cutouts.json").write_text(json.dumps({"id_column": "objid"}))
    from_folder = run_predict(scaled_run, folder, pixel_scale="column:cutout_pixscale")
    from_csv = run_predict(scaled_run, merged, pixel_scale="column:scale")
    pd.testing.assert_frame_equal(from_folder.reset_index(drop=True), from_csv.reset_index(drop=True))


@pytest.mark.slow
def test_ray_predicts_the_same_rows_as_one_machine(scaled_run, merged, tmp_path, ray_cluster):
    from gzmorph.inference.ray import predict_ray

    options = dict(pixel_scale="column:scale", id_column="objid", progress=False, workers=0, batch_size=4,
                   chunk_rows=4)
    local = predict_to_file(scaled_run, merged, tmp_path / "local.parquet", **options)
    remote = predict_ray(scaled_run, merged, tmp_path / "ray.parquet", actors=1, gpus_per_actor=0, cpus_per_actor=1,
                         **options)
    (got, _), (want, _) = remote.read(), local.read()
    pd.testing.assert_frame_equal(got.sort_values("objid").reset_index(drop=True),
                                  want.sort_values("objid").reset_index(drop=True))
    assert remote.n_predicted == 8


def test_a_catalog_object_must_carry_its_scales(scaled_run, merged):
    """The Python API: a Catalog built in memory is predicted at its ``pixel_scales``, refused without them."""
    catalog = open_catalog(merged, id_column="objid")
    with pytest.raises(CatalogError, match="no pixel scales of column 'scale'"):
        predict(scaled_run, catalog, pixel_scale="column:scale", progress=False, device="cpu")
    catalog.pixel_scales = np.array([0.396] * 4 + [0.168] * 4)
    from_object = predict(scaled_run, catalog, pixel_scale="column:scale", progress=False, device="cpu", workers=0)
    from_file = run_predict(scaled_run, merged, pixel_scale="column:scale")
    np.testing.assert_array_equal(from_object[COLS].to_numpy(), from_file[COLS].to_numpy())
