"""Training losses: the paper's masked squared error on fractions, and the
Dirichlet-multinomial likelihood of vote counts.

The Dirichlet-multinomial loss (as Zoobot trains on GZ DECaLS counts, Walmsley et al.
2022) treats each question's votes ``x`` (``n`` volunteers) as drawn from a multinomial
whose answer probabilities follow a Dirichlet with the network's concentrations ``alpha``:

    -log p(x | alpha) = -[lgamma(A) - lgamma(n + A) + sum_j lgamma(x_j + alpha_j) - lgamma(alpha_j)]
                        + (terms of x only)

with ``A = sum_j alpha_j``. A question whose counts are NaN (not in the catalog, or not
asked) or zero (nobody reached it) adds nothing. Counts may be fractional (pseudo-counts
from fractions, :func:`gzmorph.data.votes.pseudo_counts`): lgamma does not mind.
"""

from __future__ import annotations

import torch

from gzmorph.metrics import masked_mse
from gzmorph.tree import Tree

__all__ = ["LOSSES", "dirichlet_multinomial_nll", "fraction_loss"]

LOSSES = ("mse", "dirichlet-multinomial")


def dirichlet_multinomial_nll(alpha: torch.Tensor, counts: torch.Tensor, tree: Tree,
                              per_question: bool = False) -> torch.Tensor:
    """Mean over rows of the summed per-question Dirichlet-multinomial negative log-likelihood.

    Parameters
    ----------
    alpha : Tensor, shape (B, n_answers)
        Positive concentrations (a Dirichlet head, :mod:`gzmorph.nn.head`).
    counts : Tensor, shape (B, n_answers)
        Votes per answer; NaN masks the whole question.
    tree : Tree
    per_question : bool
        Return the ``(B, n_questions)`` terms (0 where masked) instead of the mean.
    """
    alpha = alpha.float()
    terms = []
    for sl in tree.slices:
        x, a = counts[:, sl].float(), alpha[:, sl]
        use = torch.isfinite(x).all(dim=1) & (torch.nan_to_num(x).sum(dim=1) > 0)
        x = torch.where(use[:, None], x, torch.zeros_like(x))  # masked rows: finite, no gradient path
        n, total = x.sum(dim=1), a.sum(dim=1)
        ll = (torch.lgamma(total) - torch.lgamma(n + total)
              + (torch.lgamma(x + a) - torch.lgamma(a)).sum(dim=1))
        terms.append(torch.where(use, -ll, torch.zeros_like(ll)))
    nll = torch.stack(terms, dim=1)  # (B, n_questions)
    return nll if per_question else nll.sum(dim=1).mean()


def fraction_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's loss: squared error over the labelled entries (NaN masked)."""
    return masked_mse(pred, target)
