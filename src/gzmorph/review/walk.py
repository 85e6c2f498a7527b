"""Walking a decision tree one question at a time, as a Galaxy Zoo volunteer does.

A reviewer's answers for one galaxy are a mapping ``question name -> answer column``
(or :data:`CANT_TELL`).  Which questions are *reached* follows from the answers:
a root question always is, any other question is reached when its parent answer was
chosen.  Questions are visited depth first (a question's follow-up questions come
right after it, then the next root), which is the order Galaxy Zoo asks them in for
GZ2: Q1, then Q7 for a smooth galaxy or Q2 -> Q3, Q4 -> Q10, Q11, Q5 for a disk, then
Q6 -> Q8.  Everything reads the tree, so a custom tree walks the same way.
"""

from __future__ import annotations

from typing import Mapping

from gzmorph.tree import Tree

__all__ = ["CANT_TELL", "AnswerError", "reached_questions", "next_question", "is_complete", "check_answer",
           "prune"]

#: Stored answer of a reviewer who cannot tell; it is no vote, and reaches no follow-up question.
CANT_TELL = "?"


class AnswerError(ValueError):
    """An answer the tree does not allow (unknown question or answer, or a question not reached)."""


def _children(tree: Tree) -> dict[str | None, list[str]]:
    kids: dict[str | None, list[str]] = {}
    for q in tree.questions:
        kids.setdefault(q.parent, []).append(q.name)
    return kids


def reached_questions(tree: Tree, answers: Mapping[str, str]) -> list[str]:
    """The questions reached by ``answers``, in the order they are asked (depth first).

    Answers to questions that are not reached (stale answers of an abandoned branch)
    lead nowhere.
    """
    kids = _children(tree)
    order: list[str] = []

    def visit(name: str) -> None:
        order.append(name)
        chosen = answers.get(name)
        if chosen is None or chosen == CANT_TELL:  # None would look up the roots
            return
        for child in kids.get(chosen, []):
            visit(child)

    for root in kids.get(None, []):
        visit(root)
    return order


def next_question(tree: Tree, answers: Mapping[str, str], after: str | None = None) -> str | None:
    """The question to ask next, or None when every reached question is answered.

    With ``after`` (the question just answered) this is the question that follows it
    in the walk, even if it was answered before: a reviewer who goes back and changes
    an answer walks on from there, seeing (and possibly changing) the later answers.
    """
    order = reached_questions(tree, answers)
    if after in order:
        following = order[order.index(after) + 1:]
        if following:
            return following[0]
    missing = [q for q in order if q not in answers]
    return missing[0] if missing else None


def is_complete(tree: Tree, answers: Mapping[str, str]) -> bool:
    """Whether every reached question has an answer (or a "can't tell")."""
    return all(q in answers for q in reached_questions(tree, answers))


def check_answer(tree: Tree, answers: Mapping[str, str], question: str, answer: str) -> None:
    """Raise :class:`AnswerError` unless ``question`` is reached by ``answers`` and ``answer`` is one of its.

    Parameters
    ----------
    tree : Tree
    answers : mapping
        The reviewer's answers so far for this galaxy.
    question : str
        Question name, e.g. ``"Q2"``.
    answer : str
        Answer column of ``question`` (e.g. ``"Class2.1"``) or :data:`CANT_TELL`.
    """
    try:
        q = tree.question(question)
    except KeyError:
        raise AnswerError(f"tree {tree.name!r} has no question {question!r}") from None
    if answer != CANT_TELL and answer not in q.columns:
        raise AnswerError(f"{answer!r} is not an answer of {question} (answers: {', '.join(q.columns)})")
    if question not in reached_questions(tree, answers):
        raise AnswerError(f"question {question} is not reached by the answers given so far "
                          f"(it follows the answer {q.parent})")


def prune(tree: Tree, answers: Mapping[str, str]) -> dict[str, str]:
    """Only the answers of reached questions (a changed answer abandons its old branch)."""
    order = set(reached_questions(tree, answers))
    return {q: a for q, a in answers.items() if q in order}
