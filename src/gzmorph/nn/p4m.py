"""The ``"p4m"`` family: group-equivariant convolutions for D4 (Cohen & Welling 2016).

Every feature map exists in 8 orientations (one per group element, orientation axis
minor: channel ``c * 8 + g``); a layer's filters are shared by all 8 (transformed,
with the orientation axis permuted), so turning or mirroring the input turns or
mirrors every map and permutes the orientation axis.  Averaging over space and
orientations at the end gives exactly invariant features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gzmorph.nn.d4 import D4_ORDER, d4_tables, d4_transform

__all__ = ["LiftConv", "GroupConv", "GroupBatchNorm", "P4M"]


class LiftConv(nn.Module):
    """Image -> D4 feature maps: one filter bank, applied in its 8 orientations.

    Output channel ``c * 8 + g`` is the input correlated with ``T_g(W_c)``.
    """

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, k, k))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def expanded_weight(self) -> torch.Tensor:
        w = torch.stack([d4_transform(self.weight, g) for g in range(D4_ORDER)], 1)  # (C, 8, C_in, k, k)
        return w.flatten(0, 1)  # (8C, C_in, k, k), orientation minor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_like_input(x, self.expanded_weight())


class GroupConv(nn.Module):
    """D4 feature maps -> D4 feature maps (Cohen & Welling's p4m convolution).

    The filter from input orientation ``h`` to output orientation ``g`` is
    ``T_g(W[:, :, g^-1 h])``: turning the input by ``t`` turns every output map by
    ``t`` and moves orientation ``g`` to ``t g``.
    """

    def __init__(self, c_in: int, c_out: int, k: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c_out, c_in, D4_ORDER, k, k))
        # He init with the true fan-in (c_in * 8 * k * k).
        nn.init.kaiming_normal_(self.weight.view(c_out, -1, k), nonlinearity="relu")
        mul, inv = d4_tables()
        perm = [[mul[inv[g]][h] for h in range(D4_ORDER)] for g in range(D4_ORDER)]
        self.register_buffer("perm", torch.tensor(perm), persistent=False)

    def expanded_weight(self) -> torch.Tensor:
        w = torch.stack([d4_transform(self.weight, g)[:, :, self.perm[g]] for g in range(D4_ORDER)], 1)
        return w.flatten(2, 3).flatten(0, 1)  # (C, 8, C_in, 8, k, k) -> (8C, 8C_in, k, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _conv_like_input(x, self.expanded_weight())


class GroupBatchNorm(nn.Module):
    """Batch norm whose statistics and affine parameters are shared by a map's 8 orientations."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c8, h, w = x.shape
        y = self.bn(x.reshape(b, c8 // D4_ORDER, D4_ORDER, h, w))  # (B, C, 8, H, W)
        return y.reshape(b, c8, h, w)


def _conv_like_input(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """'Same' convolution with the weight in the input's dtype and memory format (NHWC stays NHWC)."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        w = w.contiguous(memory_format=torch.channels_last)
    return F.conv2d(x, w.to(x.dtype), padding=w.shape[-1] // 2)


class P4M:
    """How a :class:`~gzmorph.nn.symmetric.SymmetricNet` of family ``"p4m"`` runs its stages."""

    name = "p4m"

    def __init__(self, cfg: object) -> None:
        self.cfg = cfg

    def conv_bn(self, c_in: int, c_out: int, k: int, lift: bool = False) -> nn.ModuleList:
        """One convolution and its batch norm: lifting (image -> D4 maps) or group convolution."""
        conv = LiftConv(c_in, c_out, k) if lift else GroupConv(c_in, c_out, k)
        return nn.ModuleList([conv, GroupBatchNorm(c_out)])

    def stage_width(self, i: int, c: int) -> int:
        """Channels (per orientation) the next stage receives from stage ``i`` of ``c`` channels."""
        return c

    def enter(self, img: torch.Tensor) -> torch.Tensor:
        """The crop as the first stage's input: the image itself (lifting makes the orientations)."""
        return img

    def after(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Between stages: nothing beyond pooling."""
        return x

    def orientations(self, x: torch.Tensor, b: int) -> torch.Tensor:
        """Last maps ``(B, 8C, H, W)`` -> features per orientation ``(B, 8, C)`` (space averaged)."""
        return x.unflatten(1, (-1, D4_ORDER)).mean((-2, -1)).transpose(1, 2)  # (B, C, 8, H, W) -> (B, 8, C)

    def visible(self, maps: torch.Tensor, n: int) -> torch.Tensor:
        """The maps shown for ``n`` crops: all orientations, ``(n, 8C, H, W)``."""
        return maps
