"""Evaluation metrics against hand-computed values, id matching, files and the CLI."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gzmorph.evaluation.evaluate import UNREACHABLE_THRESHOLD, EvaluationConfig, triage_cut, evaluate
from gzmorph.tree import GZ2, Question, Tree, agreement

SMALL = Tree(
    "small",
    (
        Question("A", "Round?", ("round", "not round"), ("a.round", "a.not")),
        Question("B", "How many arms?", ("1", "2", "many"), ("b.1", "b.2", "b.many"), parent="a.not"),
    ),
)
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "gz2-kaggle-5k"


def tree_probs(rng: np.random.Generator, n: int, tree: Tree = GZ2) -> np.ndarray:
    """Random cumulative answer probabilities that obey the tree's sums."""
    out = np.zeros((n, tree.n_answers))
    for q, sl, parent in zip(tree.questions, tree.slices, tree.parent_answer):
        scale = 1.0 if parent < 0 else out[:, parent : parent + 1]
        out[:, sl] = rng.dirichlet(np.full(len(q.columns), 0.5), size=n) * scale
    return out


def frame(ids, probs, tree: Tree = GZ2, columns=None) -> pd.DataFrame:
    df = pd.DataFrame(np.asarray(probs), columns=tree.columns)
    if columns is not None:
        df = df[columns]
    df.insert(0, "GalaxyID", ids)
    return df


def one_hot(answers, n_answers) -> np.ndarray:
    return np.eye(n_answers)[np.asarray(answers)]


def test_perfect_prediction_gives_zero_rmse_and_full_accuracy():
    rng = np.random.default_rng(0)
    probs = tree_probs(rng, 300)
    df = frame(np.arange(300), probs)
    ev = evaluate(df, df)
    assert ev.rmse == 0.0 and ev.n_matched == 300 and ev.missing_questions == []
    assert (ev.per_question["accuracy"] == 1.0).all() and (ev.per_question["rmse"] == 0).all()
    pr = ev.precision_recall[ev.precision_recall["n_examples"] > 0]
    assert (pr["precision"] == 1).all() and (pr["recall"] == 1).all()
    assert ev.thresholds == {q.name: 0.0 for q in GZ2.questions}
    assert all(c == 1.0 for c in ev.coverage.values())
    # Every bin of agreement and of confidence is perfect too.
    assert (ev.bins["accuracy"] == 1.0).all() and set(ev.bins["bin"]) == set(range(10))


def test_rmse_is_the_kaggle_metric_over_labelled_columns():
    labels = frame([1, 2], [[1.0, 0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.5, 0.5, 0.0]], SMALL)
    preds = frame([1, 2], [[0.8, 0.2, 0.1, 0.1, 0.0], [0.0, 1.0, 0.5, 0.5, 0.0]], SMALL)
    labels.loc[0, "b.1"] = np.nan  # masked, not a zero
    ev = evaluate(preds, labels, tree=SMALL)
    squared = [0.2**2, 0.2**2, 0.1**2, 0.0] + [0.0] * 5  # 9 finite label entries
    assert ev.rmse == pytest.approx(math.sqrt(sum(squared) / 9))
    per_q = ev.per_question.set_index("question")["rmse"]
    assert per_q["A"] == pytest.approx(math.sqrt(0.08 / 4))
    assert per_q["B"] == pytest.approx(math.sqrt(0.01 / 5))


