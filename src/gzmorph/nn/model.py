"""The rotation-invariant network of Dieleman, Willett & Dambre (2015) and its variants.

Table 2 of the paper: the 16 viewpoints of every example (:mod:`gzmorph.nn.viewpoints`)
go through one convolutional stack -- 6x6 -> 32, 5x5 -> 64, 3x3 -> 128, 3x3 -> 128
valid convolutions with *untied* biases (one bias per map and position) and ReLU,
2x2 max-pooling after layers 1, 2 and 4 -- as a single batch of ``16 * B`` images.
The 16 feature vectors (512 each) are concatenated (8192) and fed to two maxout
layers of 2048 units (2 linear pieces each), then a linear layer with one output
per answer and the tree's output constraint; dropout 0.5 precedes every dense
layer.  About 42.4M parameters.

The paper's variants are presets of :class:`ModelConfig` (data, not code):
``MODEL_PRESETS[name]``; ``"pooled"`` and ``"small"`` are this project's, not the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gzmorph.config import Config
from gzmorph import config
from gzmorph.nn.head import TreeNet
from gzmorph.nn.symmetric import SymmetricConfig, SymmetricNet
from gzmorph.nn.head import OUTPUTS
from gzmorph.tree import GZ2, Tree, TreeConstraint
from gzmorph.nn.viewpoints import N_VIEWPOINTS, PART_SIZE, extract_viewpoints

__all__ = ["ModelConfig", "MODEL_PRESETS", "GalaxyNet", "count_parameters", "get_model_config", "build_model",
           "to_channels_last", "model_config_from_dict"]

_ACTIVATIONS = ("maxout", "relu")
_MERGES = ("concat", "mean")
_INITS = ("paper", "kaiming")


@dataclass
class ModelConfig(Config):
    """Architecture of a :class:`GalaxyNet`.

    Parameters
    ----------
    conv_channels : tuple of int
        Filters of each convolutional layer.
    conv_kernels : tuple of int
        Filter size of each convolutional layer (valid convolutions, stride 1).
    pool_after : tuple of int
        Indices of the convolutional layers followed by 2x2 max-pooling.
    dense_units : tuple of int
        Units of each hidden dense layer (may be empty: linear output on the features).
    dense_activation : {"maxout", "relu"}
        Nonlinearity of the hidden dense layers.
    maxout_pieces : int
        Linear pieces per maxout unit.
    dropout : float
        Dropout probability before every dense layer (output layer included).
    viewpoint_merge : {"concat", "mean"}
        Concatenate the 16 viewpoint feature vectors (paper) or average them (exactly
        invariant to 90-degree rotations and flips of the crops).
    init : {"paper", "kaiming"}
        ``"paper"``: weights N(0, 0.01) for the convolutions except N(0, 0.1) for the
        last one, N(0, 0.001) for hidden dense layers, N(0, 0.01) for the output;
        biases 0.1 (convolutions), 0.01 (hidden dense), 0.1 (output).
        ``"kaiming"``: He-normal weights and zero biases for convolutions and hidden
        dense layers (robust for narrow networks), the output as in ``"paper"``.
    output : {"fractions", "dirichlet"}
        The output head (:mod:`gzmorph.nn.head`): answer fractions, or Dirichlet
        concentrations whose means are the fractions (for vote counts).
    """

    conv_channels: tuple[int, ...] = (32, 64, 128, 128)
    conv_kernels: tuple[int, ...] = (6, 5, 3, 3)
    pool_after: tuple[int, ...] = (0, 1, 3)
    dense_units: tuple[int, ...] = (2048, 2048)
    dense_activation: str = "maxout"
    maxout_pieces: int = 2
    dropout: float = 0.5
    viewpoint_merge: str = "concat"
    init: str = "paper"
    output: str = "fractions"

    def __post_init__(self) -> None:
        for name in ("conv_channels", "conv_kernels", "pool_after", "dense_units"):
            setattr(self, name, config.int_tuple("ModelConfig", name, getattr(self, name)))
        n = len(self.conv_channels)
        if n == 0 or len(self.conv_kernels) != n:
            raise ValueError(f"need as many conv_kernels as conv_channels (>= 1), got {self.conv_kernels} "
                             f"for {self.conv_channels}")
        if min(self.conv_channels + self.conv_kernels) < 1 or (self.dense_units and min(self.dense_units) < 1):
            raise ValueError("channels, kernel sizes and dense units must be positive")
        if len(set(self.pool_after)) != len(self.pool_after) or any(i not in range(n) for i in self.pool_after):
            raise ValueError(f"pool_after must hold distinct conv layer indices in 0..{n - 1}, got {self.pool_after}")
        for name, allowed in (("dense_activation", _ACTIVATIONS), ("viewpoint_merge", _MERGES), ("init", _INITS),
                              ("output", OUTPUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if int(self.maxout_pieces) != self.maxout_pieces or self.maxout_pieces < 2:
            raise ValueError(f"maxout_pieces must be an integer >= 2, got {self.maxout_pieces}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.spatial_sizes()  # raises when the viewpoints are too small for the stack

    def spatial_sizes(self, in_size: int = PART_SIZE) -> list[tuple[int, int]]:
        """``(after conv, after optional pooling)`` side of each conv layer's maps."""
        sizes, side = [], in_size
        for i, k in enumerate(self.conv_kernels):
            conv = side - k + 1
            side = conv // 2 if i in self.pool_after else conv
            if side < 1:
                raise ValueError(f"conv layer {i + 1} leaves no pixels of a {in_size}-px viewpoint "
                                 f"(kernels {self.conv_kernels}, pooling after {self.pool_after})")
            sizes.append((conv, side))
        return sizes

    @property
    def viewpoint_features(self) -> int:
        """Length of one viewpoint's feature vector (512 in the paper)."""
        return self.conv_channels[-1] * self.spatial_sizes()[-1][1] ** 2


