"""The Galaxy Zoo decision tree as data, its output constraint and a label checker.

A :class:`Tree` is a declarative list of :class:`Question` objects.  Each question
lists its answers (label + catalog column) and, optionally, the column of the
answer that leads to it.  Everything downstream (losses, metrics, output files)
reads the answer count, the column names and the slices from the tree, so a
user-defined tree works end to end.

The Kaggle "Galaxy Challenge" probabilities are *cumulative*: the answers of a
question sum to the probability that a volunteer reached the question, which is
the value of its parent answer (1 for root questions).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from gzmorph.errors import ConfigError

__all__ = [
    "Question",
    "Tree",
    "GZ2",
    "TreeConstraint",
    "check_labels",
    "agreement",
    "get_tree",
]


@dataclass(frozen=True)
class Question:
    """One question of a decision tree.

    Parameters
    ----------
    name : str
        Short identifier, e.g. ``"Q1"``.
    text : str
        The question as volunteers saw it.
    answers : tuple of str
        Answer labels, e.g. ``("smooth", "features or disk", "star or artifact")``.
    columns : tuple of str
        Catalog column of each answer, e.g. ``("Class1.1", "Class1.2", "Class1.3")``.
    parent : str or None
        Column of the answer that leads to this question; ``None`` for a root question
        whose answers sum to one.
    """

    name: str
    text: str
    answers: tuple[str, ...]
    columns: tuple[str, ...]
    parent: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "answers", tuple(self.answers))
        object.__setattr__(self, "columns", tuple(self.columns))
        if len(self.answers) < 2:
            raise ValueError(f"question {self.name!r} needs at least two answers")
        if len(self.answers) != len(self.columns):
            raise ValueError(
                f"question {self.name!r}: {len(self.answers)} answers but {len(self.columns)} columns"
            )


@dataclass(frozen=True)
class Tree:
    """A decision tree: questions, answer columns and which answer leads where.

    Questions must be listed so that every parent answer belongs to an earlier
    question (parents first); the constructor checks this and that column names are
    unique.
    """

    name: str
    questions: tuple[Question, ...]
    # Derived index arrays, filled in __post_init__ (not part of the definition).
    _question_of: np.ndarray = field(init=False, repr=False, compare=False)
    _parent_answer: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "questions", tuple(self.questions))
        cols = [c for q in self.questions for c in q.columns]
        if len(set(cols)) != len(cols):
            raise ValueError(f"tree {self.name!r}: answer columns are not unique")
        names = [q.name for q in self.questions]
        if len(set(names)) != len(names):
            raise ValueError(f"tree {self.name!r}: question names are not unique")
        seen: set[str] = set()
        parent_answer = []
        for q in self.questions:
            if q.parent is not None and q.parent not in seen:
                raise ValueError(
                    f"tree {self.name!r}: parent {q.parent!r} of {q.name} must be an answer "
                    "of an earlier question"
                )
            parent_answer.append(-1 if q.parent is None else cols.index(q.parent))
            seen.update(q.columns)
        question_of = np.repeat(np.arange(len(self.questions)), [len(q.columns) for q in self.questions])
        object.__setattr__(self, "_question_of", question_of)
        object.__setattr__(self, "_parent_answer", np.asarray(parent_answer, dtype=np.int64))

    # ------------------------------------------------------------------ structure
    @property
    def columns(self) -> list[str]:
        """All answer columns in tree order."""
        return [c for q in self.questions for c in q.columns]

    @property
    def n_answers(self) -> int:
        return len(self._question_of)

    @property
    def n_questions(self) -> int:
        return len(self.questions)

    @property
    def slices(self) -> list[slice]:
        """Slice of each question's answers in the answer vector."""
        out, start = [], 0
        for q in self.questions:
            out.append(slice(start, start + len(q.columns)))
            start += len(q.columns)
        return out

    @property
    def question_of(self) -> np.ndarray:
        """``(n_answers,)`` index of the question each answer belongs to."""
        return self._question_of.copy()

    @property
    def parent_answer(self) -> np.ndarray:
        """``(n_questions,)`` index of each question's parent answer, -1 for roots."""
        return self._parent_answer.copy()

    def question(self, name: str) -> Question:
        for q in self.questions:
            if q.name == name:
                return q
        raise KeyError(f"tree {self.name!r} has no question {name!r}")

    def answer_label(self, column: str) -> str:
        for q in self.questions:
            if column in q.columns:
                return q.answers[q.columns.index(column)]
        raise KeyError(f"tree {self.name!r} has no answer column {column!r}")

    # ------------------------------------------------------------- probabilities
    def reach(self, probs: np.ndarray) -> np.ndarray:
        """Probability that each question is reached.

        Parameters
        ----------
        probs : array, shape (N, n_answers)
            Cumulative answer probabilities (tree order).

        Returns
        -------
        array, shape (N, n_questions)
            The parent answer's value, or 1 for root questions.
        """
        probs = np.asarray(probs, dtype=np.float64)
        out = np.ones((probs.shape[0], self.n_questions))
        has_parent = self._parent_answer >= 0
        out[:, has_parent] = probs[:, self._parent_answer[has_parent]]
        return out

    def normalise(self, probs: np.ndarray) -> np.ndarray:
        """Per-question answer distributions (each question's answers sum to 1).

        Questions whose answers sum to zero become NaN: there is no distribution.
        """
        probs = np.asarray(probs, dtype=np.float64)
        sums = np.zeros((probs.shape[0], self.n_questions))
        np.add.at(sums.T, self._question_of, probs.T)
        denom = sums[:, self._question_of]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(denom > 0, probs / np.where(denom > 0, denom, 1.0), np.nan)

    def output_problems(self, probs: np.ndarray, tol: float = 0.01, sum_tol: float = 0.03) -> np.ndarray:
        """Why each row of model outputs is not a probability vector of this tree (``""``: it is).

        A network's constrained outputs lie in [0, 1] and each question's answers add
        up to its reach (1 for a root).  ``tol`` and ``sum_tol`` allow a few steps of
        bf16's rounding (a bf16 step above 1 is 1.0078); a crafted or broken model (a
        constant 2.0, NaN) is far outside.

        Parameters
        ----------
        probs : array, shape (N, n_answers)

        Returns
        -------
        array of str (object), shape (N,)
            Non-finite values first, then values outside ``[-tol, 1 + tol]``, then sums.
        """
        p = np.asarray(probs, dtype=np.float64)  # (N, A)
        out = np.full(len(p), "", dtype=object)
        finite = np.isfinite(p)
        clean = np.where(finite, p, 0.0)
        sums = np.zeros((len(p), self.n_questions))
        np.add.at(sums.T, self._question_of, clean.T)  # (N, Q)
        sum_bad = np.abs(sums - self.reach(clean)) > sum_tol
        range_bad = (clean < -tol) | (clean > 1 + tol)
        for i in np.flatnonzero(sum_bad.any(axis=1) | range_bad.any(axis=1) | ~finite.all(axis=1)):
            if not finite[i].all():
                j = int(np.flatnonzero(~finite[i])[0])
                out[i] = f"model output not finite ({self.columns[j]} = {p[i, j]})"
            elif range_bad[i].any():
                j = int(np.flatnonzero(range_bad[i])[0])
                out[i] = f"model output outside [0, 1] ({self.columns[j]} = {p[i, j]:.4g})"
            else:
                q = int(np.flatnonzero(sum_bad[i])[0])
                out[i] = (f"model outputs break the tree: {self.questions[q].name} sums to {sums[i, q]:.4g}, "
                          f"not {self.reach(clean[i:i + 1])[0, q]:.4g}")
        return out

    # ----------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "questions": [
                {
                    "name": q.name,
                    "text": q.text,
                    "answers": list(q.answers),
                    "columns": list(q.columns),
                    "parent": q.parent,
                }
                for q in self.questions
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tree":
        return cls(name=d["name"], questions=tuple(Question(**q) for q in d["questions"]))

    @classmethod
    def from_json(cls, path: str | Path) -> "Tree":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _q(name: str, text: str, answers: Sequence[str], parent: str | None = None) -> Question:
    num = name[1:]
    return Question(name, text, tuple(answers), tuple(f"Class{num}.{i + 1}" for i in range(len(answers))), parent)