def test_known_confusion_gives_known_precision_and_recall():
    crowd = [0] * 6 + [1] * 4
    model = [0, 0, 0, 0, 0, 1] + [0, 0, 1, 1]
    lab = np.c_[one_hot(crowd, 2) * 0.8 + 0.1, np.zeros((10, 3))]  # (0.9, 0.1) or (0.1, 0.9)
    pred = np.c_[one_hot(model, 2) * 0.6 + 0.2, np.zeros((10, 3))]
    cols = ["a.round", "a.not"]
    ev = evaluate(frame(range(10), pred, SMALL), frame(range(10), lab, SMALL, cols), tree=SMALL)
    assert ev.missing_questions == ["B"]
    row = ev.per_question.set_index("question").loc["A"]
    assert row["accuracy"] == pytest.approx(0.7) and row["n_reached"] == 10 and row["chance"] == 0.5
    pr = ev.precision_recall.set_index("column")
    assert pr.loc["a.round", ["n_examples", "n_predicted", "n_correct"]].tolist() == [6, 7, 5]
    assert pr.loc["a.round", "precision"] == pytest.approx(5 / 7)
    assert pr.loc["a.round", "recall"] == pytest.approx(5 / 6)
    assert pr.loc["a.not", "precision"] == pytest.approx(2 / 3)
    assert pr.loc["a.not", "recall"] == pytest.approx(2 / 4)
    assert list(ev.thresholds) == ["A"]


def test_never_predicted_answer_and_reach_filter():
    # Question B is reached (a.not >= 0.5) by images 0-3 only; image 4 has reach 0.3.
    lab = np.array([
        [0.2, 0.8, 0.8, 0.0, 0.0],
        [0.0, 1.0, 0.0, 1.0, 0.0],
        [0.4, 0.6, 0.0, 0.0, 0.6],
        [0.5, 0.5, 0.5, 0.0, 0.0],
        [0.7, 0.3, 0.0, 0.0, 0.3],
    ])
    pred = lab.copy()
    pred[2, 2:] = [0.0, 0.4, 0.2]  # crowd says "many", model "2"
    pred[4, 2:] = [0.3, 0.0, 0.0]  # wrong, but not reached: does not count
    ev = evaluate(frame(range(5), pred, SMALL), frame(range(5), lab, SMALL), tree=SMALL)
    row = ev.per_question.set_index("question").loc["B"]
    assert row["n_reached"] == 4 and row["accuracy"] == pytest.approx(3 / 4)
    pr = ev.precision_recall[ev.precision_recall["question"] == "B"].set_index("answer")
    assert pr.loc["many", "never_predicted"] and np.isnan(pr.loc["many", "precision"])
    assert pr.loc["many", "recall"] == 0.0 and pr.loc["many", "n_examples"] == 1
    assert pr.loc["2", "precision"] == pytest.approx(0.5) and pr.loc["2", "recall"] == 1.0
    assert not pr.loc["1", "never_predicted"]


def test_triage_threshold_on_a_constructed_case():
    conf = np.linspace(1.0, 0.1, 10)  # already most confident first
    correct = np.array([1, 1, 1, 1, 0, 1, 1, 0, 0, 0], dtype=bool)
    # Accuracy of the k most confident: 1, 1, 1, 1, .8, .83, .857, .75, .67, .6
    result, curve = triage_cut(conf, correct, target=0.8)
    assert result["coverage"] == pytest.approx(0.7)
    assert result["threshold"] == pytest.approx((conf[6] + conf[7]) / 2)
    assert result["accuracy_kept"] == pytest.approx(6 / 7)
    assert len(curve) == 10 and curve["fraction_to_experts"].iloc[0] == pytest.approx(0.9)
    assert curve["accuracy"].iloc[-1] == pytest.approx(0.6) and curve["threshold"].iloc[-1] == 0.0
    # The most confident image is wrong: no cut reaches 100%.
    result, _ = triage_cut(conf, ~correct | (np.arange(10) > 0), target=1.0)
    assert result["threshold"] == UNREACHABLE_THRESHOLD and result["coverage"] == 0.0
    # Tied confidences are kept or rejected together.
    tied = np.array([0.9, 0.5, 0.5, 0.1])
    result, curve = triage_cut(tied, np.array([1, 1, 0, 1], dtype=bool), target=0.9)
    assert result["coverage"] == 0.25 and result["threshold"] == pytest.approx(0.7)
    assert len(curve) == 3  # cuts after 1, 3 and 4 images