_PAPER = ModelConfig()

#: The paper's network and its variants (Section 7.5), plus a CPU-sized network.
MODEL_PRESETS: dict[str, ModelConfig] = {
    "paper": _PAPER,
    "2dense": replace(_PAPER, dense_units=(2048,)),
    "filters-8433": replace(_PAPER, conv_kernels=(8, 4, 3, 3)),
    # ReLU dense layers as wide as the maxout layers' linear filters (2048 units x 2
    # pieces = 4096): the paper's comparison holds the linear part fixed and changes only
    # the nonlinearity, so the variant is 4096 ReLU units per layer (about 51M parameters).
    "relu-dense": replace(_PAPER, dense_activation="relu", dense_units=(4096, 4096)),
    "conv4-256": replace(_PAPER, conv_channels=(32, 64, 128, 256)),
    # Not one of the paper's variants (its training preset is "pooled", outside the
    # "paper-" family): the 16 viewpoint features averaged instead of concatenated.
    "pooled": replace(_PAPER, viewpoint_merge="mean"),
    # A quarter of the filters and one narrow maxout layer: about 1/9 of the paper's
    # convolution work per image and 1/40 of its parameters, for demos and tests on a
    # 2-core CPU.  He init: with the paper's tiny initial weights this narrow net
    # learns far slower (validation RMSE 0.167 vs 0.135 after 8k examples on GZ2 data).
    "small": replace(_PAPER, conv_channels=(8, 16, 32, 32), dense_units=(256,), init="kaiming"),
}


def model_config_from_dict(d: dict[str, Any]) -> "ModelConfig | SymmetricConfig":
    """A stored model config: a :class:`SymmetricConfig` when it names a ``family``, else a :class:`ModelConfig`."""
    return SymmetricConfig.from_dict(d) if "family" in d else ModelConfig.from_dict(d)


def build_model(cfg: "ModelConfig | SymmetricConfig", tree: Tree = GZ2) -> nn.Module:
    """The network for a model config: the paper's :class:`GalaxyNet` or a :class:`SymmetricNet`."""
    return SymmetricNet(cfg, tree) if isinstance(cfg, SymmetricConfig) else GalaxyNet(cfg, tree)


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put a network in channels-last mode (:meth:`gzmorph.nn.head.TreeNet.to_channels_last`).

    Anything else (an onnxruntime network) holds no torch convolution and is returned as it is.
    """
    return model.to_channels_last() if isinstance(model, TreeNet) else model


def get_model_config(spec: str | dict | ModelConfig) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name, a dict or a config."""
    if isinstance(spec, ModelConfig):
        return spec
    if isinstance(spec, dict):
        return ModelConfig.from_dict(spec)
    if spec in MODEL_PRESETS:
        return MODEL_PRESETS[spec]
    raise ValueError(f"unknown model preset {spec!r}; choose one of {sorted(MODEL_PRESETS)}")