#: The Galaxy Zoo 2 tree as used by the Kaggle "Galaxy Zoo - The Galaxy Challenge".
GZ2 = Tree(
    "gz2",
    (
        _q("Q1", "Is the galaxy simply smooth and rounded, with no sign of a disk?",
           ["smooth", "features or disk", "star or artifact"]),
        _q("Q2", "Could this be a disk viewed edge-on?", ["yes", "no"], "Class1.2"),
        _q("Q3", "Is there a sign of a bar feature through the centre of the galaxy?",
           ["yes", "no"], "Class2.2"),
        _q("Q4", "Is there any sign of a spiral arm pattern?", ["yes", "no"], "Class2.2"),
        _q("Q5", "How prominent is the central bulge, compared with the rest of the galaxy?",
           ["no bulge", "just noticeable", "obvious", "dominant"], "Class2.2"),
        _q("Q6", "Is there anything odd?", ["yes", "no"]),
        _q("Q7", "How rounded is it?", ["completely round", "in between", "cigar-shaped"], "Class1.1"),
        _q("Q8", "Is the odd feature a ring, or is the galaxy disturbed or irregular?",
           ["ring", "lens or arc", "disturbed", "irregular", "other", "merger", "dust lane"], "Class6.1"),
        _q("Q9", "Does the galaxy have a bulge at its centre? If so, what shape?",
           ["rounded", "boxy", "no bulge"], "Class2.1"),
        _q("Q10", "How tightly wound do the spiral arms appear?", ["tight", "medium", "loose"], "Class4.1"),
        _q("Q11", "How many spiral arms are there?",
           ["1", "2", "3", "4", "more than four", "can't tell"], "Class4.1"),
    ),
)

_TREES = {"gz2": GZ2}


