"""Label-efficient fine-tuning: frozen stages, head-only training, layer-wise learning-rate decay.

A run started with ``init_from`` (another run's weights) can keep the first stages of
the network fixed (``freeze_stages``), train the head alone (``head_only``), or train
everything with learning rates that shrink towards the input (``lr_layer_decay``, as
in ULMFiT and BEiT fine-tuning): early filters (edges, colours) carry across surveys,
the head must learn the new survey's mapping to the answers.

The network is cut into ordered *layer groups*, from the input to the output:

* :class:`~gzmorph.nn.symmetric.SymmetricNet` (``p4m``, ``cyclic``): one group per stage
  (``stages.<i>``), then the head (``hidden`` and ``output``);
* :class:`~gzmorph.nn.model.GalaxyNet` (the paper's networks): one group per
  convolutional layer (``convs.<i>``), then the head (the dense layers and ``output``).

Frozen groups get ``requires_grad=False``, are left out of the optimizer and have their
batch-norm layers kept in evaluation mode during training, so their weights and
running statistics stay byte-identical.  With ``lr_layer_decay = d`` the head trains at
the schedule's rate and group ``k`` groups below it at ``d**k`` times that rate.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gzmorph.errors import RunError
from gzmorph.models.trainconfig import TrainConfig

__all__ = ["LayerGroup", "layer_groups", "FineTuning", "prepare_finetuning", "check_init"]

# The module lists whose items are a network's stages, by network class.
_STAGE_LISTS = ("stages", "convs")


@dataclass
class LayerGroup:
    """One group of a network's parameters (input to output order)."""

    name: str
    modules: list[torch.nn.Module]
    params: list[torch.nn.Parameter]


def layer_groups(model: torch.nn.Module) -> list[LayerGroup]:
    """The network's stages in order, then its head (every other parameter).

    Every parameter is in exactly one group.
    """
    stage_list = next((getattr(model, n) for n in _STAGE_LISTS if isinstance(getattr(model, n, None),
                                                                             torch.nn.ModuleList)), None)
    if stage_list is None:
        raise ValueError(f"{type(model).__name__} has no stage list ({' or '.join(_STAGE_LISTS)}): "
                         "cannot freeze or decay its stages")
    groups = [LayerGroup(f"stage{i + 1}", [m], list(m.parameters())) for i, m in enumerate(stage_list)]
    in_stages = {id(p) for g in groups for p in g.params}
    head = [p for p in model.parameters() if id(p) not in in_stages]
    head_modules = [m for name, m in model.named_children() if m is not stage_list]
    return [*groups, LayerGroup("head", head_modules, head)]


@dataclass
class FineTuning:
    """What :func:`prepare_finetuning` decided for a run.

    Attributes
    ----------
    param_groups : list of dict
        Optimizer parameter groups (``params``, ``lr_scale``, ``name``), frozen ones left out;
        ``None`` when nothing is frozen or decayed (one group, as before).
    frozen : list of Module
        Modules whose batch-norm layers stay in evaluation mode while training.
    """

    param_groups: list[dict] | None
    frozen: list[torch.nn.Module]

    def keep_frozen(self) -> None:
        """Put the frozen modules back in evaluation mode (call after ``model.train()``)."""
        for m in self.frozen:
            m.eval()

    def summary(self) -> dict:
        """The record of the run (``config.json``'s data facts): groups, their lr scales, the frozen ones."""
        trained = {g["name"]: g["lr_scale"] for g in self.param_groups or []}
        return {"lr_scales": trained, "frozen_params": sum(p.numel() for m in self.frozen for p in m.parameters())}


def check_init(cfg: TrainConfig) -> None:
    """Refuse freezing without ``init_from`` (called before any work, and again when freezing)."""
    if (cfg.freeze_stages or cfg.head_only) and not cfg.init_from:
        raise RunError("freeze_stages and head_only keep pretrained weights fixed: give init_from (the run to "
                       "fine-tune); without it they would freeze random weights")


def prepare_finetuning(model: torch.nn.Module, cfg: TrainConfig) -> FineTuning:
    """Freeze the groups ``cfg`` asks for and build the optimizer's parameter groups.

    Raises
    ------
    RunError
        When weights would be frozen without ``init_from`` (freezing random weights is a
        mistake, not fine-tuning), or when nothing is left to train.
    """
    if not (cfg.freeze_stages or cfg.head_only or cfg.lr_layer_decay != 1.0):
        return FineTuning(None, [])
    check_init(cfg)
    groups = layer_groups(model)
    n_frozen = len(groups) - 1 if cfg.head_only else cfg.freeze_stages
    frozen, trained = groups[:n_frozen], groups[n_frozen:]
    if not any(p.numel() for g in trained for p in g.params):
        raise RunError(f"nothing left to train: freezing {n_frozen} of {len(groups) - 1} stages leaves "
                       "no parameters")
    for g in frozen:
        for p in g.params:
            p.requires_grad_(False)
    top = len(trained) - 1
    param_groups = [{"params": g.params, "lr_scale": cfg.lr_layer_decay ** (top - k), "name": g.name}
                    for k, g in enumerate(trained) if g.params]
    return FineTuning(param_groups, [m for g in frozen for m in g.modules])
