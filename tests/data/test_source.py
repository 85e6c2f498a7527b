"""gzmorph.data.source: files, folders, catalogs and caches read the same way, one item type."""

import pickle

import numpy as np
import pandas as pd
import pytest

from gzmorph.data.cache import prepare
from gzmorph.data.catalog import open_catalog
from gzmorph.data.decode import Item, decode
from gzmorph.data.source import CACHE_FAILED, open_source
from gzmorph.errors import CatalogError
from gzmorph.tree import Question, Tree

from factories import make_images

TREE = Tree("bars", (Question("S", "Smooth?", ("smooth", "featured"), ("smooth", "featured")),))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src") / "images"
    paths = make_images(folder, 6)
    paths[2].write_bytes(b"")
    return folder


def test_files_stream_items_of_their_catalog_rows(images):
    src = open_source(images)
    items = list(src.stream(np.array([4, 2, 0]), size=24, workers=0))
    assert all(isinstance(item, Item) for item in items)
    assert [item.row for item in items] == [4, 2, 0]
    assert items[1].image is None and items[1].reason == "empty file" and items[1].geometry is None
    np.testing.assert_array_equal(items[0].image, decode(src.catalog.paths[4], 24))
    loaded, failed, geometry = src.load(24, workers=0, progress=False)
    assert loaded.shape == (6, 24, 24, 3) and failed == [(2, "empty file")] and geometry is None
    np.testing.assert_array_equal(loaded[4], items[0].image)


def test_a_cache_gives_the_same_items_with_its_own_tree_and_travels_as_its_path(images, tmp_path):
    catalog = open_catalog(images, tree=TREE)
    prepare(catalog, tmp_path / "cache", size=24, workers=0, progress=False)
    with pytest.raises(CatalogError, match="holds labels of tree 'bars'"):
        open_source(tmp_path / "cache")  # the default tree is not the cache's
    src = open_source(tmp_path / "cache", tree=TREE)
    files = open_source(images, tree=TREE)
    for cached, decoded in zip(src.stream(), files.stream(size=24, workers=0)):
        assert cached.row == decoded.row
        if decoded.image is None:
            assert cached.image is None and cached.reason == "empty file"
        else:
            np.testing.assert_array_equal(cached.image, decoded.image)
    copy = pickle.loads(pickle.dumps(src))  # what a Ray actor receives
    assert copy.cache.tree.name == "bars" and isinstance(copy.cache.images, np.memmap)
    np.testing.assert_array_equal(copy.cache.images, src.cache.images)
    with pytest.raises(CatalogError, match="prepare it with --size 40"):
        list(src.stream(size=40))


def test_a_labels_only_catalog_cannot_stream_pixels(tmp_path):
    pd.DataFrame({"GalaxyID": [1, 2], "Class1.1": [0.5, 0.2]}).to_csv(tmp_path / "labels.csv", index=False)
    src = open_source(tmp_path / "labels.csv")
    with pytest.raises(CatalogError, match="no image path column"):
        list(src.stream(size=24))
    assert CACHE_FAILED == "failed when the cache was prepared"
