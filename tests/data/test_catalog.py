"""Catalogs: Kaggle layout, catalog files, image folders, bad input, splits."""

from __future__ import annotations

import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gzmorph.data.catalog import Catalog, CatalogError, LabelWarning, open_catalog, train_val_split
from gzmorph.tree import GZ2, Tree

Q1 = ["Class1.1", "Class1.2", "Class1.3"]
Q2 = ["Class2.1", "Class2.2"]


def _labels(n: int, seed: int = 0) -> pd.DataFrame:
    """Consistent Q1/Q2 labels (Q2 sums to Class1.2), a 5-of-37-column catalog."""
    rng = np.random.default_rng(seed)
    q1 = rng.dirichlet([2, 2, 0.5], size=n)
    split = rng.uniform(size=n)
    frame = pd.DataFrame(q1, columns=Q1)
    frame["Class2.1"] = q1[:, 1] * split
    frame["Class2.2"] = q1[:, 1] * (1 - split)
    return frame.round(6).assign(**{"Class2.2": lambda f: (f["Class1.2"] - f["Class2.1"]).round(6)})


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # catalogs never decode; existence is what matters
    return path


def _kaggle(root: Path, ids: list[int], extra_images: list[int] = (), test_ids: list[int] = ()) -> Path:
    for i in [*ids, *extra_images]:
        _touch(root / "images_training_rev1" / f"{i}.jpg")
    for i in test_ids:
        _touch(root / "images_test_rev1" / f"{i}.jpg")
    table = _labels(len(ids))
    table.insert(0, "GalaxyID", ids)
    table.to_csv(root / "training_solutions_rev1.csv", index=False)
    return root


