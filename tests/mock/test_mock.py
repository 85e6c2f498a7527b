"""The mock Galaxy Zoo generator: labels obey the tree, images look right, files reproducible."""

import dataclasses
import hashlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from gzmorph.errors import OutputError
from gzmorph.cli import main
from gzmorph.mock import GalaxyParams, answer_probabilities, crowd_labels, generate, render_galaxy, sample_params
from gzmorph.mock.labels import visibility
from gzmorph.mock.params import KINDS
from gzmorph.tree import GZ2, agreement, check_labels


@pytest.fixture(scope="module")
def crowd():
    """Labels of 400 galaxies (no rendering: fast) and their parameters."""
    rng = np.random.default_rng(7)
    params = [sample_params(rng) for _ in range(400)]
    labels = np.array([crowd_labels(p, rng, int(rng.integers(40, 51))) for p in params])
    return params, labels


def test_crowd_labels_obey_the_tree(crowd):
    _, labels = crowd
    table = pd.DataFrame(labels, columns=GZ2.columns)
    assert check_labels(table, id_column=None).empty
    assert labels.min() >= 0 and labels.max() <= 1
    q = {q.name: sl for q, sl in zip(GZ2.questions, GZ2.slices)}
    np.testing.assert_allclose(labels[:, q["Q1"]].sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(labels[:, q["Q6"]].sum(1), 1, atol=1e-12)  # asked of everyone
    np.testing.assert_allclose(labels[:, q["Q2"]].sum(1), labels[:, GZ2.columns.index("Class1.2")], atol=1e-12)
    np.testing.assert_allclose(labels[:, q["Q11"]].sum(1), labels[:, GZ2.columns.index("Class4.1")], atol=1e-12)


def test_every_answer_wins_somewhere(crowd):
    _, labels = crowd
    norm, reach = GZ2.normalise(labels), GZ2.reach(labels)
    for qi, (q, sl) in enumerate(zip(GZ2.questions, GZ2.slices)):
        reached = reach[:, qi] >= 0.2
        winners = np.bincount(norm[reached, sl].argmax(1), minlength=len(q.columns))
        missing = [c for c, w in zip(q.columns, winners) if w == 0]
        assert not missing, f"{q.name}: answers never the crowd's choice: {missing}"


def test_agreement_varies_between_galaxies(crowd):
    params, labels = crowd
    a = agreement(GZ2.normalise(labels)[:, GZ2.slices[0]])
    lo, hi = np.percentile(a, [10, 90])
    assert lo < 0.35 and hi > 0.6
    # Harder galaxies (low visibility) split the crowd more often.
    vis = np.array([visibility(p) for p in params])
    assert np.nanmean(a[vis < 0.3]) < np.nanmean(a[vis > 0.8])


def test_answer_probabilities_follow_the_truth():
    rng = np.random.default_rng(0)
    disk = sample_params(rng, "disk")
    clear = dict(r_eff=40.0, psf_fwhm=6.0, flux=40.0 * 2 * np.pi * 40**2 * 5)
    edge = dataclasses.replace(disk, inclination=88.0, axis_ratio=0.12, **clear)
    face = dataclasses.replace(disk, inclination=10.0, axis_ratio=0.98, **clear)
    q2 = GZ2.questions.index(GZ2.question("Q2"))
    assert answer_probabilities(edge)[q2][0] > 0.9 > 0.1 > answer_probabilities(face)[q2][0]
    star = answer_probabilities(sample_params(rng, "star"))[0]
    assert star.argmax() == 2
    assert visibility(dataclasses.replace(face, psf_fwhm=80.0)) < 0.2 < 0.9 < visibility(face)
    for p in answer_probabilities(face):
        assert p.sum() == pytest.approx(1.0) and (p > 0).all()


def test_params_validate():
    with pytest.raises(ValueError, match="kind"):
        GalaxyParams(kind="blob")
    with pytest.raises(ValueError, match="inclination"):
        GalaxyParams(inclination=120.0)
    with pytest.raises(ValueError, match="n_arms"):
        GalaxyParams(n_arms=2, winding="none")
    with pytest.raises(ValueError, match="unknown galaxy kind"):
        sample_params(np.random.default_rng(0), "blob")
    p = sample_params(np.random.default_rng(3))
    assert GalaxyParams.from_dict(p.to_dict()) == p


@pytest.mark.parametrize("kind", KINDS)
def test_render_every_kind(kind):
    rng = np.random.default_rng(11)
    img = render_galaxy(sample_params(rng, kind), rng, size=96)
    assert img.dtype == np.uint8 and img.shape == (96, 96, 3)
    assert 0 < np.median(img) < 40  # dark sky
    assert img.max() > 60  # something well above the sky


def _moments(img: np.ndarray, radius: float) -> tuple[float, float]:
    """Sky-subtracted second moments (x, y) of the light within ``radius`` of the centre."""
    lum = img.astype(np.float64).sum(2)
    lum = lum - np.median(lum)
    lum[lum < 20] = 0  # sky noise (std ~5 in the sum of three channels) would add round moments
    yy, xx = np.indices(lum.shape) - (lum.shape[0] - 1) / 2
    w = lum * (np.hypot(xx, yy) < radius)
    return float((w * xx**2).sum() / w.sum()), float((w * yy**2).sum() / w.sum())


def test_edge_on_disk_is_elongated():
    base = sample_params(np.random.default_rng(2), "disk")
    common = dict(dx=0.0, dy=0.0, pa=0.0, r_eff=30.0, disk_h=18.0, psf_fwhm=6.0, odd="none", ring=0.0,
                  star_flux=0.0, disturbance=0.0, bulge_frac=0.1)
    edge = dataclasses.replace(base, inclination=89.0, axis_ratio=0.1, **common)
    face = dataclasses.replace(base, inclination=0.0, axis_ratio=1.0, bulge_q=1.0, **common)
    mx, my = _moments(render_galaxy(edge, np.random.default_rng(0), size=212), 40)
    assert mx / my > 3  # pa=0: the major axis is along x
    mx, my = _moments(render_galaxy(face, np.random.default_rng(0), size=212), 40)
    assert 0.6 < mx / my < 1.6


def test_star_is_a_point_source_with_spikes():
    p = dataclasses.replace(sample_params(np.random.default_rng(5), "star"), dx=0.0, dy=0.0, star_dx=0.0,
                            star_dy=0.0, star_flux=2e6, flux=0.0)
    rgb = render_galaxy(p, np.random.default_rng(1), size=424)
    c = 211
    assert rgb[c - 2 : c + 3, c - 2 : c + 3].max() == 255  # saturated core
    img = rgb.astype(np.float64).sum(2)
    # Diffraction spikes along the image axes outshine the diagonals at the same distance.
    d = np.arange(20, 60)
    axes = np.median(np.concatenate([img[c, c + d], img[c - d, c]]))
    diagonals = np.median(np.concatenate([img[c + d, c + d], img[c - d, c - d]]))
    assert axes > diagonals + 30


def _digest(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_generate_kaggle_layout(tmp_path):
    out = generate(tmp_path / "gz", n=5, n_test=2, seed=3, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [
        ".gzmorph.json", "images_test_rev1", "images_training_rev1", "test_solutions_rev1.csv",
        "training_solutions_rev1.csv", "truth.csv"]
    table = pd.read_csv(out / "training_solutions_rev1.csv")
    assert list(table.columns) == ["GalaxyID"] + GZ2.columns + [c + "_votes" for c in GZ2.columns]
    assert table["GalaxyID"].tolist() == [100000, 100001, 100002, 100003, 100004]
    assert check_labels(table).empty
    for gid in table["GalaxyID"]:
        with Image.open(out / "images_training_rev1" / f"{gid}.jpg") as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (424, 424)
    assert sorted(p.name for p in (out / "images_test_rev1").iterdir()) == ["900000.jpg", "900001.jpg"]
    truth = pd.read_csv(out / "truth.csv")
    assert truth["GalaxyID"].tolist() == table["GalaxyID"].tolist() + [900000, 900001]
    assert {"kind", "n_arms", "winding", "bar", "inclination", "odd", "visibility"} <= set(truth.columns)


@pytest.mark.slow
def test_generate_is_reproducible_across_workers(tmp_path):
    a = generate(tmp_path / "a", n=14, n_test=2, seed=9, workers=1, progress=False, size=64)
    b = generate(tmp_path / "b", n=14, n_test=2, seed=9, workers=2, progress=False, size=64)
    assert _digest(a) == _digest(b)
    c = generate(tmp_path / "c", n=14, n_test=2, seed=10, workers=1, progress=False, size=64)
    assert _digest(c) != _digest(a)


def test_generate_replaces_a_previous_mock_only(tmp_path):
    out = generate(tmp_path / "gz", n=6, n_test=2, seed=0, progress=False, size=48)
    generate(out, n=3, seed=0, progress=False, size=48)
    assert len(list((out / "images_training_rev1").glob("*.jpg"))) == 3
    assert not list((out / "images_test_rev1").glob("*.jpg"))
    assert not (out / "test_solutions_rev1.csv").exists()
    (out / "truth.csv").unlink()  # as if a run was interrupted: its marker still marks the folder
    generate(out, n=2, seed=0, progress=False, size=48)
    assert (out / "truth.csv").is_file() and len(list((out / "images_training_rev1").glob("*.jpg"))) == 2
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="mine"):
        generate(tmp_path / "mine", n=2, progress=False, size=48)
    with pytest.raises(ValueError, match="at least one galaxy"):
        generate(tmp_path / "empty", n=0, progress=False)


def test_cli_mock(tmp_path, capsys):
    assert main(["mock", "--n", "3", "--n-test", "1", "--out", str(tmp_path / "m"), "--size", "48",
                 "--no-progress"]) == 0
    assert "3 training + 1 test" in capsys.readouterr().out
    assert len(pd.read_csv(tmp_path / "m" / "training_solutions_rev1.csv")) == 3
    assert main(["mock", "--n", "-1", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
