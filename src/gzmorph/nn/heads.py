"""The output head: what the last linear layer's raw outputs mean.

``"fractions"`` (the paper): ReLU, then the tree constraint gives the answer fractions.
``"dirichlet"``: the outputs are Dirichlet concentrations per answer
(``softplus + MIN_CONCENTRATION``, so always positive); a question's concentrations
describe a distribution over the crowd's split of that question, and their normalised
means, scaled down the tree, are the predicted fractions (so the tree's sums hold for the
means exactly as for the paper's head). Trained with the Dirichlet-multinomial loss of
:mod:`gzmorph.training.losses` on vote counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["OUTPUTS", "MIN_CONCENTRATION", "concentrations", "finish"]

OUTPUTS = ("fractions", "dirichlet")
#: Floor of every concentration: keeps lgamma finite and the means well defined.
MIN_CONCENTRATION = 1e-2


def concentrations(raw: torch.Tensor) -> torch.Tensor:
    """Positive Dirichlet concentrations ``(B, n_answers)`` from raw outputs."""
    return F.softplus(raw) + MIN_CONCENTRATION


def finish(raw: torch.Tensor, constraint: torch.nn.Module, output: str, constrain: bool = True,
           want_concentrations: bool = False) -> torch.Tensor:
    """The network's output from the raw outputs ``(B, n_answers)``.

    Parameters
    ----------
    raw : Tensor
    constraint : TreeConstraint
    output : {"fractions", "dirichlet"}
    constrain : bool
        ``"fractions"`` only: ``False`` clips to [0, 1] instead (the paper's first
        examples); a Dirichlet head always gives constrained means.
    want_concentrations : bool
        Return the concentrations instead of the fractions (Dirichlet head only).
    """
    if output == "dirichlet":
        alpha = concentrations(raw)
        # alpha > 0: the constraint's ReLU keeps it, so the fractions are the normalised means.
        return alpha if want_concentrations else constraint(alpha)
    if want_concentrations:
        raise ValueError("concentrations need a model with the 'dirichlet' output head")
    return constraint(raw) if constrain else raw.clamp(0.0, 1.0)
