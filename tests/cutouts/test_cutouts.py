"""``gzmorph cutouts`` against the local emulator of the services (127.0.0.1 only, never the internet)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("astropy")
from astropy.io import fits  # noqa: E402
from PIL import Image  # noqa: E402

from gzmorph.cli import main  # noqa: E402
from gzmorph.cutouts.fetch import HostLimiter  # noqa: E402
from gzmorph.cutouts.job import CutoutConfig, fetch_cutouts  # noqa: E402
from gzmorph.cutouts.services import SERVICES, load_services  # noqa: E402
from gzmorph.errors import CatalogError, ConfigError, OutputError  # noqa: E402
from gzmorph.mock.cutout_server import CutoutServer, Faults  # noqa: E402
from factories import run_killed  # noqa: E402

SIZE = 32


def sky_csv(path, n=12, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"id": np.arange(100, 100 + n), "ra": rng.uniform(0, 360, n),
                          "dec": rng.uniform(-60, 60, n), "z": rng.uniform(0, 0.2, n).round(4)})
    frame.to_csv(path, index=False)
    return frame


def cfg(tmp_path, **kw):
    base = dict(size=SIZE, cache_dir=str(tmp_path / "cache"), timeout=0.6, backoff=0.01, attempts=4,
                rate=0, concurrency=4, progress=False)
    return CutoutConfig(**{**base, **kw})


def check_zero_lost(out, n):
    catalog = pd.read_parquet(out / "catalog.parquet")
    errors = pd.read_csv(out / "errors.csv")
    assert len(catalog) + len(errors) == n
    assert sorted(catalog["id"].tolist() + errors["id"].tolist()) == list(range(100, 100 + n))
    return catalog, errors


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_is_fetched_and_records_its_scale_and_bands(tmp_path, name):
    frame = sky_csv(tmp_path / "sky.csv", n=3)
    with CutoutServer() as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, service=name),
                          service_url=server.url)
    service = SERVICES[name]
    assert (s.n_ok, s.n_errors, s.n_fetched) == (3, 0, 3)
    catalog, _ = check_zero_lost(tmp_path / "out", 3)
    # The user's columns, in input order, then the cutout's own.
    assert list(catalog.columns[:4]) == ["id", "ra", "dec", "z"]
    assert np.allclose(catalog["z"], frame["z"])
    assert (catalog["cutout_pixscale"] == service.pixscale).all() and (catalog["cutout_bands"] == service.bands).all()
    assert (catalog["cutout_service"] == name).all()
    first = tmp_path / "out" / catalog["path"][0]
    assert first.name == f"100{service.suffix}"
    if service.format == "fits":
        with fits.open(first) as hdus:
            assert hdus[0].data.shape[-2:] == (SIZE, SIZE)
            assert abs(abs(hdus[0].header["CD2_2"]) * 3600 - service.pixscale) < 1e-6
    else:
        assert Image.open(first).size == (SIZE, SIZE)
    with sqlite3.connect(tmp_path / "cache" / "index.sqlite") as db:
        rows = db.execute("SELECT service, pixscale, bands, size FROM cutouts").fetchall()
    assert sorted(set(rows)) == [(name, service.pixscale, service.bands, SIZE)]


def test_transient_failures_are_retried_until_every_row_is_fetched(tmp_path):
    sky_csv(tmp_path / "sky.csv", n=24)
    faults = Faults(rate=0.6, times=1, slow_seconds=1.5, seed=1)
    with CutoutServer(faults) as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path), service_url=server.url)
        sent = dict(server.faults_sent)
    assert (s.n_ok, s.n_errors) == (24, 0)
    assert set(sent) == {"429", "500", "slow", "truncated", "short", "html"}, sent
    check_zero_lost(tmp_path / "out", 24)
    for path in (tmp_path / "out" / "images").iterdir():  # every kept file is a whole FITS cutout
        with fits.open(path) as hdus:
            assert hdus[0].data.shape == (3, SIZE, SIZE)


@pytest.mark.parametrize("kind, reason", [
    ("html", "text/html instead of FITS"), ("500", "HTTP 500"), ("429", "HTTP 429"), ("slow", "timeout"),
    ("truncated", "connection error"), ("short", "truncated FITS body"), ("404", "HTTP 404")])
def test_permanent_failures_become_error_rows_naming_the_reason(tmp_path, kind, reason):
    sky_csv(tmp_path / "sky.csv", n=6)
    faults = Faults(permanent=0.5, kinds=(kind,), slow_seconds=1.0, seed=2)
    with CutoutServer(faults) as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, attempts=2, timeout=0.4),
                          service_url=server.url)
    catalog, errors = check_zero_lost(tmp_path / "out", 6)
    assert s.n_errors == len(errors) > 0 and s.n_ok == len(catalog) > 0
    assert all(reason in r for r in errors["reason"]), errors["reason"].tolist()
    # 404 is final at once; the others were retried.
    assert (errors["attempts"] == (1 if kind == "404" else 2)).all()


def test_fits_without_wcs_is_an_error_row(tmp_path):
    sky_csv(tmp_path / "sky.csv", n=2)
    with CutoutServer(Faults(wcs=False)) as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path), service_url=server.url)
    _, errors = check_zero_lost(tmp_path / "out", 2)
    assert s.n_ok == 0 and (errors["reason"] == "FITS without a celestial WCS: its pixel scale is unknown").all()
    # A JPEG service has no WCS to check.
    with CutoutServer(Faults(wcs=False)) as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out2", cfg(tmp_path, service="sdss"),
                          service_url=server.url)
    assert s.n_ok == 2


def test_bad_positions_are_error_rows_naming_the_row(tmp_path):
    pd.DataFrame({"id": [100, 101, 102, 103, 104, 105], "ra": [10.0, 360.0, -1.0, 20.0, None, "abc"],
                  "dec": [5.0, 0.0, 0.0, 90.5, 1.0, 2.0]}).to_csv(tmp_path / "sky.csv", index=False)
    with CutoutServer() as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path), service_url=server.url)
        assert sum(server.requests.values()) == 1  # bad rows are never sent
    _, errors = check_zero_lost(tmp_path / "out", 6)
    assert s.n_ok == 1
    assert errors.set_index("id")["reason"].to_dict() == {
        101: "RA 360 outside [0, 360)", 102: "RA -1 outside [0, 360)", 103: "Dec 90.5 outside [-90, 90]",
        104: "missing coordinates", 105: "RA 'abc' is not a number"}


def test_catalogue_errors_are_one_line_and_name_the_rows(tmp_path, capsys):
    pd.DataFrame({"id": [1, 2, 1], "ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.0, 0.0]}).to_csv(tmp_path / "dup.csv",
                                                                                        index=False)
    with pytest.raises(CatalogError, match=r"duplicate ids.*line 2: id 1; line 4: id 1"):
        fetch_cutouts(tmp_path / "dup.csv", tmp_path / "o1", cfg(tmp_path))
    pd.DataFrame({"id": ["a", "../b"], "ra": [1.0, 2.0], "dec": [0.0, 0.0]}).to_csv(tmp_path / "unsafe.csv",
                                                                                   index=False)
    with pytest.raises(CatalogError, match=r"cannot name a file.*line 3: '\.\./b'"):
        fetch_cutouts(tmp_path / "unsafe.csv", tmp_path / "o2", cfg(tmp_path))
    with pytest.raises(CatalogError, match="no RA column 'RAJ2000'"):
        fetch_cutouts(tmp_path / "dup.csv", tmp_path / "o3", cfg(tmp_path, ra_column="RAJ2000"))
    assert main(["cutouts", str(tmp_path / "dup.csv"), "--out", str(tmp_path / "o4")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "duplicate ids" in err


def test_an_output_never_overwrites_the_input(tmp_path):
    sky_csv(tmp_path / "sky.csv", n=2)
    with pytest.raises(OutputError, match="holds the input"):
        fetch_cutouts(tmp_path / "sky.csv", tmp_path, cfg(tmp_path))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not empty"):
        fetch_cutouts(tmp_path / "sky.csv", tmp_path / "other", cfg(tmp_path))
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_astronomy_formats_are_read_with_their_units(tmp_path):
    from astropy.table import Table

    t = Table({"objid": ["g1", "g2"], "RA": [1.0, 2.0], "DEC": [0.5, -0.5], "z": [0.1, 0.2]})
    t["RA"].unit = "hourangle"  # 15 degrees each
    t["DEC"].unit = "deg"
    t["z"].description = "redshift"
    for suffix, fmt in ((".ecsv", "ascii.ecsv"), (".vot", "votable")):
        t.write(tmp_path / f"sky{suffix}", format=fmt)
    in_degrees = t.copy()  # FITS cannot hold hour angles
    in_degrees["RA"] = in_degrees["RA"].to("deg")
    in_degrees.write(tmp_path / "sky.fits", format="fits")
    t.to_pandas().to_parquet(tmp_path / "sky.parquet")
    with CutoutServer() as server:
        for suffix in (".fits", ".ecsv", ".vot", ".parquet"):
            out = tmp_path / f"out{suffix}"
            s = fetch_cutouts(tmp_path / f"sky{suffix}", out, cfg(tmp_path, id_column="objid"),
                              service_url=server.url)
            assert s.n_ok == 2
            catalog = pd.read_parquet(out / "catalog.parquet")
            assert catalog["objid"].tolist() == ["g1", "g2"] and sorted(p.name for p in (out / "images").iterdir()) \
                == ["g1.fits", "g2.fits"]
    # Hour angles became degrees: the ECSV/VOTable jobs asked for RA 15 and 30, Parquet (no units) 1 and 2.
    with sqlite3.connect(tmp_path / "cache" / "index.sqlite") as db:
        assert sorted(r[0] for r in db.execute("SELECT ra FROM cutouts")) == pytest.approx([1.0, 2.0, 15.0, 30.0])


def test_the_cache_answers_a_second_job_without_requests(tmp_path):
    sky_csv(tmp_path / "sky.csv", n=5)
    with CutoutServer() as server:
        fetch_cutouts(tmp_path / "sky.csv", tmp_path / "a", cfg(tmp_path), service_url=server.url)
        before = sum(server.requests.values())
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "b", cfg(tmp_path), service_url=server.url)
        assert sum(server.requests.values()) == before and (s.n_cached, s.n_fetched) == (5, 0)
        # Another pixel scale is another cutout.
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "c", cfg(tmp_path, pixscale=0.5), service_url=server.url)
        assert s.n_fetched == 5 and sum(server.requests.values()) == before + 5
    assert (tmp_path / "a" / "images" / "100.fits").read_bytes() == (tmp_path / "b" / "images" / "100.fits").read_bytes()


@pytest.mark.slow
def test_a_killed_job_resumes_and_loses_no_row(tmp_path):
    n = 30
    sky_csv(tmp_path / "sky.csv", n=n)
    faults = Faults(rate=0.2, permanent=0.1, kinds=("500", "html", "429"), seed=3)
    argv = ["cutouts", str(tmp_path / "sky.csv"), "--out", str(tmp_path / "out"), "--cache-dir",
            str(tmp_path / "cache"), "--size", str(SIZE), "--rate", "0", "--backoff", "0.01", "--attempts", "3",
            "--concurrency", "2", "--no-progress"]
    with CutoutServer(faults) as server:
        argv += ["--service-url", server.url]
        assert run_killed("gzmorph.cutouts.folder:CutoutFolder.record_ok", 10, argv) == -9
        with sqlite3.connect(tmp_path / "out" / "journal.sqlite") as db:
            journalled = db.execute("SELECT COUNT(*) FROM rows").fetchone()[0]
        assert 10 <= journalled < n and not (tmp_path / "out" / "catalog.parquet").exists()
        with pytest.raises(OutputError, match="--resume"):
            fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path), service_url=server.url)
        with pytest.raises(OutputError, match="other settings \\(size"):
            fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, size=48), service_url=server.url,
                          resume=True)
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, attempts=3, concurrency=2),
                          service_url=server.url, resume=True)
    assert s.n_resumed == journalled and s.n_ok + s.n_errors == n
    catalog, errors = check_zero_lost(tmp_path / "out", n)
    assert len(errors) == s.n_errors > 0
    assert catalog["id"].is_monotonic_increasing  # input order
    assert all((tmp_path / "out" / p).is_file() for p in catalog["path"])


def test_the_per_host_rate_limit_spaces_requests():
    async def starts(rate, n, hosts):
        limiter, times = HostLimiter(rate), []

        async def one(host):
            await limiter.wait(host)
            times.append((host, time.monotonic()))

        await asyncio.gather(*(one(hosts[i % len(hosts)]) for i in range(n)))
        return times

    times = asyncio.run(starts(20.0, 6, ["a"]))
    gaps = np.diff(sorted(t for _, t in times))
    assert (gaps > 0.045).all()
    # Hosts are limited separately: two hosts take the time of one.
    t0 = time.monotonic()
    asyncio.run(starts(20.0, 12, ["a", "b"]))
    assert time.monotonic() - t0 < 0.45


def test_services_are_data(tmp_path):
    (tmp_path / "services.yaml").write_text(
        "my-legacy:\n  like: legacy-fits\n  pixscale: 0.5\n  params: {layer: ls-dr9}\n"
        "other:\n  url: '{base}/viewer/jpeg-cutout?ra={ra}&dec={dec}&size={size}'\n  base: https://example.org\n"
        "  pixscale: 1.0\n  bands: gri\n  format: jpeg\n")
    services = load_services(tmp_path / "services.yaml")
    assert services["my-legacy"].pixscale == 0.5
    assert "layer=ls-dr9" in services["my-legacy"].url_for(1, 2, 64, 0.5, "grz")
    assert services["other"].url_for(1, 2, 64, 1.0, "gri") == \
        "https://example.org/viewer/jpeg-cutout?ra=1.0000000&dec=2.0000000&size=64"
    (tmp_path / "bad.yaml").write_text("x:\n  url: '{base}/c?ra={ra}&dec={dec}&w={width}'\n  base: http://h\n"
                                       "  pixscale: 1\n  bands: r\n  format: fits\n")
    with pytest.raises(ConfigError, match=r"names \['width'\]"):
        load_services(tmp_path / "bad.yaml")
    sky_csv(tmp_path / "sky.csv", n=2)
    with CutoutServer() as server:
        s = fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, service="my-legacy"),
                          services=services, service_url=server.url)
    assert s.n_ok == 2
    manifest = json.loads((tmp_path / "out" / "cutouts.json").read_text())
    assert manifest["pixscale"] == 0.5 and manifest["params"] == {"layer": "ls-dr9"}


def test_truncated_and_wrong_bodies_are_refused():
    from gzmorph.cutouts.validate import BadBody, check_body
    from gzmorph.mock.cutout_server import _fits_bytes, _jpeg_bytes

    good = _fits_bytes(10.0, 1.0, SIZE, 0.262, "grz", True, True)
    assert check_body(good, "application/fits", "fits", SIZE, 0.262).shape == (3, SIZE, SIZE)
    cases = [(good[:-2880], "fits", "unreadable FITS|truncated"), (good[:1000], "fits", "truncated"),
             (b"<html>oops</html>", "fits", "instead of FITS"), (good, "jpeg", "instead of JPEG")]
    jpeg = _jpeg_bytes(10.0, 1.0, SIZE)
    cases += [(jpeg[: len(jpeg) // 2], "jpeg", "broken JPEG")]
    for body, fmt, match in cases:
        with pytest.raises(BadBody, match=match):
            check_body(body, "x", fmt, SIZE, 0.262)
    with pytest.raises(BadBody, match="pixel scale 0.262 arcsec/px, 0.5 requested") as info:
        check_body(good, "application/fits", "fits", SIZE, 0.5)
    assert not info.value.retry
    with pytest.raises(BadBody, match="48x48 requested"):
        check_body(jpeg, "image/jpeg", "jpeg", 48, 0.262)


def test_healpix_column_of_the_fetched_rows(tmp_path):
    pytest.importorskip("astropy_healpix")
    from astropy_healpix.healpy import ang2pix

    frame = sky_csv(tmp_path / "sky.csv", n=4)
    with CutoutServer() as server:
        fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, healpix_order=8), service_url=server.url)
    catalog = pd.read_parquet(tmp_path / "out" / "catalog.parquet")
    expected = ang2pix(2**8, frame["ra"].to_numpy(), frame["dec"].to_numpy(), nest=True, lonlat=True)
    assert catalog["healpix"].tolist() == expected.tolist()
    with pytest.raises(ValueError, match="healpix_order"):
        CutoutConfig(healpix_order=30)


def test_predict_never_writes_over_the_catalogue_of_a_cutouts_folder(tmp_path, capsys):
    from factories import make_run

    sky_csv(tmp_path / "sky.csv", n=2)
    with CutoutServer() as server:
        fetch_cutouts(tmp_path / "sky.csv", tmp_path / "out", cfg(tmp_path, service="sdss"), service_url=server.url)
    before = (tmp_path / "out" / "catalog.parquet").read_bytes()
    make_run(tmp_path / "run", 0)
    assert main(["predict", "--model", str(tmp_path / "run"), "--catalog", str(tmp_path / "out"), "--out",
                 str(tmp_path / "out" / "catalog.parquet"), "--no-progress"]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert (tmp_path / "out" / "catalog.parquet").read_bytes() == before
