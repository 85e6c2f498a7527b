"""Crowd labels with known true splits, shared by the calibration tests (evaluation, inference, Ray)."""

from __future__ import annotations

import numpy as np

from gzmorph.inference.calibrator import tempered
from gzmorph.tree import GZ2

VOTES = 40


def simulate(n: int, seed: int, sharpen: float = 2.5):
    """Crowd labels drawn from known splits, and a model that is overconfident by construction.

    Each galaxy has a true split per question; 40 volunteers walk the tree (a question's
    voters are those who chose its parent answer). The "model" knows the true splits but
    raises them to the power ``sharpen``: the right ranking, miscalibrated probabilities.
    """
    rng = np.random.default_rng(seed)
    true = np.zeros((n, GZ2.n_answers))
    crowd = np.zeros((n, GZ2.n_answers))
    model = np.zeros((n, GZ2.n_answers))
    counts = np.zeros((n, GZ2.n_answers))
    for q, sl in zip(GZ2.questions, GZ2.slices):
        k = sl.stop - sl.start
        split = rng.dirichlet(np.full(k, 0.8), size=n)  # (n, k)
        voters = np.full(n, VOTES) if q.parent is None else counts[:, GZ2.columns.index(q.parent)]
        counts[:, sl] = np.stack([rng.multinomial(int(v), s) for v, s in zip(voters, split)])
        reach_true = np.ones(n) if q.parent is None else true[:, GZ2.columns.index(q.parent)]
        reach_model = np.ones(n) if q.parent is None else model[:, GZ2.columns.index(q.parent)]
        true[:, sl] = split * reach_true[:, None]
        model[:, sl] = tempered(split, 1 / sharpen) * reach_model[:, None]
        crowd[:, sl] = counts[:, sl] / VOTES
    return model, crowd, counts
