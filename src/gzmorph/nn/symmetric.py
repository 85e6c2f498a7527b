"""Networks with the symmetry of the problem built in, instead of learned from viewpoints.

A galaxy's morphology does not change when its image is turned by 90 degrees or
mirrored: the dihedral group D4 of the square (8 elements).  The paper's network gets
this invariance approximately, by processing 16 viewpoints separately and learning
to combine them.  The two families here get it exactly, from one crop:

``"p4m"``
    Group-equivariant convolutions (Cohen & Welling 2016) for D4: every feature map
    exists in 8 orientations (one per group element), a layer's filters are shared
    by all 8 (transformed and with the orientation axis permuted), so turning or
    mirroring the input turns or mirrors every feature map and permutes the
    orientation axis.  Averaging over space and orientations at the end gives
    features -- and predictions -- that are exactly invariant.
``"cyclic"``
    The cyclic slice / roll / pool layers of Dieleman, De Fauw & Kavukcuoglu
    (2016): the crop is *sliced* into its 8 D4 copies, which go through one
    ordinary convolutional stack as a batch; *roll* layers stack, for each copy,
    the (re-aligned) feature maps of all 8 copies, so orientations exchange
    features in the middle of the network; the head *pools* over copies.

Both take the augmentation's crops batch ``(B, 2, 3, S, S)`` like
:class:`gzmorph.model.GalaxyNet` and return tree-constrained probabilities.  With
``crops=2`` the features of crop 0 and of crop 1 (turned a further 45 degrees) are
averaged, which adds invariance to 45-degree turns.  Spatial sizes stay
symmetric about the centre ("same" padding, odd kernels, 2x2 pooling of even
sides), so the invariance is exact, not approximate; ``tests/test_symmetric.py``
checks it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gzmorph import config
from gzmorph.nn.heads import OUTPUTS, finish
from gzmorph.tree import GZ2, Tree, TreeConstraint

__all__ = ["SymmetricConfig", "SymmetricNet", "d4_transform", "D4_ORDER", "SYMMETRIC_PRESETS"]

D4_ORDER = 8
_FAMILIES = ("p4m", "cyclic")
_POOLS = ("mean", "max")


def d4_transform(x: torch.Tensor, g: int) -> torch.Tensor:
    """Element ``g`` of D4 acting on the last two axes: mirror if ``g >= 4``, then turn ``g % 4`` x 90 deg."""
    if g >= 4:
        x = torch.flip(x, (-1,))
    return torch.rot90(x, g % 4, dims=(-2, -1)) if g % 4 else x


@functools.lru_cache(maxsize=1)
def _d4_tables() -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
    """Multiplication table ``mul[a][b]`` (T_a after T_b) and inverses, found by acting on a 2x2 grid.

    D4 acts faithfully on the four corners of a square, so a 2x2 array of distinct
    values identifies every element.
    """
    probe = torch.arange(4).reshape(2, 2)
    images = [d4_transform(probe, g) for g in range(D4_ORDER)]

    def which(x: torch.Tensor) -> int:
        return next(g for g, y in enumerate(images) if torch.equal(x, y))

    mul = tuple(tuple(which(d4_transform(images[b], a)) for b in range(D4_ORDER)) for a in range(D4_ORDER))
    inv = tuple(mul[a].index(0) for a in range(D4_ORDER))
    return mul, inv



@dataclass
class SymmetricConfig:
    """Architecture of a :class:`SymmetricNet`.

    Parameters
    ----------
    family : {"p4m", "cyclic"}
        Group convolutions, or D4 slices through an ordinary stack with roll layers.
    channels : tuple of int
        Channels of each stage.  For ``"p4m"`` these are *per orientation*: a stage
        of ``c`` holds ``8 * c`` maps and costs like an ordinary layer of ``8 * c``
        channels.  For ``"cyclic"`` they are the channels of the shared stack, which
        runs on 8 copies.
    blocks : int
        Convolutions per stage after the first (each a residual 3x3 block when > 0).
    stem_kernel : int
        Odd kernel size of the first convolution.
    pool_after : tuple of int
        Stages followed by 2x2 max-pooling (their input side must then be even).
    roll_after : tuple of int
        ``"cyclic"`` only: stages whose output is rolled (8x the channels for the
        next stage's input).
    hidden : int
        Units of the hidden dense layer of the head (0: linear head).
    dropout : float
        Dropout before each dense layer of the head.
    group_pool : {"mean", "max"}
        How the head pools over orientations (space is always averaged).
    crops : {1, 2}
        Use crop 0 only, or average the features of both crops (adds 45-degree invariance).
    output : {"fractions", "dirichlet"}
        The output head (:mod:`gzmorph.nn.heads`).
    """

    family: str = "p4m"
    channels: tuple[int, ...] = (8, 16, 32, 64)
    blocks: int = 0
    stem_kernel: int = 5
    pool_after: tuple[int, ...] = (0, 1, 2)
    roll_after: tuple[int, ...] = ()
    hidden: int = 256
    dropout: float = 0.3
    group_pool: str = "mean"
    crops: int = 1
    output: str = "fractions"

    def __post_init__(self) -> None:
        for name in ("channels", "pool_after", "roll_after"):
            setattr(self, name, config.int_tuple("SymmetricConfig", name, getattr(self, name)))
        n = len(self.channels)
        if self.family not in _FAMILIES:
            raise ValueError(f"SymmetricConfig.family must be one of {_FAMILIES}, got {self.family!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"SymmetricConfig.output must be one of {OUTPUTS}, got {self.output!r}")
        if self.group_pool not in _POOLS:
            raise ValueError(f"SymmetricConfig.group_pool must be one of {_POOLS}, got {self.group_pool!r}")
        if n == 0 or min(self.channels) < 1:
            raise ValueError(f"SymmetricConfig.channels must be positive integers, got {self.channels}")
        for name in ("pool_after", "roll_after"):
            idx = getattr(self, name)
            if len(set(idx)) != len(idx) or any(i not in range(n) for i in idx):
                raise ValueError(f"SymmetricConfig.{name} must hold distinct stage indices in 0..{n - 1}, got {idx}")
        if self.roll_after and self.family != "cyclic":
            raise ValueError("SymmetricConfig.roll_after is for the 'cyclic' family only")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"SymmetricConfig.stem_kernel must be odd (a centred filter), got {self.stem_kernel}")
        if self.blocks < 0 or self.hidden < 0:
            raise ValueError("SymmetricConfig.blocks and hidden must be >= 0")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"SymmetricConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.crops not in (1, 2):
            raise ValueError(f"SymmetricConfig.crops must be 1 or 2, got {self.crops}")

    def check_input(self, side: int) -> None:
        """Raise unless every pooled stage sees an even side (else pooling breaks the symmetry)."""
        for i in range(len(self.channels)):
            if i in self.pool_after:
                if side % 2:
                    raise ValueError(f"stage {i} would pool an odd side ({side} px): the crop size must be "
                                     f"divisible by {2 ** len(self.pool_after)} for exact invariance")
                side //= 2

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SymmetricConfig":
        return config.from_dict(cls, d)


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
        mul, inv = _d4_tables()
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


def _conv_bn(family: str, c_in: int, c_out: int, k: int, lift: bool = False) -> nn.ModuleList:
    if family == "p4m":
        conv = LiftConv(c_in, c_out, k) if lift else GroupConv(c_in, c_out, k)
        return nn.ModuleList([conv, GroupBatchNorm(c_out)])
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False)
    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    return nn.ModuleList([conv, nn.BatchNorm2d(c_out)])


class Stage(nn.Module):
    """A convolution (changing the width) then ``blocks`` residual 3x3 convolutions."""

    def __init__(self, family: str, c_in: int, c_out: int, k: int, blocks: int, lift: bool) -> None:
        super().__init__()
        self.entry = _conv_bn(family, c_in, c_out, k, lift)
        self.blocks = nn.ModuleList(_conv_bn(family, c_out, c_out, 3) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.entry
        x = torch.relu(bn(conv(x)))
        for conv, bn in self.blocks:
            x = torch.relu(x + bn(conv(x)))
        return x


class SymmetricNet(nn.Module):
    """A D4-invariant network on one (or two) crops; see the module docstring.

    Parameters
    ----------
    cfg : SymmetricConfig
    tree : Tree
        Decision tree: the number of outputs and the output constraint.
    """

    def __init__(self, cfg: SymmetricConfig, tree: Tree = GZ2) -> None:
        super().__init__()
        self.cfg, self.tree = cfg, tree
        mul, inv = _d4_tables()
        # roll: slot k of copy g holds copy s = k g, re-aligned into g's frame by T_g T_s^-1.  Turning
        # the input by t makes copy g what copy g t was, with the same slots: the copies permute.
        self._roll = [[(mul[k][g], mul[g][inv[mul[k][g]]]) for k in range(D4_ORDER)] for g in range(D4_ORDER)]
        stages, c_in = [], 3
        for i, c in enumerate(cfg.channels):
            k = cfg.stem_kernel if i == 0 else 3
            stages.append(Stage(cfg.family, c_in, c, k, cfg.blocks, lift=i == 0))
            c_in = c * D4_ORDER if (cfg.family == "cyclic" and i in cfg.roll_after) else c
        self.stages = nn.ModuleList(stages)
        width = c_in  # the last stage's width, times 8 when it is rolled
        self.hidden = nn.Linear(width, cfg.hidden) if cfg.hidden else None
        self.output = nn.Linear(cfg.hidden or width, tree.n_answers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.constraint = TreeConstraint(tree)
        self.channels_last = False  # NHWC activations: see :meth:`to_channels_last`
        with torch.no_grad():
            self.output.weight.normal_(0.0, 0.01)
            self.output.bias.fill_(0.1)

    def to_channels_last(self) -> "SymmetricNet":
        """Run the convolutions on NHWC activations (``Module.to`` cannot: the p4m weights are 5-D)."""
        self.channels_last = True
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.to(memory_format=torch.channels_last)
        return self

    @property
    def first_layer_weight(self) -> torch.Tensor:
        """Filters of the first convolution ``(channels, 3, k, k)`` (one orientation for p4m)."""
        entry = self.stages[0].entry[0]
        return entry.weight

    def _roll_copies(self, x: torch.Tensor) -> torch.Tensor:
        """``(8B, C, H, W)`` copy-major -> ``(8B, 8C, H, W)``: each copy gains the others, aligned."""
        copies = x.unflatten(0, (D4_ORDER, -1))  # (8, B, C, H, W)
        rolled = [torch.cat([d4_transform(copies[s], t) for s, t in self._roll[g]], 1) for g in range(D4_ORDER)]
        return torch.cat(rolled, 0)

    def _encode(self, img: torch.Tensor) -> torch.Tensor:
        """One crop ``(B, 3, S, S)`` -> invariant features ``(B, channels[-1])``."""
        b = img.shape[0]
        x = img.contiguous(memory_format=torch.channels_last) if self.channels_last else img
        if self.cfg.family == "cyclic":
            x = torch.cat([d4_transform(img, g) for g in range(D4_ORDER)], 0)  # slice: (8B, 3, S, S), copy-major
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.cfg.pool_after:
                x = F.max_pool2d(x, 2)
            if self.cfg.family == "cyclic" and i in self.cfg.roll_after:
                x = self._roll_copies(x)
        if self.cfg.family == "cyclic":
            g = x.unflatten(0, (D4_ORDER, b)).mean((-2, -1))  # (8, B, C): pooled over space
            g = g.transpose(0, 1)  # (B, 8, C)
        else:
            g = x.unflatten(1, (-1, D4_ORDER)).mean((-2, -1)).transpose(1, 2)  # (B, C, 8, H, W) -> (B, 8, C)
        return g.amax(1) if self.cfg.group_pool == "max" else g.mean(1)

    def conv_activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of every stage (and pooling) for crops ``(V, 3, S, S)``, in order.

        p4m maps hold all orientations, ``(V, 8C, H, W)`` with the orientation minor;
        for ``"cyclic"`` they are the maps of the unturned copy.
        """
        out: dict[str, torch.Tensor] = {}
        x = images
        if self.cfg.family == "cyclic":
            x = torch.cat([d4_transform(images, g) for g in range(D4_ORDER)], 0)  # (8V, 3, S, S)
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            out[f"conv{i}"] = x
            if i - 1 in self.cfg.pool_after:
                x = out[f"pool{i}"] = F.max_pool2d(x, 2)
            if self.cfg.family == "cyclic" and i - 1 in self.cfg.roll_after:
                x = self._roll_copies(x)
        if self.cfg.family == "cyclic":
            out = {k: v[: len(images)] for k, v in out.items()}  # copy 0: the crop as given
        return out

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``(B, hidden)`` (the pooled features when ``hidden == 0``)."""
        self.cfg.check_input(crops.shape[-1])
        h = self._encode(crops[:, 0])
        if self.cfg.crops == 2:
            h = 0.5 * (h + self._encode(crops[:, 1]))
        if self.hidden is not None:
            h = torch.relu(self.hidden(self.dropout(h)))
        return h

    def forward(self, crops: torch.Tensor, constrain: bool = True, concentrations: bool = False) -> torch.Tensor:
        """Answer probabilities ``(B, n_answers)`` from a crops batch ``(B, 2, 3, S, S)``
        (a Dirichlet head's concentrations with ``concentrations=True``)."""
        out = self.output(self.dropout(self.features(crops))).float()
        return finish(out, self.constraint, self.cfg.output, constrain, concentrations)


#: Symmetry-built designs (their training recipes are in :mod:`gzmorph.recipes`).
SYMMETRIC_PRESETS: dict[str, SymmetricConfig] = {
    "p4m": SymmetricConfig(family="p4m", channels=(8, 16, 32, 64)),
    "cyclic": SymmetricConfig(family="cyclic", channels=(8, 16, 32, 64), roll_after=(1,)),
}