class UntiedConv2d(nn.Module):
    """Valid convolution without bias followed by one learned bias per map *and* position."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, in_size: int) -> None:
        super().__init__()
        out_size = in_size - kernel + 1
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_channels, out_size, out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Cast so a bf16 autocast activation stays bf16 instead of promoting to fp32.
        return self.conv(x) + self.bias.to(x.dtype)


class Dense(nn.Module):
    """Fully connected layer with ReLU or maxout (adjacent outputs form a unit's pieces)."""

    def __init__(self, in_features: int, units: int, activation: str, pieces: int) -> None:
        super().__init__()
        self.units = units
        self.pieces = pieces if activation == "maxout" else 1
        self.linear = nn.Linear(in_features, units * self.pieces)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.pieces == 1:
            return torch.relu(y)
        return y.view(y.shape[0], self.units, self.pieces).amax(-1)  # (B, units * pieces) -> (B, units)


class GalaxyNet(TreeNet):
    """The network: 16 viewpoints -> shared conv stack -> dense layers -> tree constraint.

    Parameters
    ----------
    cfg : ModelConfig or str
        Architecture, or the name of one of :data:`MODEL_PRESETS`.
    tree : Tree
        Decision tree: the number of outputs and the output constraint.
    """

    def __init__(self, cfg: ModelConfig | str = "paper", tree: Tree = GZ2) -> None:
        super().__init__()
        self.cfg = cfg = get_model_config(cfg)
        self.tree = tree
        sizes = cfg.spatial_sizes(PART_SIZE)
        in_ch, in_size, convs = 3, PART_SIZE, []
        for out_ch, k, (conv_size, pooled_size) in zip(cfg.conv_channels, cfg.conv_kernels, sizes):
            convs.append(UntiedConv2d(in_ch, out_ch, k, in_size))
            in_ch, in_size = out_ch, pooled_size
        self.convs = nn.ModuleList(convs)
        self._pool = tuple(i in cfg.pool_after for i in range(len(convs)))
        width = cfg.viewpoint_features * (N_VIEWPOINTS if cfg.viewpoint_merge == "concat" else 1)
        dense = []
        for units in cfg.dense_units:
            dense.append(Dense(width, units, cfg.dense_activation, cfg.maxout_pieces))
            width = units
        self.dense = nn.ModuleList(dense)
        self.output = nn.Linear(width, tree.n_answers)
        self.dropout = nn.Dropout(cfg.dropout)
        self.constraint = TreeConstraint(tree)
        self.reset_parameters()

    # ----------------------------------------------------------------- set-up
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Initialise the weights as ``cfg.init`` says (see :class:`ModelConfig`)."""
        paper = self.cfg.init == "paper"
        for i, layer in enumerate(self.convs):
            if paper:
                layer.conv.weight.normal_(0.0, 0.1 if i == len(self.convs) - 1 else 0.01)
            else:
                nn.init.kaiming_normal_(layer.conv.weight, nonlinearity="relu")
            layer.bias.fill_(0.1 if paper else 0.0)
        for layer in self.dense:
            if paper:
                layer.linear.weight.normal_(0.0, 0.001)
            else:
                nn.init.kaiming_normal_(layer.linear.weight, nonlinearity="relu")
            layer.linear.bias.fill_(0.01 if paper else 0.0)
        self.init_output()

    @property
    def first_layer_weight(self) -> torch.Tensor:
        """Filters of the first convolutional layer, ``(channels, 3, k, k)``."""
        return self.convs[0].conv.weight

    # ---------------------------------------------------------------- forward
    def _conv_stack(self, x: torch.Tensor, record: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The one conv loop; with ``record``, every conv (after ReLU) and pooling output is kept."""
        for i, (layer, pool) in enumerate(zip(self.convs, self._pool), start=1):
            x = torch.relu(layer(x))
            if record is not None:
                record[f"conv{i}"] = x
            if pool:
                x = F.max_pool2d(x, 2)
                if record is not None:
                    record[f"pool{i}"] = x
        return x

    def _merge(self, f: torch.Tensor) -> torch.Tensor:
        """``(16 * B, F)`` viewpoint features -> ``(B, 16 * F)`` or ``(B, F)``."""
        f = f.reshape(N_VIEWPOINTS, -1, f.shape[-1])  # (16, B, F): viewpoint-major rows
        if self.cfg.viewpoint_merge == "mean":
            return f.mean(0)
        return f.transpose(0, 1).reshape(f.shape[1], -1)  # (B, 16 * F), viewpoint 0 first

    def pooled_features(self, crops: torch.Tensor) -> torch.Tensor:
        """The merged viewpoint features before the dense head: ``(B, 16 * F)`` or ``(B, F)``.

        What ``gzmorph embed`` stores for this network: the 16 viewpoints' conv features
        concatenated (or averaged, ``viewpoint_merge="mean"``); invariant only as far as
        the viewpoints are (turns by multiples of 45 degrees permute them).
        """
        # A channels_last model (CUDA fast path) wants NHWC inputs, or cuDNN converts per layer.
        return self._merge(self._conv_stack(self.as_input(extract_viewpoints(crops))).flatten(1))  # (16B, F) -> merged

    def features(self, crops: torch.Tensor) -> torch.Tensor:
        """Last hidden layer ``(B, units)`` (the merged viewpoint features if no dense layer).

        Dropout acts as in the module's mode: call in eval mode for analysis.
        """
        h = self.pooled_features(crops)
        for layer in self.dense:
            h = layer(self.dropout(h))
        return h

    def conv_activations(self, viewpoints: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs of every conv layer (after ReLU) and pooling layer, in order.

        Parameters
        ----------
        viewpoints : Tensor, shape (V, 3, 45, 45)

        Returns
        -------
        dict
            ``{"conv1": (V, 32, 40, 40), "pool1": (V, 32, 20, 20), "conv2": ...}``.
        """
        out: dict[str, torch.Tensor] = {}
        self._conv_stack(viewpoints, record=out)
        return out


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
