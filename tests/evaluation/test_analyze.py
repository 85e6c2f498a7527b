"""The Section 9 figures: files written and linked, contrast normalisation, unit ranking, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzmorph.evaluation.analyze import AnalyzeConfig, _unit_table, analyze, plot_filters
from gzmorph.cli import main

from factories import make_run  # noqa: E402

SIZE = 40
N = 12
FAST = dict(workers=0, progress=False, device="cpu")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory (the layout `train` writes) holding an untrained tiny network."""
    return make_run(tmp_path_factory.mktemp("run"), seed=0, image_size=SIZE, step=7)


def blobs(n: int, seed: int = 0) -> np.ndarray:
    """uint8 ``(n, SIZE, SIZE, 3)`` noisy images with a bright blob of random shape."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    out = []
    for _ in range(n):
        blob = np.exp(-(xx**2 + (yy * rng.uniform(0.3, 1)) ** 2) / rng.uniform(5, 80))
        out.append(np.clip(rng.normal(20, 8, (SIZE, SIZE, 3)) + 230 * blob[..., None] * rng.uniform(0.4, 1, 3), 0, 255))
    return np.asarray(out, dtype=np.uint8)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """A CSV catalog with image paths and Q1 labels, plus one unreadable image."""
    folder = tmp_path_factory.mktemp("imgs")
    rows = []
    rng = np.random.default_rng(1)
    for i, img in enumerate(blobs(N)):
        path = folder / f"{1000 + i}.jpg"
        Image.fromarray(img).save(path, quality=95)
        p = rng.dirichlet([1, 1, 1])
        rows.append({"GalaxyID": 1000 + i, "path": str(path), "Class1.1": p[0], "Class1.2": p[1], "Class1.3": p[2]})
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    rows.append({"GalaxyID": 2000, "path": str(folder / "broken.jpg"), "Class1.1": 1.0, "Class1.2": 0.0,
                 "Class1.3": 0.0})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


def test_all_figures_written_and_linked(run_dir, catalog, tmp_path):
    page = analyze(run_dir, catalog, tmp_path, n_units=3, n_examples=2, n_errors=3, **FAST)
    assert page == tmp_path / "analysis.html"
    expected = {"filters", "viewpoint", "units", "errors"} | {
        f"activations_{k}" for k in ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "pool4")}
    pngs = {p.stem for p in tmp_path.glob("*.png")}
    assert pngs == expected
    for name in expected:
        with Image.open(tmp_path / f"{name}.png") as im:
            assert im.format == "PNG" and min(im.size) > 50, name
    text = page.read_text()
    assert set(re.findall(r'<img src="([^"]+)"', text)) == {f"{n}.png" for n in expected}
    summary = json.loads((tmp_path / "analysis.json").read_text())
    assert summary["n_images"] == N and summary["n_skipped"] == 1 and summary["step"] == 7
    assert summary["has_labels"] and len(summary["units"]) == 3
    assert pd.read_csv(tmp_path / "skipped.csv")["id"].tolist() == [2000]
    errors = pd.read_csv(tmp_path / "image_errors.csv")
    assert len(errors) == N and errors["rmse"].is_monotonic_decreasing and (errors["n_label_values"] == 3).all()
    assert len(pd.read_csv(tmp_path / "units.csv")) == 3


def test_array_without_labels_skips_the_error_figure(run_dir, tmp_path):
    page = analyze(run_dir, blobs(6, seed=2), tmp_path, n_units=2, n_examples=2, example_id=3, viewpoint=5, **FAST)
    assert not (tmp_path / "errors.png").exists()
    text = page.read_text()
    assert "Not drawn: the images came without labels" in text and "Viewpoint 5 of image 3" in text
    assert (tmp_path / "units.png").stat().st_size > 0


def test_labels_joined_by_id(run_dir, catalog, tmp_path):
    labels = pd.read_csv(catalog).drop(columns=["path"]).iloc[:5]  # 5 of the 12 images have labels
    images = pd.read_csv(catalog).drop(columns=["Class1.1", "Class1.2", "Class1.3"])
    images.to_csv(tmp_path / "unlabelled.csv", index=False)
    analyze(run_dir, tmp_path / "unlabelled.csv", tmp_path / "out", labels=labels, n_errors=2, **FAST)
    errors = pd.read_csv(tmp_path / "out" / "image_errors.csv")
    assert errors["rmse"].notna().sum() == 5 and set(errors.dropna()["GalaxyID"]) == set(range(1000, 1005))


def test_filters_are_contrast_normalised_per_filter():
    weight = np.random.default_rng(0).normal(size=(8, 3, 5, 5)) * np.arange(1, 9)[:, None, None, None]
    fig = plot_filters(weight)
    tiles = []  # tiles[channel][filter]
    for ax in fig.axes:
        mosaic = ax.images[0].get_array()  # one row of 8 tiles of 5 px with 1-px white gaps
        assert mosaic.shape == (5, 8 * 6 - 1)
        tiles.append([mosaic[:, c * 6 : c * 6 + 5] for c in range(8)])
    for f in range(8):  # each filter spans [0, 1] over its three channels together
        assert min(tiles[c][f].min() for c in range(3)) == pytest.approx(0)
        assert max(tiles[c][f].max() for c in range(3)) == pytest.approx(1)


def test_filters_share_one_range_across_their_colour_channels():
    rng = np.random.default_rng(1)
    weight = rng.normal(size=(2, 3, 5, 5))
    weight[:, 0] *= 1e-3  # a red channel 1000 times weaker than green and blue
    fig = plot_filters(weight)
    red, green = (np.asarray(ax.images[0].get_array()) for ax in fig.axes[:2])
    zero = (0 - weight[0].min()) / (weight[0].max() - weight[0].min())  # where a zero weight is drawn
    red0, green0 = red[:, :5], green[:, :5]
    assert red0.max() - red0.min() < 0.01  # drawn flat, not stretched to full range
    assert np.allclose(red0, zero, atol=0.01)
    assert green0.max() - green0.min() > 0.3


def test_unit_table_ranks_images():
    features = np.array([[0.0, 5.0], [3.0, 1.0], [1.0, 2.0], [2.0, 0.0]])
    table = _unit_table(features, np.array([0, 1]), np.array([10, 11, 12, 13]), n=2)
    assert table["most_activating"].tolist() == ["11 13", "10 12"]
    assert table["least_activating"].tolist() == ["10 12", "13 11"]


def test_config_validation_and_unknown_example(run_dir, tmp_path):
    with pytest.raises(ValueError, match="viewpoint"):
        AnalyzeConfig(viewpoint=16)
    with pytest.raises(ValueError, match="n_units"):
        AnalyzeConfig(n_units=0)
    with pytest.raises(ValueError, match="example id '99'"):
        analyze(run_dir, blobs(3), tmp_path, example_id="99", **FAST)


def test_cli_analyze(run_dir, catalog, tmp_path, capsys):
    code = main(["analyze", "--model", str(run_dir), "--images", str(catalog), "--out", str(tmp_path / "a"),
                 "--units", "2", "--examples", "2", "--errors", "2", "--example-id", "1003", "--workers", "0",
                 "--device", "cpu", "--no-progress"])
    assert code == 0 and "analysis.html" in capsys.readouterr().out
    assert json.loads((tmp_path / "a" / "analysis.json").read_text())["example_id"] == "1003"
    code = main(["analyze", "--model", str(tmp_path / "nope"), "--images", str(catalog), "--out", str(tmp_path / "b")])
    assert code == 2 and "not a gzmorph run directory" in capsys.readouterr().err
