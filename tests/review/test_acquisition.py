"""Acquisition policies of the review queue: BALD, uncertainty, anomaly, similar, random; why queued."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from starlette.testclient import TestClient

from gzmorph.errors import ConfigError
from gzmorph.inference.table import load_thresholds, prediction_table
from gzmorph.review.acquisition import AcquisitionConfig, acquisition_scores, bald, predictive_uncertainty
from gzmorph.review.app import create_app
from gzmorph.review.queue import build_queue, load_predictions
from gzmorph.review.server import ReviewConfig, open_session
from gzmorph.tree import GZ2, TreeConstraint
from discovery_helpers import write_embedding
from review_helpers import csrf_of, sample

N = 20
DISAGREE = [4, 11, 17]
COIN_TOSS = 8


def tree_probs(raw: np.ndarray) -> np.ndarray:
    return TreeConstraint(GZ2)(torch.from_numpy(raw.astype(np.float32))).numpy()


def two_members() -> tuple[np.ndarray, np.ndarray]:
    """Two members that agree (confidently) except on DISAGREE; both unsure, together, on COIN_TOSS."""
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(N, GZ2.n_answers)) * 6  # confident answers everywhere
    a, b = raw.copy(), raw.copy()
    for g in DISAGREE:  # Q1: smooth for one member, features/disk for the other
        a[g, 0:3], b[g, 0:3] = [8, -8, -8], [-8, 8, -8]
    a[COIN_TOSS, 0:3] = b[COIN_TOSS, 0:3] = [0, 0, 0]  # the same coin toss for both
    return tree_probs(a), tree_probs(b)


def test_bald_picks_the_galaxies_the_members_disagree_on():
    a, b = two_members()
    scores = bald(np.stack([a, b]), GZ2)
    assert sorted(np.argsort(-scores)[:3]) == DISAGREE
    assert scores[COIN_TOSS] < scores[DISAGREE].min() / 5  # agreeing on a coin toss is not disagreement
    # ...while predictive uncertainty counts the shared coin toss as doubt.
    unsure = predictive_uncertainty((a + b) / 2, GZ2)
    assert unsure[COIN_TOSS] > np.median(unsure)
    assert np.allclose(bald(np.stack([a, a]), GZ2), 0, atol=1e-9)


def write_members(tmp_path, ids) -> list[str]:
    thresholds, _ = load_thresholds(None, GZ2)
    paths = []
    for k, probs in enumerate(two_members()):
        path = tmp_path / f"member{k}.parquet"
        prediction_table(np.asarray(ids), probs, GZ2, thresholds, "GalaxyID").to_pandas().to_parquet(path)
        paths.append(str(path))
    return paths


def test_queue_policies_order_and_explain(tmp_path):
    members = write_members(tmp_path, list(range(100, 100 + N)))
    preds = load_predictions(members[0], GZ2)
    scores = acquisition_scores(preds, GZ2, AcquisitionConfig("bald", members=tuple(members)))
    queue = build_queue(preds, GZ2, scores=scores)
    assert len(queue) == N  # every galaxy, flagged or not
    assert sorted(queue.index[:3]) == [str(100 + g) for g in DISAGREE]
    assert queue["reason"].iloc[0].startswith("members disagree: mutual information")
    rnd = [build_queue(preds, GZ2, scores=acquisition_scores(preds, GZ2, AcquisitionConfig("random", random_seed=s)))
           for s in (1, 1, 2)]
    assert list(rnd[0].index) == list(rnd[1].index) != list(rnd[2].index)
    today = build_queue(preds, GZ2)
    assert today["reason"].str.startswith("flagged").all()


def test_anomaly_and_similar_policies(tmp_path):
    preds = load_predictions(write_members(tmp_path, list(range(100, 100 + N)))[0], GZ2)
    pd.DataFrame({"GalaxyID": [100, 105, 107], "anomaly": [0.1, 3.0, 0.5]}).to_parquet(tmp_path / "a.parquet")
    queue = build_queue(preds, GZ2, scores=acquisition_scores(preds, GZ2, AcquisitionConfig(
        "anomaly", anomaly=str(tmp_path / "a.parquet"))))
    assert list(queue.index[:3]) == ["105", "107", "100"] and queue["reason"].iloc[0] == "anomaly score 3.000"
    assert queue["reason"].iloc[-1] == "not in the index"


def test_similar_policy_queues_the_seeds_look_alikes_first(tmp_path):
    preds = load_predictions(write_members(tmp_path, list(range(100, 100 + N)))[0], GZ2)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 6))
    x[[5, 9]] = x[2] + 0.01 * rng.normal(size=(2, 6))  # 105 and 109 look like the seed 102
    write_embedding(tmp_path / "e.parquet", x, ids=range(100, 100 + N))
    queue = build_queue(preds, GZ2, scores=acquisition_scores(preds, GZ2, AcquisitionConfig(
        "similar", embeddings=str(tmp_path / "e.parquet"), seeds=("102",))))
    assert list(queue.index[:3]) == ["102", "105", "109"] or list(queue.index[:3]) == ["102", "109", "105"]
    assert queue["reason"].iloc[1].startswith("similar to seed 102 (cosine ")
    with pytest.raises(ConfigError, match="seed galaxy '999' is not in"):
        acquisition_scores(preds, GZ2, AcquisitionConfig("similar", embeddings=str(tmp_path / "e.parquet"),
                                                         seeds=("999",)))


def test_policies_refuse_missing_inputs(tmp_path):
    with pytest.raises(ConfigError, match="at least two member"):
        AcquisitionConfig("bald", members=("one.parquet",))
    with pytest.raises(ConfigError, match="seed id"):
        AcquisitionConfig("similar", embeddings="e.parquet")
    with pytest.raises(ConfigError, match="must be one of"):
        AcquisitionConfig("magic")


def test_review_pages_show_why_a_galaxy_was_queued(tmp_path):
    preds, images = sample(tmp_path)
    session = open_session(ReviewConfig(predictions=preds, catalog=images, db=tmp_path / "r.sqlite",
                                        acquisition=AcquisitionConfig("uncertainty")))
    # the review server answers only its bound host names
    client = TestClient(create_app(session), base_url="http://127.0.0.1:8000", follow_redirects=False)
    home = client.get("/").text
    assert "acquisition policy <b>uncertainty</b>" in home and "predictive uncertainty" in home
    csrf = csrf_of(home)
    assert client.post("/settings", data={"csrf": csrf, "reviewer": "ann", "question": ""}).status_code == 303
    gid = session.scores["priority"].idxmax()
    page = client.get(f"/galaxy/{gid}").text
    assert "queued because: predictive uncertainty" in page
