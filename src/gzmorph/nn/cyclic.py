"""The ``"cyclic"`` family: slice / roll / pool (Dieleman, De Fauw & Kavukcuoglu 2016).

The crop is *sliced* into its 8 D4 copies, which go through one ordinary
convolutional stack as a batch (copy-major rows: all images of copy 0, then copy 1...);
*roll* layers stack, for each copy, the re-aligned feature maps of all 8 copies, so
orientations exchange features in the middle of the network; the head *pools* over
copies.
"""

from __future__ import annotations

import torch
from torch import nn

from gzmorph.nn.d4 import D4_ORDER, d4_tables, d4_transform

__all__ = ["Cyclic"]


class Cyclic:
    """How a :class:`~gzmorph.nn.symmetric.SymmetricNet` of family ``"cyclic"`` runs its stages."""

    name = "cyclic"

    def __init__(self, cfg: object) -> None:
        self.cfg = cfg
        mul, inv = d4_tables()
        # roll: slot k of copy g holds copy s = k g, re-aligned into g's frame by T_g T_s^-1.  Turning
        # the input by t makes copy g what copy g t was, with the same slots: the copies permute.
        self.roll = [[(mul[k][g], mul[g][inv[mul[k][g]]]) for k in range(D4_ORDER)] for g in range(D4_ORDER)]

    def conv_bn(self, c_in: int, c_out: int, k: int, lift: bool = False) -> nn.ModuleList:
        """One ordinary 'same' convolution (He init) and its batch norm."""
        conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        return nn.ModuleList([conv, nn.BatchNorm2d(c_out)])

    def stage_width(self, i: int, c: int) -> int:
        """Channels the next stage receives: 8x after a roll."""
        return c * D4_ORDER if i in self.cfg.roll_after else c

    def enter(self, img: torch.Tensor) -> torch.Tensor:
        """Slice: ``(B, 3, S, S)`` -> ``(8B, 3, S, S)``, copy-major."""
        return torch.cat([d4_transform(img, g) for g in range(D4_ORDER)], 0)

    def after(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Roll after the stages of ``roll_after``."""
        return self.roll_copies(x) if i in self.cfg.roll_after else x

    def roll_copies(self, x: torch.Tensor) -> torch.Tensor:
        """``(8B, C, H, W)`` copy-major -> ``(8B, 8C, H, W)``: each copy gains the others, aligned."""
        copies = x.unflatten(0, (D4_ORDER, -1))  # (8, B, C, H, W)
        rolled = [torch.cat([d4_transform(copies[s], t) for s, t in self.roll[g]], 1) for g in range(D4_ORDER)]
        return torch.cat(rolled, 0)

    def orientations(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """Last maps ``(8B, C, H, W)`` -> features per copy ``(B, 8, C)`` (space averaged)."""
        g = x.unflatten(0, (D4_ORDER, b)).mean((-2, -1))  # (8, B, C): pooled over space
        return g.transpose(0, 1)  # (B, 8, C)

    def visible(self, maps: torch.Tensor, n: int) -> torch.Tensor:
        """The maps shown for ``n`` crops: those of copy 0, the crop as given."""
        return maps[:n]
