"""Science outputs: the user's columns carried through prediction, FITS/ECSV/VOTable/Parquet with units and provenance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("astropy")
from astropy.io import fits  # noqa: E402
from astropy.io.votable import parse as parse_votable  # noqa: E402
from astropy.table import Table  # noqa: E402

from gzmorph.cli import main  # noqa: E402
from gzmorph.errors import CatalogError, ConfigError, OutputError  # noqa: E402
from gzmorph.inference.science import column_docs, kept_columns, write_science  # noqa: E402
from gzmorph.inference.table import prediction_table  # noqa: E402
from gzmorph.tree import GZ2  # noqa: E402
from factories import make_images, make_run  # noqa: E402

META = {"GZMORPH": "0.1.0", "MODELS": "abc123", "TREE": "gz2", "TTA": "rot", "CALIB": "none"}


def small_table(ids=(3, 1, 2)):
    rng = np.random.default_rng(0)
    return prediction_table(np.array(ids), rng.random((len(ids), 37), dtype=np.float32), GZ2,
                            {q.name: 0.5 for q in GZ2.questions}, "id")


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".vot"])
def test_science_formats_hold_units_descriptions_and_provenance(tmp_path, suffix):
    table = small_table()
    table = table.add_column(1, "ra", pa.array([10.0, 20.0, 30.0]))
    docs = {**column_docs(GZ2), "ra": ("deg", "right ascension")}
    write_science(table, tmp_path / f"p{suffix}", docs, META)
    back = Table.read(tmp_path / f"p{suffix}")
    assert back.colnames == table.column_names
    assert back["id"].tolist() == [3, 1, 2] and np.allclose(back["Class1.1"], table["Class1.1"].to_numpy())
    assert str(back["ra"].unit) == "deg"
    if suffix == ".fits":
        header = fits.getheader(tmp_path / "p.fits", 1)
        assert {k: header[k] for k in META} == META
        assert header["TCOMM2"] == "right ascension"
    elif suffix == ".ecsv":
        assert {k: back.meta[k] for k in META} == META
        assert back["Class1.1"].description.startswith("Q1 'smooth': predicted vote fraction")
    else:
        infos = {i.name: i.value for i in parse_votable(tmp_path / "p.vot").resources[0].infos}
        assert {k: infos[k] for k in META} == META
        assert back["ra"].description == "right ascension"


def test_a_column_a_format_cannot_hold_is_named(tmp_path):
    table = small_table().append_column("shape", pa.array([{"a": 1}, {"a": 2}, {"a": 3}]))
    with pytest.raises(OutputError, match=r"fits cannot hold column 'shape' \(struct<a: int64>\)"):
        write_science(table, tmp_path / "p.fits", column_docs(GZ2), META)
    assert not (tmp_path / "p.fits").exists()


def test_kept_columns_join_by_id_and_rename_clashes(tmp_path):
    pd.DataFrame({"id": [1, 2, 3], "z": [0.1, 0.2, 0.3], "Class1.1": [0.5, 0.6, 0.7], "name": ["a", "b", "c"]}) \
        .to_csv(tmp_path / "cat.csv", index=False)
    kept = kept_columns(tmp_path / "cat.csv", "id", ["name", "z", "Class1.1"], False,
                        GZ2.columns)
    joined = kept.join(small_table())
    assert joined.column_names[:4] == ["id", "name", "z", "input_Class1.1"]
    assert joined["z"].to_pylist() == [0.3, 0.1, 0.2]  # matched by id, not by position
    with pytest.raises(CatalogError, match=r"no column\(s\) \['zz'\] to keep"):
        kept_columns(tmp_path / "cat.csv", "id", ["zz"], False, GZ2.columns)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ConfigError, match="need a catalogue"):
        kept_columns(tmp_path / "imgs", "id", ["z"], False, GZ2.columns)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    """A CSV catalogue of 6 images with the user's columns, in an order that is not the id order."""
    root = tmp_path_factory.mktemp("sci")
    paths = make_images(root / "images", 6)
    ids = [int(p.stem) for p in paths][::-1]
    pd.DataFrame({"objid": ids, "path": [f"images/{i}.jpg" for i in ids], "ra": np.linspace(10, 15, 6),
                  "dec": np.linspace(-5, 5, 6), "z": np.round(np.linspace(0.01, 0.06, 6), 3),
                  "survey": ["sdss"] * 6}).to_csv(root / "cat.csv", index=False)
    make_run(root / "run", 0)
    return root


def _predict(cat, out, *extra):
    return main(["predict", "--model", str(cat / "run"), "--catalog", str(cat / "cat.csv"), "--id-column", "objid",
                 "--out", str(out), "--no-progress", "--chunk-rows", "2", "--batch-size", "2", *extra])


