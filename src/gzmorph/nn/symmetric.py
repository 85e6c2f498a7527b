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

The group is :mod:`gzmorph.nn.d4`; each family is its own module
(:mod:`gzmorph.nn.p4m`, :mod:`gzmorph.nn.cyclic`) and :class:`SymmetricNet` runs
either through one stage loop, with the head shared with
:class:`~gzmorph.nn.model.GalaxyNet` (:class:`~gzmorph.nn.head.TreeNet`).

Both take the augmentation's crops batch ``(B, 2, 3, S, S)`` like
:class:`gzmorph.model.GalaxyNet` and return tree-constrained probabilities.  With
``crops=2`` the features of crop 0 and of crop 1 (turned a further 45 degrees) are
averaged, which adds invariance to 45-degree turns.  Spatial sizes stay
symmetric about the centre ("same" padding, odd kernels, 2x2 pooling of even
sides), so the invariance is exact, not approximate; ``tests/test_symmetric.py``
checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gzmorph import config
from gzmorph.config import Config
from gzmorph.nn.cyclic import Cyclic
from gzmorph.nn.d4 import D4_ORDER, d4_transform
from gzmorph.nn.head import TreeNet
from gzmorph.nn.p4m import P4M
from gzmorph.nn.head import OUTPUTS
from gzmorph.tree import GZ2, Tree, TreeConstraint

__all__ = ["SymmetricConfig", "SymmetricNet", "d4_transform", "D4_ORDER", "SYMMETRIC_PRESETS"]

_FAMILIES = {"p4m": P4M, "cyclic": Cyclic}
_POOLS = ("mean", "max")


@dataclass
class SymmetricConfig(Config):
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
        The output head (:mod:`gzmorph.nn.head`).
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
            raise ValueError(f"SymmetricConfig.family must be one of {tuple(_FAMILIES)}, got {self.family!r}")
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


class Stage(nn.Module):
    """A convolution (changing the width) then ``blocks`` residual 3x3 convolutions of one family."""

    def __init__(self, family: P4M | Cyclic, c_in: int, c_out: int, k: int, blocks: int, lift: bool) -> None:
        super().__init__()
        self.entry = family.conv_bn(c_in, c_out, k, lift)
        self.blocks = nn.ModuleList(family.conv_bn(c_out, c_out, 3) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self.entry
        x = torch.relu(bn(conv(x)))
        for conv, bn in self.blocks:
            x = torch.relu(x + bn(conv(x)))
        return x


class SymmetricNet(TreeNet):
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
        self.family = _FAMILIES[cfg.family](cfg)
        stages, c_in = [], 3
        for i, c in enumerate(cfg.channels):
            k = cfg.stem_kernel if i == 0 else 3
            stages.append(Stage(self.family, c_in, c, k, cfg.blocks, lift=i == 0))
            c_in = self.family.stage_width(i, c)
        self.stages = nn.ModuleList(stages)
        width = c_in  # the last stage's width, times 8 when it is rolled
        self.hidden = nn.Linear(width, cfg.hidden) if cfg.hidden else None
        self.output = nn.Linear(cfg.hidden or width, tree.n_answers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.constraint = TreeConstraint(tree)
        self.init_output()

    @property
    def first_layer_weight(self) -> torch.Tensor:
        """Filters of the first convolution ``(channels, 3, k, k)`` (one orientation for p4m)."""
        return self.stages[0].entry[0].weight

    def _stages(self, x: torch.Tensor, record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The one stage loop: stages, pooling and the family's between-stage step (roll).

        With ``record``, every stage's output (``conv<i>``) and pooling (``pool<i>``) is kept.
        """
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if record is not None:
                record[f"conv{i + 1}"] = x
            if i in self.cfg.pool_after:
                x = F.max_pool2d(x, 2)
                if record is not None:
                    record[f"pool{i + 1}"] = x
            x = self.family.after(i, x)
        return x

    def _encode(self, img: torch.Tensor) -> torch.Tensor:
        """One crop ``(B, 3, S, S)`` -> invariant features ``(B, channels[-1])``."""
        x = self._stages(self.family.enter(self.as_input(img)))
        g = self.family.orientations(x, img.shape[0])  # (B, 8, C)
        return g.amax(1) if self.cfg.group_pool == "max" else g.mean(1)

    def conv_activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of every stage (and pooling) for crops ``(V, 3, S, S)``, in order.

        p4m maps hold all orientations, ``(V, 8C, H, W)`` with the orientation minor;
        for ``"cyclic"`` they are the maps of the unturned copy.
        """
        out: dict[str, torch.Tensor] = {}
        self._stages(self.family.enter(images), record=out)
        return {k: self.family.visible(v, len(images)) for k, v in out.items()}

    def pooled_features(self, crops: torch.Tensor) -> torch.Tensor:
        """The group-pooled features before the head ``(B, channels[-1])`` (x8 for a rolled ``cyclic``).

        Averaged over space and over the 8 orientations (or copies): exactly invariant to
        the input's turns by 90 degrees and flips.  What ``gzmorph embed`` stores.
        """
        self.cfg.check_input(crops.shape[-1])
        h = self._encode(crops[:, 0])
        if self.cfg.crops == 2:
            h = 0.5 * (h + self._encode(crops[:, 1]))
        return h

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``(B, hidden)`` (the pooled features when ``hidden == 0``)."""
        h = self.pooled_features(crops)
        if self.hidden is not None:
            h = torch.relu(self.hidden(self.dropout(h)))
        return h


#: Symmetry-built designs (their training recipes are in :mod:`gzmorph.recipes`).
SYMMETRIC_PRESETS: dict[str, SymmetricConfig] = {
    "p4m": SymmetricConfig(family="p4m", channels=(8, 16, 32, 64)),
    "cyclic": SymmetricConfig(family="cyclic", channels=(8, 16, 32, 64), roll_after=(1,)),
}
