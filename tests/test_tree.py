"""The decision tree: structure, output constraint, label checker, agreement."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from gzmorph.tree import GZ2, Question, Tree, TreeConstraint, agreement, check_labels, get_tree

SMALL = Tree(
    "small",
    (
        Question("A", "Round or not?", ("round", "not round"), ("a.round", "a.not")),
        Question("B", "Arms?", ("yes", "no"), ("b.yes", "b.no"), parent="a.not"),
        Question("C", "How many?", ("1", "2", "many"), ("c.1", "c.2", "c.many"), parent="b.yes"),
    ),
)


def test_gz2_structure():
    assert GZ2.n_answers == 37 and GZ2.n_questions == 11
    assert GZ2.columns[0] == "Class1.1" and GZ2.columns[-1] == "Class11.6"
    parents = {q.name: q.parent for q in GZ2.questions}
    assert parents == {
        "Q1": None, "Q2": "Class1.2", "Q3": "Class2.2", "Q4": "Class2.2", "Q5": "Class2.2", "Q6": None,
        "Q7": "Class1.1", "Q8": "Class6.1", "Q9": "Class2.1", "Q10": "Class4.1", "Q11": "Class4.1",
    }
    assert [len(q.answers) for q in GZ2.questions] == [3, 2, 2, 2, 4, 2, 3, 7, 3, 3, 6]
    assert GZ2.question("Q11").answers[-1] == "can't tell"
    assert GZ2.answer_label("Class8.6") == "merger"


def test_tree_validation_and_roundtrip(tmp_path):
    with pytest.raises(ValueError, match="earlier question"):
        Tree("bad", (Question("B", "?", ("y", "n"), ("b1", "b2"), parent="a1"),
                     Question("A", "?", ("y", "n"), ("a1", "a2"))))
    with pytest.raises(ValueError, match="unique"):
        Tree("dup", (Question("A", "?", ("y", "n"), ("x", "x")),))
    with pytest.raises(ValueError, match="columns"):
        Question("A", "?", ("y", "n"), ("a1",))
    path = tmp_path / "tree.json"
    import json

    path.write_text(json.dumps(SMALL.to_dict()))
    assert get_tree(path) == SMALL
    assert get_tree("gz2") is GZ2
    with pytest.raises(ValueError):
        get_tree("nonexistent-tree")


def _assert_consistent(tree: Tree, out: np.ndarray, atol: float = 1e-5) -> None:
    assert np.all(out >= 0) and np.all(out <= 1 + atol)
    reach = tree.reach(out)
    for qi, sl in enumerate(tree.slices):
        np.testing.assert_allclose(out[:, sl].sum(1), reach[:, qi], atol=atol)


@pytest.mark.parametrize("tree", [GZ2, SMALL], ids=["gz2", "small"])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_constraint_satisfies_sums_for_any_input(tree, data):
    x = data.draw(arrays(np.float32, (4, tree.n_answers),
                         elements=st.floats(-1e3, 1e3, width=32, allow_subnormal=False)))
    out = TreeConstraint(tree)(torch.from_numpy(x)).double().numpy()
    _assert_consistent(tree, out)
    assert check_labels(pd.DataFrame(out, columns=tree.columns), tree, tol=1e-5, id_column=None).empty


def test_constraint_values_and_gradients():
    x = torch.randn(64, 37, requires_grad=True)
    out = TreeConstraint(GZ2)(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    # Q2 is the normalised ReLU of its outputs times Class1.2
    r = torch.relu(x.detach())
    q1 = r[:, 0:3] / r[:, 0:3].sum(1, keepdim=True)
    ok = r[:, 0:3].sum(1) > 0
    torch.testing.assert_close(out[ok, 0:3], q1[ok])
    # an all-negative question gets the uniform distribution, not zeros
    z = torch.full((1, 37), -1.0)
    o = TreeConstraint(GZ2)(z)
    torch.testing.assert_close(o[0, 0:3], torch.full((3,), 1 / 3))
    torch.testing.assert_close(o[0, 3:5], torch.full((2,), 1 / 6))


def test_check_labels_reports_rows():
    df = pd.DataFrame({"GalaxyID": [1, 2, 3], "a.round": [0.5, 1.2, 0.3], "a.not": [0.5, 0.0, 0.3],
                       "b.yes": [0.2, 0.0, 0.3], "b.no": [0.2, 0.0, 0.0]})
    rep = check_labels(df, SMALL)
    assert set(zip(rep["id"], rep["kind"], rep["question"])) == {
        (1, "sum", "B"), (2, "range", "A"), (2, "sum", "A"), (3, "sum", "A")}
    row = rep[(rep["id"] == 1) & (rep["question"] == "B")].iloc[0]
    assert row["value"] == pytest.approx(0.4) and row["expected"] == pytest.approx(0.5)
    assert row["row"] == 0
    # missing columns are not checked; NaN values are skipped
    assert check_labels(df[["GalaxyID", "b.yes"]], SMALL).empty


def test_agreement_known_values():
    assert agreement(np.array([1.0, 0, 0])) == pytest.approx(1.0)
    assert agreement(np.array([0.25, 0.25, 0.25, 0.25])) == pytest.approx(0.0, abs=1e-12)
    p = np.array([0.5, 0.5, 0.0])
    assert agreement(p) == pytest.approx(1 - math.log(2) / math.log(3))
    # renormalised: cumulative probabilities of a question reached with p=0.2
    assert agreement(0.2 * p) == pytest.approx(agreement(p))
    assert np.isnan(agreement(np.zeros(3)))
    np.testing.assert_allclose(agreement(np.array([[1.0, 0], [0.5, 0.5]])), [1.0, 0.0], atol=1e-12)


def test_reach_and_normalise():
    out = TreeConstraint(SMALL)(torch.tensor([[1.0, 3.0, 2.0, 2.0, 1.0, 1.0, 2.0]])).numpy()
    np.testing.assert_allclose(out[0], [0.25, 0.75, 0.375, 0.375, 0.09375, 0.09375, 0.1875], rtol=1e-6)
    np.testing.assert_allclose(SMALL.reach(out)[0], [1.0, 0.75, 0.375], rtol=1e-6)
    np.testing.assert_allclose(SMALL.normalise(out)[0], [0.25, 0.75, 0.5, 0.5, 0.25, 0.25, 0.5], rtol=1e-6)