def get_tree(spec: str | Path | dict | Tree) -> Tree:
    """Resolve a tree from a name (``"gz2"``), a JSON file, a dict or a Tree."""
    if isinstance(spec, Tree):
        return spec
    if isinstance(spec, dict):
        return Tree.from_dict(spec)
    if str(spec) in _TREES:
        return _TREES[str(spec)]
    path = Path(spec)
    if path.is_file():
        return Tree.from_json(path)
    raise ConfigError(f"unknown tree {spec!r}: give 'gz2' or a JSON file describing the tree")


class TreeConstraint(nn.Module):
    """Differentiable map from raw network outputs to tree-consistent probabilities.

    ReLU, divide each question by its sum, then multiply each question by the value
    of its (already scaled) parent answer, parents first.  A question whose ReLU
    outputs are all (nearly) zero has no direction to normalise; it gets the uniform
    distribution so that every sum constraint holds exactly for *any* input (the
    paper's ``+1e-12`` would leave such questions summing to 0 instead of their reach).
    """

    def __init__(self, tree: Tree, eps: float = 1e-12) -> None:
        super().__init__()
        self.tree = tree
        self.eps = eps
        self.register_buffer("question_of", torch.as_tensor(tree.question_of), persistent=False)
        counts = np.bincount(tree.question_of, minlength=tree.n_questions)
        self.register_buffer("inv_count", torch.as_tensor(1.0 / counts[tree.question_of], dtype=torch.float32),
                             persistent=False)
        self._parent = [int(p) for p in tree.parent_answer]
        self._slices = tree.slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, n_answers) raw outputs
        x = torch.relu(x)
        sums = x.new_zeros(x.shape[0], self.tree.n_questions).index_add_(1, self.question_of, x)
        sums = sums[:, self.question_of]  # (B, n_answers): each answer's question sum
        ok = sums > self.eps
        # The safe denominator keeps the unused branch finite, so no NaN gradient leaks.
        norm = torch.where(ok, x / torch.where(ok, sums, torch.ones_like(sums)), self.inv_count.to(x.dtype))
        parts: list[torch.Tensor] = []
        for sl, parent in zip(self._slices, self._parent):
            part = norm[:, sl]
            if parent >= 0:
                # parent < sl.start (parents first), so it is already in `parts`
                scaled = torch.cat(parts, dim=1)
                part = part * scaled[:, parent : parent + 1]
            parts.append(part)
        return torch.cat(parts, dim=1)


def check_labels(
    table: pd.DataFrame, tree: Tree = GZ2, tol: float = 1e-3, id_column: str | None = "GalaxyID"
) -> pd.DataFrame:
    """Report rows whose answer values break the tree's rules.

    Parameters
    ----------
    table : DataFrame
        Any subset of the tree's answer columns (missing columns and NaN values are
        not checked).
    tree : Tree
    tol : float
        Allowed deviation of a value from [0, 1] and of a question's sum from its reach.
    id_column : str or None
        Column holding the row's identifier, reported next to the row number.

    Returns
    -------
    DataFrame
        One line per problem with ``row`` (position), ``id``, ``question``, ``kind``
        (``"range"`` or ``"sum"``), ``column``, ``value`` and ``expected``; empty when all
        rows are consistent.
    """
    rows: list[dict[str, Any]] = []
    ids = table[id_column].to_numpy() if id_column and id_column in table else np.arange(len(table))
    present = [c for c in tree.columns if c in table.columns]
    for q in tree.questions:
        for col in q.columns:
            if col not in table.columns:
                continue
            v = table[col].to_numpy(dtype=np.float64)
            bad = np.flatnonzero((v < -tol) | (v > 1 + tol))
            rows += [dict(row=int(i), id=ids[i], question=q.name, kind="range", column=col,
                          value=float(v[i]), expected=float(np.clip(v[i], 0, 1))) for i in bad]
        if not all(c in present for c in q.columns):
            continue
        if q.parent is not None and q.parent not in table.columns:
            continue
        total = table[list(q.columns)].to_numpy(dtype=np.float64).sum(axis=1)
        expected = np.ones(len(table)) if q.parent is None else table[q.parent].to_numpy(dtype=np.float64)
        bad = np.flatnonzero(np.abs(total - expected) > tol)  # NaN compares False: skipped
        rows += [dict(row=int(i), id=ids[i], question=q.name, kind="sum", column=",".join(q.columns),
                      value=float(total[i]), expected=float(expected[i])) for i in bad]
    return pd.DataFrame(rows, columns=["row", "id", "question", "kind", "column", "value", "expected"])


def agreement(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Agreement ``a(p) = 1 - H(p) / log(n)`` of answer distributions.

    ``p`` is renormalised along ``axis`` first; 1 means everybody (or the model) gives
    the same answer, 0 means all ``n`` answers are equally likely.  A vector that sums
    to zero has no distribution and gives NaN.
    """
    p = np.asarray(p, dtype=np.float64)
    n = p.shape[axis]
    total = p.sum(axis=axis, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = np.where(total > 0, np.clip(p, 0, None) / np.where(total > 0, total, 1.0), np.nan)
        plogp = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    h = -plogp.sum(axis=axis)
    out = 1.0 - h / math.log(n)
    return np.where(np.squeeze(total, axis=axis) > 0, out, np.nan)
