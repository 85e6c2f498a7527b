"""What every gzmorph network shares after its features: the tree head, and channels-last.

:class:`TreeNet` is the base of :class:`~gzmorph.nn.model.GalaxyNet` and
:class:`~gzmorph.nn.symmetric.SymmetricNet`.  A subclass builds ``self.output`` (the
linear layer to the tree's answers), ``self.dropout`` and ``self.constraint`` and
defines :meth:`features`; the forward pass from features to probabilities, the
output layer's initialisation and the channels-last mode are defined here, once.

Two output heads (``output`` in the model configs): ``"fractions"`` (the paper): ReLU,
then the tree constraint gives the answer fractions. ``"dirichlet"``: the outputs are
Dirichlet concentrations per answer (``softplus + MIN_CONCENTRATION``, so always
positive); a question's concentrations describe a distribution over the crowd's split
of that question, and their normalised means, scaled down the tree, are the predicted
fractions (so the tree's sums hold for the means exactly as for the paper's head).
Trained with the Dirichlet-multinomial loss of :mod:`gzmorph.training.losses` on vote counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TreeNet", "OUTPUTS", "MIN_CONCENTRATION", "concentrations", "finish"]

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


class TreeNet(nn.Module):
    """Features -> dropout -> linear -> tree constraint (or clipping), for every network."""

    output: nn.Linear
    dropout: nn.Dropout
    constraint: nn.Module
    channels_last: bool = False  # NHWC activations: see :meth:`to_channels_last`

    def features(self, crops: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.no_grad()
    def init_output(self) -> None:
        """The paper's initialisation of the output layer: N(0, 0.01) weights, 0.1 biases."""
        self.output.weight.normal_(0.0, 0.01)
        self.output.bias.fill_(0.1)

    def to_channels_last(self) -> "TreeNet":
        """Run the convolutions on NHWC activations (the CUDA and bf16 fast path).

        Converts the weights of every ``nn.Conv2d`` and makes :meth:`as_input` convert
        the inputs; weights built on the fly (the p4m filter banks, 5-D parameters
        that ``Module.to(memory_format=...)`` refuses) follow their input's format.
        """
        self.channels_last = True
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
        return self

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the memory format the convolutions run in (NHWC after :meth:`to_channels_last`)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, crops: torch.Tensor, constrain: bool = True, concentrations: bool = False) -> torch.Tensor:
        """Answer probabilities ``(B, n_answers)`` from a crops batch ``(B, 2, 3, S, S)``.

        ``constrain=False`` clips the raw outputs to [0, 1] instead of applying the
        tree's constraint (the paper's first 10k training examples);
        ``concentrations=True`` returns a Dirichlet head's concentrations (:func:`finish`).
        """
        out = self.output(self.dropout(self.features(crops))).float()
        return finish(out, self.constraint, self.cfg.output, constrain, concentrations)
