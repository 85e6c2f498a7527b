"""Calibration on generated data with known answers: a model miscalibrated by construction is fixed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gzmorph.errors import CatalogError, RunError
from gzmorph.evaluation.calibrate import MIN_GALAXIES, fit_calibration
from gzmorph.evaluation.calibration import ece
from gzmorph.inference.calibrator import (Calibration, betabinom_interval, conditional, dirichlet_interval,
                                         load_calibration, tempered)
from gzmorph.tree import GZ2

from crowd_simulation import VOTES, simulate  # noqa: E402


def _top_ece(pred, crowd, sl, prob=None):
    reached = crowd[:, sl].sum(1) >= 0.5
    cond = conditional(pred[reached], sl)
    right = (cond.argmax(1) == crowd[reached, sl].argmax(1)).astype(float)
    return ece(cond.max(1) if prob is None else prob[reached], right)


@pytest.fixture(scope="module")
def fitted():
    model, crowd, counts = simulate(1500, seed=1)
    return fit_calibration(model, crowd, GZ2, votes=counts, level=0.8)


def test_temperatures_undo_the_constructed_sharpening(fitted):
    assert fitted.votes == VOTES
    for q in ("Q1", "Q2", "Q6", "Q7"):
        assert fitted.temperature[q] == pytest.approx(2.5, rel=0.2)


def test_calibration_fixes_a_miscalibrated_model_on_new_galaxies(fitted):
    model, crowd, _ = simulate(1500, seed=2)
    cal = fitted.fractions(model, GZ2)
    # The tree's sums hold and the most likely answers are unchanged.
    for q, sl in zip(GZ2.questions, GZ2.slices):
        reach = np.ones(len(cal)) if q.parent is None else cal[:, GZ2.columns.index(q.parent)]
        np.testing.assert_allclose(cal[:, sl].sum(1), reach, atol=1e-9)
        np.testing.assert_array_equal(cal[:, sl].argmax(1), model[:, sl].argmax(1))
    rmse = lambda p: np.sqrt(np.mean((p - crowd) ** 2))  # noqa: E731
    assert rmse(cal) < rmse(model)
    p_correct = fitted.probability_correct(cal, GZ2)
    for q in ("Q1", "Q6", "Q7"):
        sl = GZ2.slices[[x.name for x in GZ2.questions].index(q)]
        before, after = _top_ece(model, crowd, sl), _top_ece(cal, crowd, sl, p_correct[q])
        assert before > 0.05 and after < before / 1.5, (q, before, after)
        if q != "Q7":  # Q7: ~430 reached galaxies, the ECE estimate itself is that noisy
            assert after < 0.03, (q, before, after)


def test_intervals_cover_simulated_votes_at_the_nominal_rate(fitted):
    model, crowd, _ = simulate(1500, seed=3)
    cal = fitted.fractions(model, GZ2)
    # The fitted level on new galaxies, for every answer of Q1, Q2, Q6 and Q7; another
    # level (not fitted) for Q1, where the vote model is exact. With 40 whole votes even
    # the exact binomial's 80% interval covers 0.82-0.86 (mid-p edges), hence 0.06; Q7,
    # reached by a third, has many values on the atom at 0, hence 0.08.
    for level, columns, tol in ((0.8, [*range(5), 13, 14], 0.06), (0.8, [15, 16, 17], 0.08), (0.5, range(3), 0.08)):
        lo, hi = fitted.intervals(cal, GZ2, level=level)
        for j in columns:
            inside = np.mean((crowd[:, j] >= lo[:, j] - 1e-9) & (crowd[:, j] <= hi[:, j] + 1e-9))
            assert abs(inside - level) < tol, (GZ2.columns[j], level, inside)


def test_betabinom_interval_matches_scipy():
    from scipy import stats

    p = np.array([0.05, 0.3, 0.9, np.nan])
    lo, hi = betabinom_interval(p, 12.0, 40, 0.8)
    k = np.arange(41)
    for i in range(3):
        pmf = stats.betabinom(40, 12 * p[i], 12 * (1 - p[i])).pmf(k)
        mid = np.cumsum(pmf) - pmf / 2  # mid-p: an edge value is in when half of it is needed
        assert lo[i] == k[mid >= 0.1][0] / 40 and hi[i] == k[mid <= 0.9][-1] / 40
    assert np.isnan(lo[3]) and np.isnan(hi[3])


def test_a_too_small_split_says_how_many_are_needed():
    model, crowd, counts = simulate(40, seed=4)
    with pytest.raises(CatalogError, match=f"calibration split too small: 40 labelled galaxies .* at least "
                                           f"{MIN_GALAXIES} needed"):
        fit_calibration(model, crowd, GZ2, votes=counts, source="dev.csv")


def test_calibration_file_round_trip_and_missing_file(fitted, tmp_path):
    fitted.save(tmp_path)
    again = load_calibration(tmp_path, GZ2)
    assert again.to_dict() == fitted.to_dict()
    with pytest.raises(RunError, match="no calibration .*gzmorph calibrate"):
        load_calibration(tmp_path / "elsewhere")


def test_a_dirichlet_models_intervals_cover_simulated_votes_at_the_nominal_rate():
    """Galaxies whose crowd votes are drawn from the Dirichlet-multinomial a model predicts."""
    rng = np.random.default_rng(7)
    n = 3000
    alpha = np.exp(rng.normal(0.5, 1.2, size=(n, GZ2.n_answers)))
    votes = rng.integers(30, 51, size=n)
    crowd = np.full((n, GZ2.n_answers), np.nan)
    for q, sl in zip(GZ2.questions, GZ2.slices):
        if q.parent is None:
            split = np.stack([rng.dirichlet(a) for a in alpha[:, sl]])
            crowd[:, sl] = np.stack([rng.multinomial(v, s) for v, s in zip(votes, split)]) / votes[:, None]
    for level in (0.8, 0.5):
        lo, hi = dirichlet_interval(alpha, votes, GZ2, level)
        for j in [*range(3), 13, 14]:  # Q1 and Q6, the root questions
            inside = np.mean((crowd[:, j] >= lo[:, j] - 1e-9) & (crowd[:, j] <= hi[:, j] + 1e-9))
            assert abs(inside - level) < 0.05, (GZ2.columns[j], level, inside)
        assert np.isnan(lo[:, 3]).all()  # Q2: its voters are themselves uncertain
