"""The decode cache: round trip, failures, resume after interruption, the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import gzmorph.data.cache as cache_mod
from gzmorph.data.cache import ImageCache, is_cache, prepare
from gzmorph.commands import prepare as prepare_cmd
from gzmorph.data.catalog import Catalog, CatalogError, open_catalog
from gzmorph.errors import OutputError
from gzmorph.data.source import open_source
from gzmorph.data.decode import decode
from gzmorph.tree import GZ2

SIZE = 20


def _write_images(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"{100 + i}.jpg"
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    """10 images, row 4 truncated; labels for Q1 only (the rest NaN), row 7 unlabelled."""
    paths = _write_images(tmp_path / "imgs", 10)
    data = Path(paths[4]).read_bytes()
    Path(paths[4]).write_bytes(data[: len(data) // 2])
    labels = np.full((10, GZ2.n_answers), np.nan, np.float32)
    labels[:, :3] = np.random.default_rng(1).dirichlet([1, 1, 1], size=10)
    labels[7] = np.nan
    return Catalog(np.arange(100, 110), np.asarray(paths, object), labels, GZ2, "GalaxyID", "test-catalog")


def test_round_trip(catalog: Catalog, tmp_path: Path) -> None:
    cache = prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    assert cache.images.shape == (10, SIZE, SIZE, 3) and cache.images.dtype == np.uint8
    assert cache.size == SIZE and cache.ids.tolist() == list(range(100, 110))
    assert cache.ok.tolist() == [i != 4 for i in range(10)]
    for i in cache.ok_index:
        np.testing.assert_array_equal(cache.images[i], decode(catalog.paths[i], size=SIZE))
    assert not cache.images[4].any()
    assert len(cache.errors) == 1 and cache.errors[0][0] == 104 and "truncated" in cache.errors[0][1]
    errors_csv = pd.read_csv(tmp_path / "c" / "errors.csv")
    assert errors_csv["id"].tolist() == [104] and errors_csv["path"].tolist() == [catalog.paths[4]]

    assert is_cache(tmp_path / "c") and not is_cache(tmp_path / "imgs")
    again = open_source(tmp_path / "c").catalog  # row-aligned with the cache, original paths
    np.testing.assert_array_equal(again.labels, catalog.labels)  # NaN where NaN
    assert again.ids.tolist() == catalog.ids.tolist() and again.paths.tolist() == catalog.paths.tolist()
    assert again.label_columns == ["Class1.1", "Class1.2", "Class1.3"] and again.tree == GZ2
    meta = json.loads((tmp_path / "c" / "cache.json").read_text())
    assert meta["complete"] and meta["n_ok"] == 9 and meta["n_failed"] == 1


def test_string_ids_and_plain_npy(catalog: Catalog, tmp_path: Path) -> None:
    catalog = Catalog(np.array([f"J{i}" for i in range(10)], object), catalog.paths, catalog.labels,
                      id_column="objid")
    cache = prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    assert cache.ids.tolist() == [f"J{i}" for i in range(10)] and cache.id_column == "objid"
    assert cache.errors[0][0] == "J4"
    raw = np.load(tmp_path / "c" / "images.npy", mmap_mode="r")  # readable without gzmorph
    np.testing.assert_array_equal(raw, cache.images)


def _interrupting(after: int):
    real = cache_mod.iter_decoded

    def stream(*args, **kwargs):
        for k, item in enumerate(real(*args, **kwargs)):
            if k == after:
                raise KeyboardInterrupt
            yield item

    return stream


def _counting(counter: list[int]):
    real = cache_mod.iter_decoded

    def stream(paths, *args, **kwargs):
        counter.append(len(paths))
        yield from real(paths, *args, **kwargs)

    return stream


def test_interrupted_prepare_resumes(catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = prepare(catalog, tmp_path / "ref", size=SIZE, workers=0, progress=False)
    monkeypatch.setattr(cache_mod, "iter_decoded", _interrupting(after=6))
    with pytest.raises(KeyboardInterrupt):
        prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False, flush_every=2)
    with pytest.raises(CatalogError, match="incomplete cache"):
        ImageCache.open(tmp_path / "c")
    state = np.load(tmp_path / "c" / "progress.npy")
    assert (state[:6] != 0).all() and (state[6:] == 0).all()  # progress saved on the way out

    counted: list[int] = []
    monkeypatch.setattr(cache_mod, "iter_decoded", _counting(counted))
    cache = prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    # the 4 pending rows, plus row 4 which had failed and is retried
    assert counted == [5]
    np.testing.assert_array_equal(cache.images, reference.images)
    assert cache.ok.tolist() == reference.ok.tolist() and cache.errors == reference.errors

    counted.clear()
    prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    assert counted == [1]  # a finished cache only retries its failure


def test_other_catalog_is_refused_unless_overwrite(catalog: Catalog, tmp_path: Path) -> None:
    prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    with pytest.raises(CatalogError, match="another catalog or size"):
        prepare(catalog, tmp_path / "c", size=SIZE + 1, workers=0, progress=False)
    cache = prepare(catalog.subset(np.arange(3)), tmp_path / "c", size=SIZE + 1, workers=0, progress=False,
                    overwrite=True)
    assert cache.images.shape == (3, SIZE + 1, SIZE + 1, 3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not written as a cache"):
        prepare(catalog, tmp_path / "other", size=SIZE, workers=0, progress=False)


def test_catalog_without_paths_is_refused(catalog: Catalog, tmp_path: Path) -> None:
    no_paths = Catalog(catalog.ids, np.full(10, None, object), catalog.labels)
    with pytest.raises(CatalogError, match="no image paths"):
        prepare(no_paths, tmp_path / "c", size=SIZE, workers=0, progress=False)


def test_prepare_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _write_images(tmp_path / "data" / "images_test_rev1", 3)
    parser = argparse.ArgumentParser()
    prepare_cmd.add_arguments(parser)
    args = parser.parse_args([str(tmp_path / "data"), "--split", "test", "--size", "16", "--workers", "0",
                              "--no-progress"])
    assert prepare_cmd.run(args) == 0
    out = tmp_path / "data_test_cache16"
    assert "decoded 3, failed 0" in capsys.readouterr().out
    assert ImageCache.open(out).images.shape == (3, 16, 16, 3)
    from gzmorph.cli import main

    assert main(["prepare", str(tmp_path / "missing"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err


_KILLED_RUN = """
import os, sys
import numpy as np
import gzmorph.data.cache as cache_mod
from gzmorph.data.catalog import open_catalog
real = cache_mod.iter_decoded
def dying(*args, **kwargs):
    for k, item in enumerate(real(*args, **kwargs)):
        if k == 7:
            os._exit(9)  # like SIGKILL: no finally, no flush on the way out
        yield item
cache_mod.iter_decoded = dying
cache_mod.prepare(open_catalog(sys.argv[1]), sys.argv[2], size=20, workers=0, progress=False, flush_every=3)
"""


@pytest.mark.slow
def test_killed_prepare_resumes_from_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess
    import sys

    _write_images(tmp_path / "imgs", 10)
    proc = subprocess.run([sys.executable, "-c", _KILLED_RUN, str(tmp_path / "imgs"), str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    state = np.load(tmp_path / "c" / "progress.npy")
    assert (state[:6] == 1).all() and (state[6:] == 0).all()  # the checkpoints after 3 and 6 images
    counted: list[int] = []
    monkeypatch.setattr(cache_mod, "iter_decoded", _counting(counted))
    catalog = open_catalog(tmp_path / "imgs")
    cache = prepare(catalog, tmp_path / "c", size=SIZE, workers=0, progress=False)
    assert counted == [4] and cache.ok.all()
    for i in range(10):
        np.testing.assert_array_equal(cache.images[i], decode(catalog.paths[i], size=SIZE))
