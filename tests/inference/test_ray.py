"""Prediction on a (local, loopback) Ray cluster: same rows as the single-machine job, error rows, reruns."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from gzmorph.cli import main  # noqa: E402
from gzmorph.inference.predict import predict, predict_to_file  # noqa: E402
from gzmorph.errors import OutputError  # noqa: E402
from gzmorph.inference.parts import PartStore  # noqa: E402
from gzmorph.inference.parts import manifest_path, ray_errors_dir  # noqa: E402
from gzmorph.inference.ray import RayConfig, predict_ray  # noqa: E402
from gzmorph.tree import GZ2  # noqa: E402

N = 24
BAD = {1003: "truncated", 1010: "empty file"}
# Two CPU actors of half a CPU each leave one of the cluster's two CPUs for decoding.
RAY_OPTS = dict(actors=2, gpus_per_actor=0, cpus_per_actor=0.5, chunk_rows=8, batch_size=4, progress=False)


from factories import make_images, make_run  # noqa: E402


# Tiny tensors on a shared 2-core machine: one torch thread is several times faster.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def cluster(ray_cluster):
    """The module's local Ray cluster (``ray_cluster`` of conftest)."""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ray")
    paths = make_images(root / "images", N)
    blob = paths[3].read_bytes()
    paths[3].write_bytes(blob[: len(blob) // 2])
    paths[10].write_bytes(b"")
    return make_run(root / "run", 1), root / "images"


@pytest.fixture(scope="module")
def ray_job(cluster, data, tmp_path_factory):
    """The Ray job on the 24 images (3 partitions of 8), run once for the module."""
    run, images = data
    out = tmp_path_factory.mktemp("out") / "preds.parquet"
    return predict_ray(run, images, out, **RAY_OPTS)


def test_nothing_imports_ray_without_the_flag():
    code = ("import sys, gzmorph.inference.predict, gzmorph.inference.ray\n"
            "from gzmorph.cli import build_parser\n"
            "build_parser().parse_args(['predict', '--model', 'r', '--images', 'i', '--out', 'o'])\n"
            "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_union_of_parts_equals_single_machine_predict(ray_job, data):
    run, images = data
    assert (ray_job.n_inputs, ray_job.n_predicted, ray_job.n_failed, ray_job.n_resumed) == (N, N - 2, 2, 0)
    out = ray_job.out
    assert sorted(p.name for p in out.iterdir()) == ["_manifest.json", *(f"part-{k:06d}.parquet" for k in range(3))]
    single = predict(run, images, workers=0, progress=False, batch_size=4)
    got, errors = ray_job.read()
    pd.testing.assert_frame_equal(pd.read_parquet(out), got)
    assert list(got.columns) == list(single.columns)  # the columns of the single-machine Parquet output
    assert got["GalaxyID"].tolist() == single["GalaxyID"].tolist() == sorted(set(range(1000, 1000 + N)) - set(BAD))
    np.testing.assert_allclose(got[GZ2.columns].to_numpy(), single[GZ2.columns].to_numpy(), rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(got, single, check_exact=False, rtol=0, atol=1e-6)

    # Error rows: the same as the single-machine job's, in an errors directory next to the output.
    assert ray_job.errors_file == ray_errors_dir(out) == out.with_name("preds.parquet.errors")
    assert sorted(p.name for p in ray_job.errors_file.iterdir()) == ["part-000000.parquet", "part-000001.parquet"]
    expected = single.attrs["errors"]
    assert list(errors.columns) == ["GalaxyID", "path", "reason"]
    assert errors["GalaxyID"].tolist() == expected["GalaxyID"].tolist() == sorted(BAD)
    assert errors["path"].tolist() == expected["path"].tolist()
    assert errors["reason"].tolist() == expected["reason"].tolist()
    assert "truncated" in errors["reason"][0] and errors["reason"][1] == "empty file"


def test_rerun_computes_only_missing_partitions(ray_job, data, tmp_path):
    run, images = data
    out = tmp_path / "preds.parquet"
    shutil.copytree(ray_job.out, out)
    shutil.copytree(ray_job.errors_file, ray_errors_dir(out))
    (out / "part-000001.parquet").unlink()  # as if the job died while on partition 1
    stamps = {k: (out / f"part-00000{k}.parquet").stat().st_mtime_ns for k in (0, 2)}
    (out / ".part-000001.parquet.tmp").write_bytes(b"half a file")  # left by the killed job

    summary = predict_ray(run, images, out, resume=True, **RAY_OPTS)
    assert (summary.n_resumed, summary.n_predicted, summary.n_failed) == (16, N - 2, 2)
    assert {k: (out / f"part-00000{k}.parquet").stat().st_mtime_ns for k in (0, 2)} == stamps
    assert not (out / ".part-000001.parquet.tmp").exists()
    again, errors = summary.read()
    before, before_errors = ray_job.read()
    pd.testing.assert_frame_equal(again, before, check_exact=False, rtol=0, atol=1e-6)
    pd.testing.assert_frame_equal(errors, before_errors)

    finished = predict_ray(run, images, out, resume=True, **RAY_OPTS)  # nothing left: no Ray job at all
    assert finished.n_resumed == N and finished.n_predicted == N - 2
    with pytest.raises(OutputError, match="tta"):
        predict_ray(run, images, out, resume=True, **{**RAY_OPTS, "tta": "rot"})
    again = predict_ray(run, images, out, **RAY_OPTS)  # without --resume: the same rule as one machine
    assert again.n_resumed == 0 and again.n_predicted == N - 2


def test_cli_with_a_catalog_of_string_ids(cluster, data, tmp_path, capsys):
    run, images = data
    files = sorted(images.glob("*.jpg"), key=lambda p: int(p.stem))
    names = ["007", "NGC 1", "x,y", "M 31", "bad"]
    pd.DataFrame({"name": names, "file": [str(f) for f in files[:4]] + [str(files[10])]}).to_csv(
        tmp_path / "cat.csv", index=False)
    out = tmp_path / "cat_preds.parquet"
    argv = ["predict", "--model", str(run), "--catalog", str(tmp_path / "cat.csv"), "--id-column", "name",
            "--path-column", "file", "--out", str(out), "--ray", "--ray-actors", "1", "--ray-gpus-per-actor", "0",
            "--ray-cpus-per-actor", "0.5", "--chunk-rows", "4", "--batch-size", "4", "--no-progress"]
    assert main(argv) == 0
    assert "5 inputs: 3 predicted" in capsys.readouterr().out
    got = pd.read_parquet(out)
    assert got["name"].tolist() == ["007", "NGC 1", "x,y"]
    errors = pd.read_parquet(ray_errors_dir(out))
    assert errors["name"].tolist() == ["M 31", "bad"] and errors["reason"].str.len().min() > 0
    single = predict(run, tmp_path / "cat.csv", id_column="name", path_column="file", workers=0, progress=False)
    np.testing.assert_allclose(got[GZ2.columns].to_numpy(), single[GZ2.columns].to_numpy(), rtol=0, atol=1e-6)

    base = ["predict", "--model", str(run), "--ray"]
    (tmp_path / "empty").mkdir()  # (not tmp_path itself: an output is never inside an input folder)
    assert main([*base, "--cache", str(tmp_path / "empty"), "--out", str(out)]) == 2
    assert "no images" in capsys.readouterr().err  # an empty folder is no cache
    assert main([*base, "--images", str(images), "--out", str(tmp_path / "p.csv")]) == 2
    assert "directory of Parquet parts" in capsys.readouterr().err


def test_without_ray_installed_the_cli_says_how_to_get_it(data, tmp_path, monkeypatch, capsys):
    run, images = data
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["predict", "--model", str(run), "--images", str(images), "--out", str(tmp_path / "p.parquet"),
                 "--ray", "--no-progress"]) == 2
    assert "pip install 'gzmorph[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "p.parquet").exists()


def test_bad_settings_are_refused(data, tmp_path):
    run, images = data
    with pytest.raises(ValueError, match="actors"):
        RayConfig(actors=0)
    with pytest.raises(ValueError, match="whole number"):
        RayConfig(gpus_per_actor=1.5)
    assert RayConfig.from_dict(RayConfig(address="auto", gpus_per_actor=0.25).to_dict()).gpus_per_actor == 0.25
    with pytest.raises(TypeError, match="unknown options"):
        predict_ray(run, images, tmp_path / "p.parquet", actor=2)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a gzmorph output"):
        PartStore(tmp_path / "notes", tmp_path / "notes.errors", {"version": 1}, resume=False)
    assert (tmp_path / "notes" / "todo.txt").read_text() == "mine"


# ------------------------------------------------------------------ parity with the local job
PARITY = dict(workers=0, progress=False, batch_size=4, chunk_rows=4)
RAY_PARITY = dict(actors=1, gpus_per_actor=0, cpus_per_actor=1)


def ray_equals_local(models, source, tmp_path, **options):
    """Run the local job and the Ray job; assert the same rows, error rows and manifest."""
    local = predict_to_file(models, source, tmp_path / "local.parquet", **PARITY, **options)
    remote = predict_ray(models, source, tmp_path / "ray.parquet", **PARITY, **RAY_PARITY, **options)
    (got, got_errors), (want, want_errors) = remote.read(), local.read()
    pd.testing.assert_frame_equal(got, want, check_exact=True)  # the same function computed every chunk
    id_column = local.id_column
    pd.testing.assert_frame_equal(got_errors.astype({id_column: want_errors[id_column].dtype}), want_errors)
    record = json.loads(manifest_path(tmp_path / "local.parquet").read_text())
    ray_record = json.loads((tmp_path / "ray.parquet" / "_manifest.json").read_text())
    assert {k: v for k, v in ray_record.items() if k != "layout"} == \
        {k: v for k, v in record.items() if k not in ("layout", "finished")}
    assert (remote.n_predicted, remote.n_failed, remote.n_not_recentred) == \
        (local.n_predicted, local.n_failed, local.n_not_recentred)
    return got, got_errors


def _fits_cutouts(folder: Path) -> Path:
    """Mock grz cutouts in every layout the local job reads, plus empty sky and a bad file."""
    from astropy.io import fits

    from gzmorph.mock.fits import MOCK_SURVEYS, render_cutout
    from gzmorph.mock.params import sample_params

    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        planes, _ = render_cutout(sample_params(rng), rng, 48, MOCK_SURVEYS["legacy"])  # (3, 48, 48): g, r, z
        if k % 3 == 0:  # one cube
            hdu = fits.PrimaryHDU(planes)
            hdu.header["BANDS"] = "grz"
            hdu.writeto(folder / f"{k}.fits")
            rows.append((k, f"{k}.fits"))
        elif k % 3 == 1:  # one image HDU per band, named by EXTNAME
            fits.HDUList([fits.PrimaryHDU(), *(fits.ImageHDU(planes[b], name="GRZ"[b]) for b in range(3))]).writeto(
                folder / f"{k}.fits")
            rows.append((k, f"{k}.fits"))
        else:  # one file per band
            for b, band in enumerate("grz"):
                fits.PrimaryHDU(planes[b]).writeto(folder / f"{k}_{band}.fits")
            rows.append((k, f"{k}_{{band}}.fits"))
    sky = fits.PrimaryHDU(rng.normal(0, 0.01, (3, 48, 48)).astype(np.float32))
    sky.header["BANDS"] = "grz"
    sky.writeto(folder / "sky.fits")
    (folder / "bad.fits").write_bytes(b"SIMPLE  =  T" + b"\0" * 100)
    rows += [(90, "sky.fits"), (91, "bad.fits")]
    pd.DataFrame(rows, columns=["GalaxyID", "path"]).to_csv(folder / "cat.csv", index=False)
    return folder / "cat.csv"


def test_fits_with_the_runs_stretch_and_recentring_as_on_one_machine(cluster, tmp_path):
    pytest.importorskip("sep")
    from gzmorph.data.composite import STRETCH_PRESETS

    catalog = _fits_cutouts(tmp_path / "cutouts")
    run = make_run(tmp_path / "run", 5, recentre=True, data={"stretch": STRETCH_PRESETS["legacy-grz"].to_dict()})
    got, errors = ray_equals_local(run, catalog, tmp_path)
    assert got.set_index("GalaxyID")["recentred"].to_dict() == {**{k: True for k in range(6)}, 90: False}
    assert errors["GalaxyID"].tolist() == [91]
    # Other stretch options given to the job reach the actors too: other pixels, other numbers.
    other = tmp_path / "other"
    other.mkdir()
    stretch = replace(STRETCH_PRESETS["legacy-grz"], q=2.0, soft=0.2)
    got_other, _ = ray_equals_local(run, catalog, other, stretch=stretch)
    assert np.abs(got_other[GZ2.columns].to_numpy() - got[GZ2.columns].to_numpy()).max() > 1e-4


def test_cache_of_a_custom_tree_with_recentring_as_on_one_machine(cluster, data, tmp_path):
    pytest.importorskip("sep")
    from gzmorph.data.cache import prepare
    from gzmorph.data.catalog import open_catalog
    from gzmorph.data.decode import DecodeOptions
    from gzmorph.tree import Question, Tree

    tree = Tree("bars", (Question("S", "Smooth?", ("smooth", "featured"), ("smooth", "featured")),
                         Question("B", "Bar?", ("bar", "no bar"), ("bar", "no_bar"), parent="featured")))
    _, images = data
    files = sorted(images.glob("*.jpg"), key=lambda p: int(p.stem))
    pd.DataFrame({"objid": [f"g{i}" for i in range(12)], "file": [str(f) for f in files[:12]]}).to_csv(
        tmp_path / "cat.csv", index=False)
    catalog = open_catalog(tmp_path / "cat.csv", tree=tree, id_column="objid", path_column="file")
    prepare(catalog, tmp_path / "cache", size=40, workers=0, progress=False, options=DecodeOptions(recentre=True))
    run = make_run(tmp_path / "run", 6, tree=tree)
    got, errors = ray_equals_local(run, tmp_path / "cache", tmp_path, recentre=True)
    assert list(got.columns[:5]) == ["objid", "smooth", "featured", "bar", "no_bar"]
    assert errors["objid"].tolist() == ["g3", "g10"]  # the truncated and the empty image (BAD)
    assert "truncated" in errors["reason"].iloc[0] and errors["reason"].iloc[1] == "empty file"


def test_partly_trained_run_writes_nan_without_decisions_as_on_one_machine(cluster, data, tmp_path):
    _, images = data
    q1 = ["Class1.1", "Class1.2", "Class1.3"]
    run = make_run(tmp_path / "run", 7, data={"label_columns": q1})
    with pytest.warns(UserWarning, match="written as NaN"):
        got, _ = ray_equals_local(run, images, tmp_path)
    assert got[q1].notna().all().all() and got[GZ2.columns[3:]].isna().all().all()
    assert got["Q2_answer"].isna().all() and not got["Q2_needs_expert"].any()


def test_calibrated_run_writes_the_same_intervals_as_on_one_machine(cluster, tmp_path):
    from gzmorph.evaluation.calibrate import calibrate
    from gzmorph.inference.predict import predict
    from crowd_simulation import simulate

    images = tmp_path / "images"
    make_images(images, 120)  # a calibration split needs at least 100 galaxies
    run = make_run(tmp_path / "run", 8)
    raw = predict(run, images, calibration="off", progress=False, workers=0)
    _, crowd, counts = simulate(len(raw), seed=3)
    labels = pd.DataFrame(crowd, columns=GZ2.columns)
    labels.insert(0, "GalaxyID", raw["GalaxyID"].to_numpy())
    labels = pd.concat([labels, pd.DataFrame(counts.astype(int), columns=[c + "_votes" for c in GZ2.columns])], axis=1)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    calibrate(run, raw, tmp_path / "labels.csv")
    got, _ = ray_equals_local(run, images, tmp_path, calibration="on")
    assert got["Class1.1_lo"].notna().all() and (got["Class1.1_lo"] <= got["Class1.1_hi"]).all()
    assert "uncertain_questions" in got.columns
