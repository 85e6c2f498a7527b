"""The paired bootstrap of an RMSE difference, on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gzmorph.errors import CatalogError
from gzmorph.evaluation.bootstrap import compare_predictions, paired_bootstrap
from gzmorph.tree import GZ2


def _labels(n: int, a: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, (n, a))


def test_identical_predictions_differ_by_exactly_zero():
    y = _labels(50)
    pred = y + np.random.default_rng(1).normal(0, 0.05, y.shape)
    res = paired_bootstrap(pred, pred.copy(), y, n_boot=500)
    assert res.difference == 0 and res.interval == (0.0, 0.0) and res.p_value == 1.0
    assert res.interval_a == res.interval_b and res.interval_a[0] < res.rmse_a < res.interval_a[1]


def test_a_constant_error_gives_a_constant_difference():
    y = _labels(40)
    res = paired_bootstrap(y + 0.1, y - 0.2, y, n_boot=300)
    assert (res.rmse_a, res.rmse_b, res.difference) == pytest.approx((0.1, 0.2, -0.1))
    assert res.interval == pytest.approx((-0.1, -0.1)) and res.p_value == 0.0


def test_the_interval_has_the_binomial_width():
    """Squared errors 1 on half the galaxies, 0 on the others: the resampled MSE is Binomial(N, 1/2) / N."""
    n = 400
    y = np.zeros((n, 1))
    a = np.zeros((n, 1))
    a[::2] = 1.0
    res = paired_bootstrap(a, y, y, n_boot=4000, level=0.95, seed=3)
    assert res.rmse_a == pytest.approx(np.sqrt(0.5)) and res.rmse_b == 0
    sd = 0.5 / np.sqrt(n) / (2 * np.sqrt(0.5))  # delta method: sd(MSE) / (2 RMSE)
    lo, hi = res.interval
    assert (hi - lo) == pytest.approx(2 * 1.96 * sd, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(np.sqrt(0.5), abs=0.2 * sd)


def test_pairing_keeps_the_shared_error_out_of_the_difference():
    y = _labels(500)
    err = np.random.default_rng(2).normal(0, 0.1, y.shape)
    a, b = y + err, y + 1.02 * err  # b is 2% worse on every galaxy
    res = paired_bootstrap(a, b, y, n_boot=1000)
    assert res.difference == pytest.approx(-0.02 * res.rmse_a, rel=1e-9)
    assert res.interval[1] < 0 and res.p_value < 0.01  # decided, although ...
    assert res.interval_a[1] > res.interval_b[0]  # ... the separate intervals overlap
    width = res.interval_a[1] - res.interval_a[0]
    assert res.interval[1] - res.interval[0] < width / 20
    unpaired = paired_bootstrap(a, b[np.random.default_rng(5).permutation(len(b))], y, n_boot=1000)
    assert unpaired.interval[1] - unpaired.interval[0] > 10 * (res.interval[1] - res.interval[0])


def test_missing_labels_are_masked_and_missing_predictions_refused():
    y = _labels(30)
    y[:, 1] = np.nan  # an answer nobody labelled
    y[5] = np.nan  # a galaxy with no label at all: left out
    a = y + 0.1
    a[5] = np.nan
    b = np.where(np.isnan(y), 0.5, y)
    res = paired_bootstrap(a, b, y, n_boot=200, seed=7)
    assert res.n_galaxies == 29 and res.rmse_a == pytest.approx(0.1) and res.rmse_b == 0
    assert res.to_dict() == paired_bootstrap(a, b, y, n_boot=200, seed=7).to_dict()  # reproducible
    a[3, 0] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        paired_bootstrap(a, b, y)


def _table(ids, values):
    return pd.DataFrame({"GalaxyID": ids, **{c: values[:, j] for j, c in enumerate(GZ2.columns)}})


def test_files_are_joined_on_ids_and_must_cover_the_same_galaxies():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.7, (60, 3))
    labels = pd.DataFrame({"GalaxyID": np.arange(100, 160), "Class1.1": truth[:, 0], "Class1.2": truth[:, 1],
                           "Class1.3": truth[:, 2]})
    good, bad = np.full((60, GZ2.n_answers), 0.3), np.full((60, GZ2.n_answers), 0.1)
    good[:, :3], bad[:, :3] = truth + 0.05, truth + 0.1
    order = rng.permutation(60)
    a = _table(np.arange(100, 160), good)
    b = _table(np.arange(100, 160)[order], bad[order])  # rows in another order: joined on ids
    res = compare_predictions(a, b, labels, n_boot=200)
    assert (res.rmse_a, res.rmse_b, res.n_galaxies) == pytest.approx((0.05, 0.1, 60))
    with pytest.raises(CatalogError, match="different galaxies"):
        compare_predictions(a, b.iloc[1:], labels, n_boot=10)


def test_seed_stacks_compare_the_mean_of_their_rmses():
    y = _labels(200)
    err = np.random.default_rng(4).normal(0, 0.1, y.shape)
    a = np.stack([y + s * err for s in (1.0, 1.1, 1.2)])  # (3, N, A): seeds of RMSE r, 1.1 r, 1.2 r
    b = np.stack([y + 1.3 * err, y + 1.5 * err])  # two seeds: 1.3 r and 1.5 r
    res = paired_bootstrap(a, b, y, n_boot=500, seed=1)
    r = paired_bootstrap(y + err, y, y, n_boot=10).rmse_a
    assert (res.rmse_a, res.rmse_b) == pytest.approx((1.1 * r, 1.4 * r))
    assert (res.n_seeds_a, res.n_seeds_b) == (3, 2)
    # every seed scales the same errors, so each resample's difference is -0.3 times its own r
    assert res.interval[0] < res.difference < res.interval[1] < 0
    one = paired_bootstrap(a[0], b[0], y, n_boot=500, seed=1)
    assert one.n_seeds_a == 1 and one.difference == pytest.approx(-0.3 * r)
    assert paired_bootstrap(a[:1], b[:1], y, n_boot=500, seed=1).to_dict() == one.to_dict()  # (1, N, A) == (N, A)
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(a, b[:, :-1], y)


def test_lists_of_files_are_seed_stacks_on_the_same_galaxies():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.2, 0.7, (40, 3))
    labels = pd.DataFrame({"GalaxyID": np.arange(40), "Class1.1": truth[:, 0], "Class1.2": truth[:, 1],
                           "Class1.3": truth[:, 2]})

    def table(offset: float) -> pd.DataFrame:
        v = np.full((40, GZ2.n_answers), 0.3)
        v[:, :3] = truth + offset
        return _table(np.arange(40), v)

    res = compare_predictions([table(0.02), table(0.04)], (table(0.1),), labels, n_boot=100)
    assert (res.rmse_a, res.rmse_b, res.difference) == pytest.approx((0.03, 0.1, -0.07))
    assert (res.n_seeds_a, res.n_seeds_b) == (2, 1)
    with pytest.raises(CatalogError, match="different galaxies"):
        compare_predictions([table(0.02), table(0.04).iloc[:-1]], table(0.1), labels, n_boot=10)
    with pytest.raises(ValueError, match="at least one"):
        compare_predictions([], table(0.1), labels)
