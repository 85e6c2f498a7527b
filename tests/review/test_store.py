"""The review store, the tree walk, the queue and the label export (no web server)."""

import math
import multiprocessing
import sqlite3

import numpy as np
import pandas as pd
import pytest

from gzmorph.data.catalog import open_catalog
from gzmorph.review.db import ReviewStore
from gzmorph.review.export import export_labels, vote_fractions
from gzmorph.review.queue import build_queue
from gzmorph.review.walk import CANT_TELL, AnswerError, next_question, reached_questions
from gzmorph.tree import GZ2, Question, Tree, check_labels

SMOOTH = [("Q1", "Class1.1"), ("Q7", "Class7.1"), ("Q6", "Class6.2")]
SPIRAL = [("Q1", "Class1.2"), ("Q2", "Class2.2"), ("Q3", "Class3.2"), ("Q4", "Class4.1"), ("Q10", "Class10.2"),
          ("Q11", "Class11.2"), ("Q5", "Class5.2"), ("Q6", "Class6.2")]


def answer_all(store, galaxy, reviewer, walk):
    for q, a in walk:
        store.record_answer(galaxy, reviewer, q, a, "m1")


def test_walk_is_depth_first_and_follows_answers():
    assert reached_questions(GZ2, {}) == ["Q1", "Q6"]
    assert reached_questions(GZ2, dict(SPIRAL)) == [q for q, _ in SPIRAL]
    assert reached_questions(GZ2, {"Q1": "Class1.1", "Q6": "Class6.1"}) == ["Q1", "Q7", "Q6", "Q8"]
    assert next_question(GZ2, {"Q1": "Class1.1"}, after="Q1") == "Q7"
    # Can't tell reaches no follow-up question.
    assert reached_questions(GZ2, {"Q1": CANT_TELL}) == ["Q1", "Q6"]


def test_custom_tree_walks_too(tmp_path):
    tree = Tree("mini", (Question("A", "round?", ("yes", "no"), ("a1", "a2")),
                         Question("B", "how?", ("x", "y"), ("b1", "b2"), "a2")))
    store = ReviewStore(tmp_path / "r.sqlite", tree)
    assert store.record_answer("g", "ann", "A", "a2").next_question == "B"
    assert store.record_answer("g", "ann", "B", "b1").complete
    with pytest.raises(ValueError, match="tree 'mini'"):
        ReviewStore(tmp_path / "r.sqlite", GZ2)