def _catalog_file(tmp_path: Path, table: pd.DataFrame, name: str = "cat.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        table.to_csv(path, index=False)
    else:
        table.to_parquet(path, index=False)
    return path


def _table(tmp_path: Path, n: int = 4) -> pd.DataFrame:
    table = _labels(n)
    table.insert(0, "GalaxyID", [10 + i for i in range(n)])
    table.insert(1, "path", [f"img/{10 + i}.jpg" for i in range(n)])
    for p in table["path"]:
        _touch(tmp_path / p)
    return table


def test_kaggle_layout_partial_columns_are_nan(tmp_path: Path) -> None:
    root = _kaggle(tmp_path / "k", [300, 100, 200], test_ids=[7, 5])
    cat = open_catalog(root)
    assert cat.ids.dtype == np.int64 and cat.ids.tolist() == [300, 100, 200]  # CSV order
    assert cat.labels.shape == (3, 37) and cat.labels.dtype == np.float32
    assert cat.label_columns == Q1 + Q2 and cat.has_labels
    assert np.isnan(cat.labels[:, 5:]).all()  # missing columns are NaN, never zero
    assert Path(cat.paths[1]) == (root / "images_training_rev1" / "100.jpg").resolve()
    table = pd.read_csv(root / "training_solutions_rev1.csv")
    np.testing.assert_allclose(cat.labels[:, :5], table[Q1 + Q2].to_numpy(), atol=1e-7)
    test = open_catalog(root, split="test")
    assert test.ids.tolist() == [5, 7] and not test.has_labels and len(test.label_columns) == 0


def test_kaggle_image_without_label_is_left_out_with_warning(tmp_path: Path) -> None:
    root = _kaggle(tmp_path / "k", [1, 2], extra_images=[3])
    with pytest.warns(LabelWarning, match="1 image.*no label row.*3"):
        cat = open_catalog(root)
    assert cat.ids.tolist() == [1, 2]


def test_kaggle_label_row_without_image_names_line(tmp_path: Path) -> None:
    root = _kaggle(tmp_path / "k", [1, 2, 3])
    (root / "images_training_rev1" / "2.jpg").unlink()
    with pytest.raises(CatalogError, match=r"training_solutions_rev1\.csv: line 3: no image for id 2"):
        open_catalog(root)


@pytest.mark.parametrize("name", ["cat.csv", "cat.parquet"])
def test_catalog_file_resolves_relative_paths(tmp_path: Path, name: str) -> None:
    table = _table(tmp_path)
    table["ra"] = 150.0  # unrelated columns are ignored
    cat = open_catalog(_catalog_file(tmp_path, table, name))
    assert cat.ids.tolist() == [10, 11, 12, 13]
    assert cat.paths[0] == str((tmp_path / "img" / "10.jpg").resolve())
    assert cat.label_columns == Q1 + Q2


def test_catalog_without_path_column_is_labels_only(tmp_path: Path) -> None:
    table = _table(tmp_path).drop(columns="path")
    cat = open_catalog(_catalog_file(tmp_path, table))
    assert all(p is None for p in cat.paths) and cat.has_labels


def test_string_ids_and_custom_id_column(tmp_path: Path) -> None:
    table = _table(tmp_path, 3).rename(columns={"GalaxyID": "objid"})
    table["objid"] = ["J1", "007", "J3"]
    cat = open_catalog(_catalog_file(tmp_path, table), id_column="objid")
    assert cat.ids.dtype == object and cat.ids.tolist() == ["J1", "007", "J3"] and cat.id_column == "objid"


def test_missing_values_are_nan(tmp_path: Path) -> None:
    table = _table(tmp_path, 3)
    table.loc[1, "Class2.1"] = np.nan
    cat = open_catalog(_catalog_file(tmp_path, table))
    assert np.isnan(cat.labels[1, 3]) and not np.isnan(cat.labels[0, 3])


def test_row_without_image_names_file_and_line(tmp_path: Path) -> None:
    table = _table(tmp_path)
    (tmp_path / "img" / "12.jpg").unlink()
    path = _catalog_file(tmp_path, table)
    with pytest.raises(CatalogError, match=r"cat\.csv: line 4: .*12\.jpg does not exist"):
        open_catalog(path)


def test_duplicate_ids_name_lines(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table.loc[3, "GalaxyID"] = 11
    with pytest.raises(CatalogError, match=r"duplicate ids.*line 3: id 11.*line 5: id 11"):
        open_catalog(_catalog_file(tmp_path, table))


def test_missing_header_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    _table(tmp_path).to_csv(path, index=False, header=False)
    with pytest.raises(CatalogError, match="no id column 'GalaxyID'.*header row missing"):
        open_catalog(path)


def test_headerless_csv_with_repeated_values_says_header_missing(tmp_path: Path) -> None:
    # Real rows repeat values (0.0 answers): the first line must not read as a repeated header.
    path = tmp_path / "noheader.csv"
    path.write_text("100,0.0,0.0,1.0\n101,0.5,0.5,0.0\n")
    with pytest.raises(CatalogError, match=r"noheader\.csv.*no id column 'GalaxyID'.*header row missing"):
        open_catalog(path)


@pytest.mark.parametrize("bad", ["class1.1", "CLASS1.1", "Class 1.1"])
def test_near_miss_answer_column_names(tmp_path: Path, bad: str) -> None:
    table = _table(tmp_path).rename(columns={"Class1.1": bad})
    with pytest.raises(CatalogError, match=rf"cat\.csv: .*'{re.escape(bad)}'.*did you mean 'Class1.1'"):
        open_catalog(_catalog_file(tmp_path, table))


def test_answer_columns_outside_the_tree_are_ignored(tmp_path: Path) -> None:
    table = _table(tmp_path).assign(**{"Class1.4": 0.3, "notes": "x"})
    cat = open_catalog(_catalog_file(tmp_path, table))
    assert cat.label_columns == Q1 + Q2


def test_custom_subset_tree_reads_full_kaggle_csv(tmp_path: Path) -> None:
    # A tree of GZ2's Q1 and Q6 only; the Kaggle CSV has all 37 answer columns.
    q1, q6 = (next(q for q in GZ2.questions if q.name == name) for name in ("Q1", "Q6"))
    tree = Tree("q1q6", (replace(q1, parent=None), replace(q6, parent=None)))
    rng = np.random.default_rng(1)
    full = pd.DataFrame(rng.uniform(size=(3, GZ2.n_answers)).round(4), columns=GZ2.columns)
    full[list(q1.columns)] = [[0.5, 0.5, 0.0], [0.2, 0.8, 0.0], [1.0, 0.0, 0.0]]
    full[list(q6.columns)] = [[0.0, 1.0], [0.25, 0.75], [1.0, 0.0]]
    full.insert(0, "GalaxyID", [1, 2, 3])
    root = tmp_path / "k"
    for i in (1, 2, 3):
        _touch(root / "images_training_rev1" / f"{i}.jpg")
    full.to_csv(root / "training_solutions_rev1.csv", index=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consistent Q1/Q6 sums: no warning either
        cat = open_catalog(root, tree=tree)
    assert cat.label_columns == [*q1.columns, *q6.columns] and cat.labels.shape == (3, 5)
    np.testing.assert_allclose(cat.labels, full[[*q1.columns, *q6.columns]].to_numpy(), atol=1e-7)


def test_repeated_header_column(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("GalaxyID,Class1.1,Class1.1\n1,0.5,0.5\n")
    with pytest.raises(CatalogError, match="repeats column.*Class1.1"):
        open_catalog(path)


def test_values_outside_unit_interval(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table.loc[2, "Class1.3"] = 1.7
    with pytest.raises(CatalogError, match=r"outside \[0, 1\] in column 'Class1.3'.*line 4: 1.7"):
        open_catalog(_catalog_file(tmp_path, table))


def test_non_numeric_value(tmp_path: Path) -> None:
    table = _table(tmp_path).astype({"Class1.1": object})
    table.loc[0, "Class1.1"] = "high"
    with pytest.raises(CatalogError, match=r"non-numeric.*'Class1.1'.*line 2: 'high'"):
        open_catalog(_catalog_file(tmp_path, table))


def test_sum_violation_warns_with_report(tmp_path: Path) -> None:
    table = _table(tmp_path)
    table.loc[1, "Class2.1"] = 0.0
    table.loc[1, "Class2.2"] = 0.0  # Q2 must sum to Class1.2 > 0
    with pytest.warns(LabelWarning, match=r"(?s)1 label sum.*line 3.*Q2"):
        cat = open_catalog(_catalog_file(tmp_path, table))
    assert len(cat) == 4  # still usable


def test_image_folder(tmp_path: Path) -> None:
    for name in ["b.png", "a.JPG", "c.jpeg", "notes.txt"]:
        _touch(tmp_path / "imgs" / name)
    cat = open_catalog(tmp_path / "imgs")
    assert cat.ids.tolist() == ["a", "b", "c"] and not cat.has_labels
    assert cat.paths[0].endswith("a.JPG")
    _touch(tmp_path / "imgs" / "a.png")
    with pytest.raises(CatalogError, match="duplicate ids.*'a'"):
        open_catalog(tmp_path / "imgs")


def test_empty_folder_and_missing_spec(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CatalogError, match="no images"):
        open_catalog(tmp_path / "empty")
    with pytest.raises(CatalogError, match="no such file"):
        open_catalog(tmp_path / "absent.csv")


def test_require_labels(tmp_path: Path) -> None:
    _touch(tmp_path / "imgs" / "1.jpg")
    with pytest.raises(CatalogError, match="no labels"):
        open_catalog(tmp_path / "imgs", require_labels=True)
    table = _table(tmp_path)
    table.loc[2, Q1 + Q2] = np.nan  # an image without any label
    path = _catalog_file(tmp_path, table)
    assert len(open_catalog(path)) == 4  # fine for prediction
    with pytest.raises(CatalogError, match=r"without any label.*line 4: id 12"):
        open_catalog(path, require_labels=True)


def _catalog(ids: list) -> Catalog:
    n = len(ids)
    return Catalog(np.asarray(ids), np.full(n, None, object), np.zeros((n, GZ2.n_answers), np.float32))


def test_default_split_holds_out_last_ids() -> None:
    ids = np.random.default_rng(0).permutation(np.arange(100, 120))
    train, val = train_val_split(_catalog(list(ids)), val_fraction=0.1)
    assert val.ids.tolist() == [118, 119] and train.ids.tolist() == list(range(100, 118))


def test_seeded_split_is_reproducible_and_disjoint() -> None:
    cat = _catalog(list(range(50)))
    a_train, a_val = train_val_split(cat, 0.2, seed=1)
    b_train, b_val = train_val_split(cat, 0.2, seed=1)
    _, c_val = train_val_split(cat, 0.2, seed=2)
    assert a_val.ids.tolist() == b_val.ids.tolist() and len(a_val) == 10
    assert a_val.ids.tolist() != c_val.ids.tolist()
    assert sorted([*a_train.ids, *a_val.ids]) == list(range(50))
    assert a_val.ids.tolist() == sorted(a_val.ids.tolist())


def test_split_and_catalog_validation() -> None:
    with pytest.raises(ValueError):
        train_val_split(_catalog([1, 2]), val_fraction=1.0)
    with pytest.raises(ValueError):
        train_val_split(_catalog([1]))
    assert [len(c) for c in train_val_split(_catalog([1, 2, 3]), 0.01)] == [2, 1]
    with pytest.raises(ValueError, match="labels must have shape"):
        Catalog(np.arange(2), np.full(2, None, object), np.zeros((2, 5)))


SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "gz2-kaggle-5k"


@pytest.mark.skipif(not SHARED.is_dir(), reason="real data (../shared/data) not available")
def test_real_partial_kaggle_catalog_loads_as_is() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # its sums are consistent: no LabelWarning
        cat = open_catalog(SHARED)
    assert len(cat) == 5000 and len(cat.label_columns) == 17
    assert np.isnan(cat.labels[:, ~cat.column_mask]).all()
    train, val = train_val_split(cat)
    assert (len(train), len(val)) == (4500, 500) and train.ids.max() < val.ids.min()