@pytest.mark.parametrize("suffix", [".fits", ".ecsv", ".parquet", ".csv"])
def test_predict_keeps_the_users_columns_in_input_order(catalogue, tmp_path, suffix):
    out = tmp_path / f"morph{suffix}"
    assert _predict(catalogue, out, "--keep-columns", "ra,dec,z") == 0
    frame = Table.read(out).to_pandas() if suffix in (".fits", ".ecsv") else \
        (pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out))
    source = pd.read_csv(catalogue / "cat.csv")
    assert list(frame.columns[:4]) == ["objid", "ra", "dec", "z"]
    assert frame["objid"].tolist() == source["objid"].tolist()  # input order
    assert np.allclose(frame["z"], source["z"])
    if suffix == ".parquet":
        schema = pq.read_schema(out)
        meta = json.loads(schema.metadata[b"gzmorph"])
        assert meta["TREE"] == "gz2" and meta["TTA"] == "none" and len(meta["MODELS"]) == 40
        assert schema.field("Class1.1").metadata[b"description"].startswith(b"Q1 ")
    if suffix == ".fits":
        header = fits.getheader(out, 1)
        assert header["TREE"] == "gz2" and header["GZMORPH"] and header["PRESET"] == "custom"


def test_keep_all_and_resume_of_a_science_output(catalogue, tmp_path):
    out = tmp_path / "morph.ecsv"
    assert _predict(catalogue, out, "--keep-all") == 0
    first = Table.read(out)
    # "path" is a column of the error rows too: the kept one is renamed.
    assert first.colnames[:6] == ["objid", "input_path", "ra", "dec", "z", "survey"]
    assert _predict(catalogue, out, "--keep-all", "--resume") == 0  # a finished job is kept
    assert Table.read(out).colnames == first.colnames
    assert _predict(catalogue, out, "--keep-columns", "z", "--resume") == 2  # other columns: refused


def test_an_input_with_missing_kept_column_is_one_line(catalogue, tmp_path, capsys):
    assert _predict(catalogue, tmp_path / "m.fits", "--keep-columns", "ra,redshift") == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no column(s) ['redshift'] to keep" in err


def test_the_date_is_the_time_of_writing_unless_fixed(monkeypatch):
    from gzmorph.inference.science import written_date

    assert written_date() == "2026-01-01T00:00:00Z"  # conftest fixes SOURCE_DATE_EPOCH
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    import time

    assert written_date()[:10] == time.strftime("%Y-%m-%d", time.gmtime())


@pytest.mark.slow
def test_a_killed_science_output_resumes_to_the_same_bytes(catalogue, tmp_path):
    from factories import run_killed

    whole, killed = tmp_path / "whole.fits", tmp_path / "killed.fits"
    assert _predict(catalogue, whole, "--keep-columns", "ra,z") == 0
    argv = ["predict", "--model", str(catalogue / "run"), "--catalog", str(catalogue / "cat.csv"), "--id-column",
            "objid", "--out", str(killed), "--no-progress", "--chunk-rows", "2", "--batch-size", "2",
            "--keep-columns", "ra,z"]
    assert run_killed("gzmorph.inference.parts:PartStore.write", 2, argv) == -9
    assert not killed.exists() and len(list((tmp_path / "killed.fits.parts").glob("part-*"))) == 2
    assert _predict(catalogue, killed, "--keep-columns", "ra,z", "--resume") == 0
    assert killed.read_bytes() == whole.read_bytes()


@pytest.mark.slow
def test_ray_parts_carry_the_kept_columns_and_provenance(catalogue, tmp_path):
    ray = pytest.importorskip("ray")
    from gzmorph.inference.ray import predict_ray

    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        predict_ray(catalogue / "run", catalogue / "cat.csv", tmp_path / "ray.parquet", id_column="objid",
                    chunk_rows=2, batch_size=2, actors=1, gpus_per_actor=0, cpus_per_actor=1, progress=False,
                    keep_columns=["z", "ra"])
    finally:
        if started:
            ray.shutdown()
    assert _predict(catalogue, tmp_path / "one.parquet", "--keep-columns", "z,ra") == 0
    parts, one = pd.read_parquet(tmp_path / "ray.parquet"), pd.read_parquet(tmp_path / "one.parquet")
    assert list(parts.columns[:3]) == ["objid", "z", "ra"]
    pd.testing.assert_frame_equal(parts, one, check_exact=False, atol=1e-5)
    first = sorted((tmp_path / "ray.parquet").glob("part-*.parquet"))[0]
    assert json.loads(pq.read_schema(first).metadata[b"gzmorph"])["TREE"] == "gz2"


def test_an_ecsv_catalogue_is_predicted_with_its_units_kept(catalogue, tmp_path):
    table = Table.read(catalogue / "cat.csv", format="ascii.csv")
    table["ra"].unit, table["z"].description = "deg", "redshift"
    table.write(catalogue / "cat.ecsv", overwrite=True)
    out = tmp_path / "m.ecsv"
    assert main(["predict", "--model", str(catalogue / "run"), "--catalog", str(catalogue / "cat.ecsv"),
                 "--id-column", "objid", "--out", str(out), "--no-progress", "--keep-columns", "ra,z"]) == 0
    back = Table.read(out)
    assert back["objid"].tolist() == table["objid"].tolist()
    assert str(back["ra"].unit) == "deg" and back["z"].description == "redshift"