def test_unreached_or_foreign_answers_are_refused(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite", GZ2)
    with pytest.raises(AnswerError, match="not reached"):
        store.record_answer("1", "ann", "Q2", "Class2.1")
    with pytest.raises(AnswerError, match="not an answer of Q1"):
        store.record_answer("1", "ann", "Q1", "Class2.1")
    with pytest.raises(AnswerError, match="no question"):
        store.record_answer("1", "ann", "Q99", "Class1.1")
    assert store.table().empty


def test_changing_an_answer_drops_the_abandoned_branch(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite", GZ2)
    answer_all(store, "1", "ann", SPIRAL)
    assert store.finished("ann") == {"1"}
    rec = store.record_answer("1", "ann", "Q1", "Class1.1")
    assert rec.next_question == "Q7" and not rec.complete
    assert store.answers("1", "ann") == {"Q1": "Class1.1", "Q6": "Class6.2"}
    assert store.finished("ann") == set() and store.in_progress("ann") == ["1"]


def test_wal_and_one_row_per_answer_with_model_version(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite", GZ2)
    answer_all(store, "1", "ann", SMOOTH)
    with sqlite3.connect(tmp_path / "r.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    t = store.table()
    assert list(t.columns) == ["galaxy", "reviewer", "question", "answer", "answered_at", "model_version"]
    assert len(t) == 3 and set(t["model_version"]) == {"m1"}


def test_two_reviewers_add_votes_and_a_rereview_replaces(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite", GZ2)
    answer_all(store, "7", "ann", SMOOTH)
    answer_all(store, "7", "bob", SPIRAL)
    answer_all(store, "7", "cy", SMOOTH)
    answer_all(store, "7", "cy", SPIRAL)  # cy changes their mind: replaces, does not add
    fr = vote_fractions(store.table(), GZ2).loc["7"]
    assert fr["Class1.1"] == pytest.approx(1 / 3) and fr["Class1.2"] == pytest.approx(2 / 3)
    assert fr["Class2.2"] == pytest.approx(2 / 3) and fr["Class10.2"] == pytest.approx(2 / 3)
    assert fr["Class7.1"] == pytest.approx(1 / 3)
    assert fr["Q1_votes"] == 3 and fr["Q7_votes"] == 1 and fr["n_reviewers"] == 3
    # Nobody reached Q8 or Q9: NaN, not 0.
    assert math.isnan(fr["Class8.1"]) and math.isnan(fr["Class9.1"])
    frame = pd.DataFrame([fr[GZ2.columns]], columns=GZ2.columns)
    assert check_labels(frame, GZ2, id_column=None).empty


def test_cant_tell_is_no_vote(tmp_path):
    store = ReviewStore(tmp_path / "r.sqlite", GZ2)
    store.record_answer("1", "ann", "Q1", CANT_TELL)
    store.record_answer("1", "ann", "Q6", "Class6.2")
    answer_all(store, "1", "bob", SMOOTH)
    fr = vote_fractions(store.table(), GZ2).loc["1"]
    assert fr["Class1.1"] == 1.0 and fr["Q1_votes"] == 1 and fr["Q1_cant_tell"] == 1 and fr["Q6_votes"] == 2
    assert store.finished("ann") == {"1"}


def _write_and_die(path: str) -> None:
    store = ReviewStore(path, GZ2)
    store.record_answer("5", "ann", "Q1", "Class1.1")
    store.record_answer("5", "ann", "Q7", "Class7.2")
    import os

    os._exit(1)  # killed mid-review: no clean shutdown, no close


def test_answers_survive_a_killed_writer_and_a_restart(tmp_path):
    db = tmp_path / "r.sqlite"
    ReviewStore(db, GZ2)
    proc = multiprocessing.get_context("fork").Process(target=_write_and_die, args=(str(db),))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 1
    store = ReviewStore(db, GZ2)  # "restart"
    assert store.answers("5", "ann") == {"Q1": "Class1.1", "Q7": "Class7.2"}
    assert store.in_progress("ann") == ["5"]
    assert store.record_answer("5", "ann", "Q6", "Class6.2").complete


def test_export_is_a_catalog_that_training_reads(tmp_path):
    img = tmp_path / "imgs"
    img.mkdir()
    from PIL import Image

    for gid in (11, 12, 13):
        Image.fromarray(np.full((8, 8, 3), gid, np.uint8)).save(img / f"{gid}.png")
    store = ReviewStore(tmp_path / "r.sqlite", GZ2, meta={"catalog": str(img), "id_column": "GalaxyID"})
    answer_all(store, "11", "ann", SMOOTH)
    answer_all(store, "12", "ann", SPIRAL)
    store.record_answer("13", "ann", "Q1", CANT_TELL)  # only "can't tell" on the root: no label, left out
    frame = export_labels(tmp_path / "r.sqlite", tmp_path / "labels.csv")
    assert frame["GalaxyID"].tolist() == [11, 12]
    cat = open_catalog(tmp_path / "labels.csv", require_labels=True)
    assert cat.ids.tolist() == [11, 12] and all(p.endswith(f"{i}.png") for i, p in zip((11, 12), cat.paths))
    assert cat.labels[0, GZ2.columns.index("Class1.1")] == 1.0
    assert np.isnan(cat.labels[0, GZ2.columns.index("Class2.1")])


def test_queue_is_flagged_galaxies_most_doubtful_first():
    names = [q.name for q in GZ2.questions]
    preds = pd.DataFrame(index=pd.Index(["a", "b", "c", "d"], name="galaxy"))
    for n in names:
        preds[f"{n}_reach"] = 1.0 if n in ("Q1", "Q6") else 0.2
        preds[f"{n}_confidence"] = 0.9
        preds[f"{n}_needs_expert"] = False
    preds.loc["a", ["Q1_confidence", "Q1_needs_expert"]] = [0.3, True]   # doubt 0.7 on a root
    preds.loc["b", ["Q8_confidence", "Q8_needs_expert"]] = [0.0, True]   # doubt 1.0 x reach 0.2
    preds.loc["c", ["Q6_confidence", "Q6_needs_expert"]] = [0.1, True]   # doubt 0.9 on a root
    preds["needs_expert"] = preds[[f"{n}_needs_expert" for n in names]].any(axis=1)
    q = build_queue(preds, GZ2)
    assert q.index.tolist() == ["c", "a", "b"]
    assert q["priority"].tolist() == pytest.approx([0.9, 0.7, 0.2])
    assert build_queue(preds, GZ2, question="Q1").index.tolist() == ["a"]


def test_reviewers_writing_at_once_lose_nothing(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    store = ReviewStore(tmp_path / "r.sqlite", GZ2)

    def review(reviewer: str) -> None:
        for g in range(6):
            answer_all(store, str(g), reviewer, SMOOTH if g % 2 else SPIRAL)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(review, ["ann", "bob", "cy", "dee"]))
    t = store.table()
    assert len(t) == 4 * 3 * (len(SPIRAL) + len(SMOOTH))
    assert all(store.finished(r) == {str(g) for g in range(6)} for r in ("ann", "bob", "cy", "dee"))
