"""The prediction form of a ``p4m`` network: filter banks built once, batch norm folded in.

A :class:`~gzmorph.nn.symmetric.SymmetricNet` of family ``"p4m"`` rebuilds its group
filter banks from the 5-D parameters on every call (8 turned and mirrored copies,
:meth:`~gzmorph.nn.p4m.GroupConv.expanded_weight`) and runs a batch norm after every
convolution; both are for training.  In evaluation mode every stage is a plain
convolution whose filters and per-channel affine map are constants, so
:class:`FusedP4M` expands each bank once, folds the batch norm into it
(``w * gamma / sqrt(var + eps)`` and a bias), keeps the activations channels-last
and pools before the ReLU (they commute: both are monotone), which touches a quarter
of the values.  The head is the network's own (shared, not copied).

``dtype=torch.bfloat16`` stores the banks in bf16 and runs the convolutions in it
(oneDNN uses AMX / AVX512-BF16 where the CPU has them); the pooled features, the head
and the output are fp32.  In fp32 the outputs equal the network's to float rounding
(``tests/nn/test_fused.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gzmorph.nn.d4 import D4_ORDER
from gzmorph.nn.head import finish
from gzmorph.nn.p4m import GroupBatchNorm
from gzmorph.nn.symmetric import SymmetricNet

__all__ = ["FusedP4M", "fuse_for_prediction", "crops_used", "max_pool2"]


def crops_used(net: nn.Module) -> int:
    """How many crops of the ``(B, 2, 3, S, S)`` batch a network reads: 1 or 2 (2 when unknown).

    A ``p4m``/``cyclic`` network with ``crops=1`` reads crop 0 only, so prediction renders
    only that one (:func:`gzmorph.nn.augment.render_crops` with ``crops=1``).
    """
    if isinstance(net, FusedP4M):
        return net.crops
    cfg = getattr(net, "cfg", None)
    return 1 if isinstance(net, SymmetricNet) and cfg.crops == 1 else 2


def _fold(conv: nn.Module, norm: GroupBatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """The expanded filter bank ``(8C, C_in', k, k)`` and bias ``(8C,)`` of conv then batch norm (eval)."""
    bn = norm.bn
    w = conv.expanded_weight().detach().float()
    inv_std = torch.rsqrt(bn.running_var.float() + bn.eps)
    gamma = bn.weight.detach().float() if bn.weight is not None else torch.ones_like(inv_std)
    beta = bn.bias.detach().float() if bn.bias is not None else torch.zeros_like(inv_std)
    # Channel c * 8 + g of the maps is channel c of the norm: (C,) -> (8C,), orientation minor.
    scale = (gamma * inv_std).repeat_interleave(D4_ORDER)
    shift = (beta - bn.running_mean.float() * gamma * inv_std).repeat_interleave(D4_ORDER)
    return w * scale[:, None, None, None], shift


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pooling of even sides as two maxima of strided views: ``F.max_pool2d`` without the
    indices it computes on the CPU, about twice as fast on channels-last maps (equal results)."""
    rows = torch.maximum(x[..., ::2, :], x[..., 1::2, :])  # (B, C, H, W) -> (B, C, H/2, W)
    return torch.maximum(rows[..., ::2], rows[..., 1::2])  # -> (B, C, H/2, W/2)


class FusedP4M(nn.Module):
    """A ``p4m`` :class:`SymmetricNet` for prediction: same outputs, a fraction of the work.

    Parameters
    ----------
    net : SymmetricNet
        Family ``"p4m"``, with batch-norm running statistics; read once (later changes
        to its weights are not seen: build a new one).
    dtype : torch.dtype
        ``torch.float32`` or ``torch.bfloat16``: the dtype of the convolutions.
    """

    def __init__(self, net: SymmetricNet, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if net.cfg.family != "p4m":
            raise ValueError(f"FusedP4M needs a p4m network, got family {net.cfg.family!r}")
        self.cfg, self.dtype, self.crops = net.cfg, dtype, net.cfg.crops
        self.head = net  # its hidden, output and constraint layers (registered, so .to() moves them)
        banks: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for stage in net.stages:
                for conv, norm in [stage.entry, *stage.blocks]:
                    w, b = _fold(conv, norm)
                    banks.append((w.to(dtype).contiguous(memory_format=torch.channels_last), b.to(dtype)))
        self._banks = banks
        self._layout = [len(stage.blocks) for stage in net.stages]
        self.requires_grad_(False)

    def _apply(self, fn, recurse: bool = True):  # .to(device) / .cuda() also move the banks
        super()._apply(fn, recurse)
        self._banks = [(fn(w), fn(b)) for w, b in self._banks]
        return self

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """One crop ``(B, 3, S, S)`` -> invariant features ``(B, channels[-1])`` in fp32."""
        self.cfg.check_input(img.shape[-1])
        x = img.to(self.dtype).contiguous(memory_format=torch.channels_last)
        banks = iter(self._banks)
        for i, blocks in enumerate(self._layout):
            w, b = next(banks)
            x = F.conv2d(x, w, b, padding=w.shape[-1] // 2)
            for _ in range(blocks):  # residual blocks: relu(x + bn(conv(x)))
                x = torch.relu_(x)
                w, b = next(banks)
                x = x + F.conv2d(x, w, b, padding=w.shape[-1] // 2)
            if i in self.cfg.pool_after:
                x = max_pool2(x)  # before the ReLU: max and ReLU commute
            x = torch.relu_(x)
        g = x.float().unflatten(1, (-1, D4_ORDER)).mean((-2, -1))  # (B, 8C, H, W) -> (B, C, 8)
        return g.amax(-1) if self.cfg.group_pool == "max" else g.mean(-1)

    def pooled_features(self, crops: torch.Tensor) -> torch.Tensor:
        """As :meth:`SymmetricNet.pooled_features`: ``(B, channels[-1])``."""
        if self.crops == 1:
            return self.encode(crops[:, 0])
        b = crops.shape[0]
        both = self.encode(crops[:, :2].flatten(0, 1))  # (B, 2, 3, S, S) -> (2B, 3, S, S), one pass
        return both.view(b, 2, -1).mean(1)

    def forward(self, crops: torch.Tensor, constrain: bool = True, concentrations: bool = False) -> torch.Tensor:
        """Answer probabilities ``(B, n_answers)`` from crops ``(B, c, 3, S, S)`` (``c >= crops``)."""
        h, net = self.pooled_features(crops), self.head
        if net.hidden is not None:
            h = torch.relu(net.hidden(h))
        return finish(net.output(h).float(), net.constraint, self.cfg.output, constrain, concentrations)


def fuse_for_prediction(net: nn.Module, dtype: torch.dtype = torch.float32) -> nn.Module | None:
    """The :class:`FusedP4M` of ``net`` when it is a ``p4m`` network in evaluation mode, else None."""
    if not isinstance(net, SymmetricNet) or net.cfg.family != "p4m" or net.training:
        return None
    norms = [norm.bn for stage in net.stages for _, norm in [stage.entry, *stage.blocks]]
    if any(bn.running_mean is None or bn.running_var is None for bn in norms):
        return None  # batch statistics only: nothing to fold
    return FusedP4M(net, dtype)