def test_triage_through_evaluate_matches_predicted_confidence():
    # 2-answer question: model confidence falls as p moves towards 0.5; crowd answer 0 or 1.
    p = np.linspace(0.99, 0.6, 10)
    crowd = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1]
    pred = np.c_[p, 1 - p, np.zeros((10, 3))]
    lab = np.c_[one_hot(crowd, 2), np.zeros((10, 3))]
    ev = evaluate(frame(range(10), pred, SMALL), frame(range(10), lab, SMALL, ["a.round", "a.not"]),
                  tree=SMALL, target_accuracy=0.99)
    conf = agreement(pred[:, :2])
    assert ev.coverage["A"] == pytest.approx(0.8)
    assert ev.thresholds["A"] == pytest.approx((conf[7] + conf[8]) / 2)
    assert ((conf >= ev.thresholds["A"]) == (np.arange(10) < 8)).all()


def test_bins_rank_by_agreement_and_confidence():
    p = np.linspace(0.99, 0.6, 8)
    crowd_strength = np.linspace(0.55, 1.0, 8)  # agreement rises with the index
    crowd = np.array([1, 1, 0, 0, 0, 0, 0, 0])  # the two least agreed-on images are missed
    lab = np.where(crowd[:, None] == 0, np.c_[crowd_strength, 1 - crowd_strength],
                   np.c_[1 - crowd_strength, crowd_strength])
    pred = np.c_[p, 1 - p]
    small = Tree("one", (Question("A", "?", ("x", "y"), ("x", "y")),))
    ev = evaluate(frame(range(8), pred, small), frame(range(8), lab, small), tree=small, n_bins=2)
    by = ev.bins.set_index(["ranking", "bin"])
    assert by.loc[("agreement", 0), "accuracy"] == 0.5 and by.loc[("agreement", 1), "accuracy"] == 1.0
    assert by.loc[("confidence", 0), "accuracy"] == 1.0 and by.loc[("confidence", 1), "accuracy"] == 0.5
    assert by["n"].tolist() == [4, 4, 4, 4]


def test_ids_in_one_file_only_are_reported_not_dropped():
    rng = np.random.default_rng(1)
    probs = tree_probs(rng, 6)
    preds = frame([1, 2, 3, 4, 5], probs[:5])
    labels = frame(["3", "4", "5", "6"], probs[2:])  # string ids join integer ids
    ev = evaluate(preds, labels)
    assert ev.n_matched == 3 and ev.rmse == 0.0
    assert sorted(map(str, ev.only_in_predictions)) == ["1", "2"]
    assert list(ev.only_in_labels) == ["6"]


def test_bad_inputs_raise_clear_errors(tmp_path):
    rng = np.random.default_rng(2)
    df = frame([1, 2, 3], tree_probs(rng, 3))
    with pytest.raises(ValueError, match=r"duplicate ids \[2\] \(rows \[2\]\)"):
        evaluate(frame([1, 2, 2], tree_probs(rng, 3)), df)
    with pytest.raises(ValueError, match="no id column 'objid'"):
        evaluate(df, df, id_column="objid")
    with pytest.raises(ValueError, match="no id in common"):
        evaluate(frame([7, 8, 9], tree_probs(rng, 3)), df)
    with pytest.raises(ValueError, match=r"labelled answer columns \['Class8.7'\]"):
        evaluate(df.drop(columns=["Class8.7"]), df)
    bad = df.astype({"Class1.2": object})
    bad.loc[1, "Class1.2"] = "oops"
    path = tmp_path / "preds.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"preds.csv: row 1 \(file line 3\), column 'Class1.2'"):
        evaluate(path, df)
    (tmp_path / "preds.txt").write_text("GalaxyID\n1\n")
    with pytest.raises(ValueError, match="unknown table format"):
        evaluate(tmp_path / "preds.txt", df)
    with pytest.raises(ValueError, match="target_accuracy"):
        EvaluationConfig(target_accuracy=1.5)
    with pytest.raises(ValueError, match="n_bins"):
        EvaluationConfig(n_bins=0)


