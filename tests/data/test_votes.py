"""Vote counts as labels: reading and checking them, the Dirichlet-multinomial loss, training on counts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from gzmorph.data.catalog import open_catalog
from gzmorph.data.votes import VOTES, pseudo_counts
from gzmorph.errors import CatalogError
from gzmorph.mock.dataset import generate
from gzmorph.nn.model import build_model
from gzmorph.training.losses import dirichlet_multinomial_nll
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train
from gzmorph.tree import GZ2


def _catalog(tmp_path, extra: dict, n: int = 3, name: str = "cat.csv"):
    """A labels-only catalog: Q1 fractions plus the given columns."""
    frac = np.array([[0.5, 0.5, 0.0], [0.2, 0.7, 0.1], [1.0, 0.0, 0.0]])[:n]
    df = pd.DataFrame(frac, columns=GZ2.columns[:3])
    df.insert(0, "GalaxyID", range(1, n + 1))
    for k, v in extra.items():
        df[k] = v
    path = tmp_path / name
    df.to_csv(path, index=False) if name.endswith(".csv") else df.to_parquet(path, index=False)
    return path


def test_per_answer_and_per_question_counts_are_read(tmp_path):
    cat = open_catalog(_catalog(tmp_path, {"Class1.1_votes": [5, 4, 40], "Class1.2_votes": [5, 14, 0],
                                           "Class1.3_votes": [0, 2, 0]}))
    np.testing.assert_array_equal(cat.votes[:, :3], [[5, 5, 0], [4, 14, 2], [40, 0, 0]])
    assert np.isnan(cat.votes[:, 3:]).all()  # no counts for the other questions: masked
    assert cat.subset([2]).votes[0, 0] == 40
    cat = open_catalog(_catalog(tmp_path, {"Q1_votes": [10, 20, 30]}, name="tot.parquet"))
    np.testing.assert_allclose(cat.votes[:, :3], [[5, 5, 0], [4, 14, 2], [30, 0, 0]], atol=1e-4)
    assert open_catalog(_catalog(tmp_path, {}, name="plain.csv")).votes is None


@pytest.mark.parametrize("value, what", [(-1, "is negative"), (2.5, "is not a whole number"),
                                         (np.nan, "is not a number")])
def test_bad_counts_name_file_line_and_column(tmp_path, value, what):
    path = _catalog(tmp_path, {"Q1_votes": [10, value, 30]})
    with pytest.raises(CatalogError) as err:
        open_catalog(path)
    msg = str(err.value)
    assert str(path) in msg and "line 3" in msg and "'Q1_votes'" in msg and what in msg and "\n" not in msg


def test_counts_that_contradict_the_tree_are_refused(tmp_path):
    # 12 volunteers answered Q2, but only 5 chose answer 1.2 ("features or disk") that leads to it.
    path = _catalog(tmp_path, {"Q1_votes": [10, 10, 10], "Q2_votes": [5, 12, 0]})
    with pytest.raises(CatalogError, match=r"line 3, column Q2_votes: Q2 has 12 votes but its parent answer "
                                           r"Class1.2 only 7: counts contradict the tree"):
        open_catalog(path)


def test_dirichlet_multinomial_matches_scipy():
    rng = np.random.default_rng(0)
    alpha = rng.uniform(0.3, 20, size=(4, GZ2.n_answers))
    counts = rng.integers(0, 20, size=(4, GZ2.n_answers)).astype(np.float32)
    counts[1, GZ2.slices[1]] = np.nan  # Q2 not in the catalog: masked
    counts[2, GZ2.slices[2]] = 0  # nobody reached Q3: nothing to learn
    got = dirichlet_multinomial_nll(torch.tensor(alpha), torch.tensor(counts), GZ2, per_question=True).numpy()
    for b in range(4):
        for qi, sl in enumerate(GZ2.slices):
            x = counts[b, sl]
            if np.isnan(x).any() or x.sum() == 0:
                assert got[b, qi] == 0
                continue
            ref = -stats.dirichlet_multinomial.logpmf(x, alpha[b, sl], int(x.sum()))
            # The loss drops the terms of the counts alone (the multinomial coefficient).
            coef = stats.multinomial.logpmf(x, int(x.sum()), np.full(x.size, 1 / x.size)) + x.sum() * np.log(x.size)
            assert got[b, qi] == pytest.approx(ref + coef, rel=1e-4, abs=1e-4)


def test_dirichlet_head_means_keep_the_tree():
    cfg = get_preset("small").model
    from dataclasses import replace

    torch.manual_seed(0)
    net = build_model(replace(cfg, output="dirichlet"), GZ2).eval()
    crops = torch.rand(3, 2, 3, 69, 69)
    with torch.no_grad():
        alpha, p = net(crops, concentrations=True), net(crops)
    assert (alpha > 0).all()
    for q, sl in zip(GZ2.questions, GZ2.slices):
        reach = torch.ones(3) if q.parent is None else p[:, GZ2.columns.index(q.parent)]
        torch.testing.assert_close(p[:, sl].sum(1), reach, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(p[:, sl] / reach[:, None], alpha[:, sl] / alpha[:, sl].sum(1, keepdim=True),
                                   atol=1e-5, rtol=1e-5)


def test_pseudo_counts_scale_fractions():
    labels = np.array([[0.25, np.nan]], dtype=np.float32)
    out = pseudo_counts(labels, 40)
    assert out[0, 0] == 10 and np.isnan(out[0, 1])


@pytest.fixture(scope="module")
def mock_counts(tmp_path_factory):
    root = tmp_path_factory.mktemp("mock")
    generate(root, n=24, seed=3, workers=1, size=64, progress=False)
    return root


def test_mock_writes_the_volunteers_counts(mock_counts):
    table = pd.read_csv(mock_counts / "training_solutions_rev1.csv")
    votes = table[[c + VOTES for c in GZ2.columns]].to_numpy()
    truth = pd.read_csv(mock_counts / "truth.csv")
    # Every volunteer answers Q1 and Q6; the counts are whole and the tree holds (checked on reading).
    np.testing.assert_array_equal(votes[:, GZ2.slices[0]].sum(1), truth["n_volunteers"].to_numpy()[:len(table)])
    cat = open_catalog(mock_counts)
    np.testing.assert_array_equal(cat.votes, votes)


def test_training_on_counts_and_the_explicit_conversion(mock_counts, tmp_path, tiny_kaggle):
    cfg = get_preset("small").override(examples=64, batch_size=8, eval_every=64, image_size=48,
                                       loss="dirichlet-multinomial")
    assert cfg.model.output == "dirichlet"
    result = train(cfg, mock_counts, tmp_path / "run", device="cpu", workers=1, progress=False)
    assert np.isfinite(result["last_val_rmse"])
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["train_loss"]) and record["train_loss"] > 0
    # A fractions-only catalog (Kaggle) needs --assumed-votes: never a silent conversion.
    with pytest.raises(CatalogError, match="needs vote counts.*--assumed-votes"):
        train(cfg, tiny_kaggle, tmp_path / "run2", device="cpu", workers=1, progress=False)
    train(cfg.override(assumed_votes=40), tiny_kaggle, tmp_path / "run3", device="cpu", workers=1, progress=False)


def test_review_export_counts_train_through_the_same_loss(tmp_path):
    from gzmorph.review.export import vote_fractions

    # Three experts on galaxy 7: two say smooth (1.1), one features (1.2) then edge-on yes (2.1).
    answers = pd.DataFrame({"galaxy": ["7"] * 4, "reviewer": ["a", "b", "c", "c"],
                            "question": ["Q1", "Q1", "Q1", "Q2"],
                            "answer": ["Class1.1", "Class1.1", "Class1.2", "Class2.1"]})
    table = vote_fractions(answers, GZ2).reset_index().rename(columns={"galaxy": "GalaxyID"})
    table.to_csv(tmp_path / "experts.csv", index=False)
    cat = open_catalog(tmp_path / "experts.csv")
    np.testing.assert_allclose(cat.votes[0, :5], [2, 1, 0, 1, 0], atol=1e-4)
    assert np.isnan(cat.votes[0, GZ2.slices[2]]).all() or (cat.votes[0, GZ2.slices[2]] == 0).all()
