"""The configuration of a training run: what a run directory and a model package store.

It sits in the model layer because every reader of a trained model (run directory,
model package, ONNX metadata) rebuilds the network and its preprocessing from it;
the named presets that fill it in are :mod:`gzmorph.training.recipes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gzmorph.config import Config
from gzmorph.data.decode import DEFAULT_SIZE
from gzmorph.data.pixscale import GZ2_PIXEL_SCALE, GZ2_SIDE, HEADER, parse_pixel_scale, scale_column
from gzmorph.nn.augment import AugmentConfig
from gzmorph.nn.model import ModelConfig, model_config_from_dict
from gzmorph.nn.symmetric import SymmetricConfig
from gzmorph.runtime import PRECISIONS

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig(Config):
    """Everything that defines a training run.

    Counts are in *examples* (images drawn, with augmentation) as in the paper, so a
    recipe means the same at any batch size.

    Parameters
    ----------
    model : ModelConfig or SymmetricConfig
        The network (:data:`gzmorph.nn.model.MODEL_PRESETS`, :data:`gzmorph.nn.symmetric.SYMMETRIC_PRESETS`).
    augment : AugmentConfig
        Crops, augmentation and recentring (:mod:`gzmorph.nn.augment`).
    tree : str or dict
        Decision tree: "gz2", a JSON file, or the tree itself (stored resolved in runs).
    optimizer : {"nesterov", "adamw"}
        Nesterov momentum SGD (the paper) or AdamW.
    lr : float
        Peak learning rate.
    momentum : float
        Momentum of the SGD optimizer.
    weight_decay : float
        Weight decay (decoupled with AdamW).
    batch_size : int
        Examples per optimizer step.
    examples : int
        Training examples in all; the learning-rate schedule scales with it.
    schedule : {"step", "cosine"}
        Learning rate divided by lr_decay at each of lr_milestones (the paper), or
        cosine decay after a linear warmup.
    lr_milestones : tuple of float
        Fractions of examples where the step schedule divides the learning rate
        (the paper: 18M and 23M of 25M).
    lr_decay : float
        Factor of each step of the step schedule.
    warmup_examples : int
        Examples of linear warmup of the learning rate.
    clip_examples : int
        Examples during which outputs are clipped to [0, 1] instead of tree-constrained.
    grad_clip : float or None
        Gradient norm clipping; None: off.
    eval_every : int
        Examples between validations (and writes of last.pt).
    val_fraction : float
        Held-out fraction (the last by id unless split_seed).
    split_seed : int or None
        Seed of a random validation split; None: sorted by id, the last fraction held out.
    image_size : int
        Side of the decoded images in pixels.
    eval_batch_size : int
        Images per validation forward pass.
    seed : int
        Random seed (weights, batches, augmentation).
    compile : {"off", "cuda", "always"}
        torch.compile of the training step: never, on CUDA only, or always.
    precision : {"auto", "fast", "fp32", "bf16"}
        "auto": bf16 on CUDA only; "fast": also on CPUs with AVX512-BF16/AMX; or forced.
    predict_precision : {"auto", "fast", "fp32", "bf16"} or None
        What ``gzmorph predict --precision auto`` uses for this run, in the words of
        ``precision``: a recorded property of the preset (:mod:`gzmorph.training.recipes`).
        ``"fast"`` (bf16 also on CPUs with AVX512-BF16/AMX) only where bf16 predictions
        were measured as accurate as fp32; ``"fp32"`` for the ``paper`` presets.  None
        (runs from before the field): the value of the preset with the same network and
        optimizer (:func:`gzmorph.training.recipes.recorded_predict_precision`).
    ema_decay : float
        Weights averaged with this decay per step for validation, best.pt and
        prediction; 0: off.
    init_from : str or None
        Run directory, model package or hf:ORG/NAME whose best weights start this run
        (fine-tuning).
    loss : {mse, dirichlet-multinomial}
        ``mse``: masked squared error on vote fractions (the paper).
        ``dirichlet-multinomial``: the likelihood of vote counts (``Class1.1_votes`` or
        ``Q1_votes`` columns) under a Dirichlet head, masked where a question was not asked.
    assumed_votes : float or None
        With ``dirichlet-multinomial`` on a catalog of fractions only: fractions times
        this many pseudo-votes (GZ2: about 40). Never assumed silently.
    freeze_stages : int
        Fine-tuning (with init_from): keep the first this many stages of the network fixed
        (:mod:`gzmorph.training.finetune`); 0: train everything.
    head_only : bool
        Fine-tuning (with init_from): train only the head (every stage frozen).
    lr_layer_decay : float
        Layer-wise learning-rate decay in (0, 1]: the head trains at the schedule's rate,
        each stage below it at this factor times the rate of the one above; 1: off.
    pixel_scale : float or str
        Arcsec per pixel of the training images at their native side ``pixel_scale_side``
        (a number or a survey: sdss, legacy, decals, hsc, euclid, lsst); with it,
        prediction at a given pixel scale shows galaxies at the angular size they were
        trained at (:mod:`gzmorph.data.pixscale`).  "header" (FITS cutouts only): read
        each cutout's scale from its header (PIXSCALE or WCS), train every image at the
        median field of the set and record that field as a number
        (:mod:`gzmorph.training.header_scale`).  Default: the median scale of the
        GZ2/Kaggle JPEGs, 0.09 at 424 px (they were cut per galaxy at 0.02 petroR90_r
        arcsec/px; measured by ``benchmarks/gz2_pixel_scale.py``).
    pixel_scale_side : int
        The native side (px) of the training images that ``pixel_scale`` refers to; the
        run's field is ``pixel_scale x pixel_scale_side`` arcsec (the 141-px copies of the
        Kaggle images: 0.27 at 141, the same field as 0.09 at 424); with pixel_scale
        "header", the median side of the cutouts (a value given is replaced).
    """

    model: ModelConfig | SymmetricConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    tree: str | dict = "gz2"
    optimizer: str = "nesterov"
    lr: float = 0.04
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 16
    examples: int = 25_000_000
    schedule: str = "step"
    lr_milestones: tuple[float, ...] = (18 / 25, 23 / 25)
    lr_decay: float = 0.1
    warmup_examples: int = 0
    clip_examples: int = 10_000
    grad_clip: float | None = None
    eval_every: int = 100_000
    val_fraction: float = 0.1
    split_seed: int | None = None
    image_size: int = DEFAULT_SIZE
    eval_batch_size: int = 256
    seed: int = 0
    compile: str = "off"
    precision: str = "auto"
    predict_precision: str | None = None
    ema_decay: float = 0.0
    init_from: str | None = None
    loss: str = "mse"
    assumed_votes: float | None = None
    freeze_stages: int = 0
    head_only: bool = False
    lr_layer_decay: float = 1.0
    pixel_scale: float | str = GZ2_PIXEL_SCALE
    pixel_scale_side: int = GZ2_SIDE

    def __post_init__(self) -> None:
        self._check_pixel_scale()
        if isinstance(self.model, dict):
            self.model = model_config_from_dict(self.model)
        if not isinstance(self.model, (ModelConfig, SymmetricConfig)):
            raise ValueError(f"model must be a model configuration (a mapping of its settings), not {self.model!r}")
        if isinstance(self.compile, bool):  # run directories before 0.2 stored a flag meaning "on CUDA"
            self.compile = "cuda" if self.compile else "off"
        if self.compile not in ("off", "cuda", "always"):
            raise ValueError(f"compile must be 'off', 'cuda' or 'always', not {self.compile!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.predict_precision is not None and self.predict_precision not in PRECISIONS:
            raise ValueError(f"predict_precision must be one of {PRECISIONS} or None, not {self.predict_precision!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if isinstance(self.augment, dict):
            self.augment = AugmentConfig.from_dict(self.augment)
        if not isinstance(self.augment, AugmentConfig):
            raise ValueError(f"augment must be a mapping of augmentation settings, not {self.augment!r}")
        self.lr_milestones = tuple(float(m) for m in self.lr_milestones)
        if self.optimizer not in ("nesterov", "adamw"):
            raise ValueError(f"optimizer must be 'nesterov' or 'adamw', not {self.optimizer!r}")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"schedule must be 'step' or 'cosine', not {self.schedule!r}")
        for name in ("lr", "batch_size", "examples", "eval_every", "image_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if any(not 0 < m < 1 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones must be increasing fractions in (0, 1): {self.lr_milestones}")
        if self.clip_examples < 0 or self.warmup_examples < 0:
            raise ValueError("clip_examples and warmup_examples must be >= 0")
        if self.loss not in ("mse", "dirichlet-multinomial"):
            raise ValueError(f"loss must be 'mse' or 'dirichlet-multinomial', not {self.loss!r}")
        if self.assumed_votes is not None and not self.assumed_votes > 0:
            raise ValueError(f"assumed_votes must be positive, got {self.assumed_votes}")
        if self.assumed_votes is not None and self.loss != "dirichlet-multinomial":
            raise ValueError("assumed_votes converts fractions to counts for loss 'dirichlet-multinomial' only")
        if self.loss == "dirichlet-multinomial" and self.model.output != "dirichlet":
            # Counts are modelled by concentrations: the loss implies the Dirichlet head.
            self.model = replace(self.model, output="dirichlet")
        self._check_finetuning()

    def _check_finetuning(self) -> None:
        """Fine-tuning options: typed, in range, and never freezing the whole network."""
        stages = len(getattr(self.model, "channels", None) or getattr(self.model, "conv_channels", ()))
        if isinstance(self.freeze_stages, bool) or int(self.freeze_stages) != self.freeze_stages:
            raise ValueError(f"freeze_stages must be a whole number, got {self.freeze_stages!r}")
        self.freeze_stages = int(self.freeze_stages)
        if not 0 <= self.freeze_stages <= stages:
            raise ValueError(f"freeze_stages={self.freeze_stages} would freeze the whole network, which has "
                             f"{stages} stages and a head: nothing left to train (use 0 to {stages}; "
                             f"{stages} or head_only trains the head alone)" if self.freeze_stages > stages
                             else f"freeze_stages must be >= 0, got {self.freeze_stages}")
        if not isinstance(self.head_only, bool):
            raise ValueError(f"head_only must be true or false, got {self.head_only!r}")
        if self.head_only and self.freeze_stages not in (0, stages):
            raise ValueError(f"head_only freezes all {stages} stages; freeze_stages={self.freeze_stages} "
                             "contradicts it: give one of them")
        if not 0 < self.lr_layer_decay <= 1:
            raise ValueError(f"lr_layer_decay must be in (0, 1] (1: off), got {self.lr_layer_decay}")
        if self.lr_layer_decay != 1 and (self.head_only or self.freeze_stages == stages):
            raise ValueError("lr_layer_decay has nothing to decay when only the head trains")

    def _check_pixel_scale(self) -> None:
        scale = parse_pixel_scale(self.pixel_scale)
        # Per-row scales (column:NAME) are a prediction option: a run records one field.
        if scale is None or scale_column(scale) is not None:
            raise ValueError("pixel_scale of a training run must be a number, a survey name or 'header', "
                             f"not {self.pixel_scale!r}")
        # "header" stays until training has read the FITS headers; the run then stores the number.
        self.pixel_scale = scale
        if int(self.pixel_scale_side) != self.pixel_scale_side or self.pixel_scale_side < 1:
            raise ValueError(f"pixel_scale_side must be a positive number of pixels, got {self.pixel_scale_side!r}")
        self.pixel_scale_side = int(self.pixel_scale_side)

    @property
    def field(self) -> float:
        """The side of the training images in arcsec (what prediction at a pixel scale matches)."""
        if self.pixel_scale == HEADER:
            raise ValueError("pixel_scale 'header': the run's field is known once training has read the FITS headers")
        return float(self.pixel_scale) * self.pixel_scale_side

    @property
    def steps(self) -> int:
        return max(1, self.examples // self.batch_size)


    def override(self, **changes: Any) -> "TrainConfig":
        """A copy with the given (non-None) fields changed, validated again."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