def test_files_are_written_and_thresholds_load_in_predict(tmp_path):
    from gzmorph.inference.table import load_thresholds

    rng = np.random.default_rng(3)
    probs = tree_probs(rng, 120)
    noisy = np.clip(probs + rng.normal(0, 0.05, probs.shape), 0, 1)
    labels = frame(np.arange(120), probs, columns=[c for c in GZ2.columns if c.split(".")[0] in
                                                   ("Class1", "Class2", "Class6", "Class7", "Class8")])
    labels_path = tmp_path / "labels.csv"
    labels.to_csv(labels_path, index=False)
    preds_path = tmp_path / "preds.parquet"
    frame(np.arange(5, 125), noisy).to_parquet(preds_path)
    ev = evaluate(preds_path, labels_path, out=tmp_path / "report")
    out = tmp_path / "report"
    for name in ("metrics.json", "triage_thresholds.json", "per_question.csv", "precision_recall.csv",
                 "triage.csv", "accuracy_bins.csv", "triage_curves.csv", "unmatched_ids.csv", "report.html"):
        assert (out / name).stat().st_size > 0, name
    assert ev.missing_questions == ["Q3", "Q4", "Q5", "Q9", "Q10", "Q11"]
    saved = json.loads((out / "triage_thresholds.json").read_text())
    assert saved["tree"] == "gz2" and saved["target_accuracy"] == 0.99
    assert set(saved["thresholds"]) == set(saved["coverage"]) == {"Q1", "Q2", "Q6", "Q7", "Q8"}
    thresholds, defaulted = load_thresholds(out / "triage_thresholds.json", GZ2)
    assert defaulted == ev.missing_questions and thresholds["Q1"] == pytest.approx(ev.thresholds["Q1"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_matched"] == 115 and metrics["rmse"] == pytest.approx(ev.rmse)
    assert metrics["n_only_in_predictions"] == 5 and metrics["n_only_in_labels"] == 5
    unmatched = pd.read_csv(out / "unmatched_ids.csv")
    assert unmatched["present_in"].value_counts().to_dict() == {"predictions": 5, "labels": 5}
    assert pd.read_csv(out / "per_question.csv")["question"].tolist() == [q.name for q in GZ2.questions]


def test_cli_evaluate(tmp_path, capsys):
    from gzmorph.cli import main

    rng = np.random.default_rng(4)
    df = frame(np.arange(50), tree_probs(rng, 50))
    df.to_csv(tmp_path / "p.csv", index=False)
    df.iloc[:, :6].to_csv(tmp_path / "labels.csv", index=False)  # Q1 and Q2 only
    code = main(["evaluate", "--predictions", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(tmp_path / "rep"), "--target-accuracy", "0.95", "--bins", "5"])
    text = capsys.readouterr().out
    assert code == 0 and "RMSE 0.0000 over 5 answer columns" in text and "not evaluated (no labels): Q3" in text
    assert json.loads((tmp_path / "rep" / "triage_thresholds.json").read_text())["target_accuracy"] == 0.95
    code = main(["evaluate", "--predictions", str(tmp_path / "missing.csv"), "--labels",
                 str(tmp_path / "labels.csv"), "--out", str(tmp_path / "rep2")])
    assert code == 2 and "missing.csv: no such file" in capsys.readouterr().err


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data/gz2-kaggle-5k")
def test_real_kaggle_labels_perfect_predictions():
    labels = pd.read_csv(SHARED / "training_solutions_rev1.csv").iloc[:500]
    preds = labels.reindex(columns=["GalaxyID", *GZ2.columns], fill_value=0.0)
    ev = evaluate(preds, SHARED)
    assert ev.n_matched == 500 and len(ev.only_in_labels) == 4500
    assert ev.rmse == pytest.approx(0.0, abs=1e-6)  # the catalog holds float32 labels
    assert ev.evaluated_questions == ["Q1", "Q2", "Q6", "Q7", "Q8"] and len(ev.rmse_columns) == 17
