"""An exponential moving average of a network's weights, for validation and prediction."""

from __future__ import annotations

import copy

import torch

__all__ = ["WeightAverage"]


class WeightAverage:
    """An exponential moving average of a model's weights and floating-point buffers.

    The batch-norm statistics are averaged like the weights (as timm's ``ModelEmaV2``
    does): copying the live statistics would normalise the lagging averaged weights
    with the statistics of other weights.  The effective decay ramps up as
    ``min(decay, (1 + n) / (10 + n))`` over the first updates, so early averages are
    not dominated by the random initial weights.  Validation, ``best.pt`` and
    prediction use the averaged weights.

    Parameters
    ----------
    model : Module
        The network being trained; the average starts as a copy of it.
    decay : float
        Weight of the old average at each update, in [0, 1).
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        """Move the average towards ``model`` after optimizer step ``step``."""
        d = min(self.decay, (1 + step) / (10 + step))
        mine = list(self.model.parameters()) + [b for b in self.model.buffers() if b.is_floating_point()]
        theirs = [p.detach() for p in model.parameters()] + [b for b in model.buffers() if b.is_floating_point()]
        torch._foreach_lerp_(mine, theirs, 1.0 - d)
        for a, b in zip(self.model.buffers(), model.buffers()):
            if not a.is_floating_point():
                a.copy_(b)  # counters such as num_batches_tracked
