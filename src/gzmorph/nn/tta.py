"""Test-time augmentation sets matched to a network's symmetry period.

Averaging a network's outputs over transforms it is already invariant to costs passes and
adds nothing.  What a network is invariant to follows from its recorded configuration
(model config + crop geometry), never from a preset's name:

* the paper's network (:class:`~gzmorph.nn.model.GalaxyNet`) cuts 16 viewpoints from two
  crops, crop 1 turned ``second_crop_angle`` (45) degrees further: every crop is seen in
  its 4 quarter turns and mirrored, so turning the sampling angle by 45 degrees, or
  mirroring, gives the same *set* of viewpoints.  A concatenating network sees them in
  another order (not exactly invariant); an averaging one (``viewpoint_merge="mean"``,
  preset ``pooled``) is exactly invariant.
* a :class:`~gzmorph.nn.symmetric.SymmetricNet` (``p4m``, ``cyclic``) is exactly
  invariant to quarter turns and mirrors of each crop it uses: one crop gives a 90-degree
  period, two crops 45 degrees apart a 45-degree one.  (Crop 1 is rendered for every
  network; ``p4m`` with ``crops=1`` does not use it.)

"Exact" is for turns of the *sampling angle* of the crop warp (what TTA changes): the
crops then hold the same pixels, permuted.  A turned *image* is the same up to
interpolation, except for quarter turns and mirrors, which are exact on the pixel grid.

The named sets (``--tta``), for a network of period ``P``:

``"none"``  the identity.
``"rot"``   ``P / 9`` angles spread evenly over ``[0, P)`` (the paper's 9-degree spacing),
            scale 1, no flip: 5 passes at ``P = 45`` (the paper's network: 0, 9, ..., 36,
            as before), 10 at ``P = 90`` (``p4m``: 0, 9, ..., 81).
``"paper"`` for a network that is not exactly invariant: the paper's 60 (rotations 0, 36,
            ..., 324 x scales 1/1.2, 1, 1.2 x flip or not).  For an exactly invariant one
            the same design reduced by its symmetry: 10 angles spread over ``[0, P)`` x the
            3 scales, flips only if mirroring is not a symmetry (30 passes for ``p4m``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gzmorph.nn import augment as aug
from gzmorph.nn.symmetric import SymmetricConfig

__all__ = ["Symmetry", "network_symmetry", "matched_tta", "run_tta", "ROT_STEP"]

#: Spacing of the ``"rot"`` angles in degrees: the paper's 10 angles (36 degrees apart)
#: fall on 5 offsets 9 degrees apart modulo its 45-degree period.
ROT_STEP = 9.0
_PAPER_ANGLES = 10
_PAPER_SCALES = (1 / 1.2, 1.0, 1.2)


@dataclass(frozen=True)
class Symmetry:
    """What turns and mirrors of the crop warp leave a network's views unchanged.

    Attributes
    ----------
    period : float
        Smallest turn (degrees) of the sampling angle after which the views repeat.
    flip : bool
        Mirroring gives the same views.
    exact : bool
        The output itself is unchanged by those (False: only the set of views repeats,
        in another order, as for the paper's concatenating network).
    """

    period: float
    flip: bool
    exact: bool


def _crop_pair(second_crop_angle: float) -> tuple[float, bool]:
    """Period and flip symmetry of two crops ``second_crop_angle`` apart, each seen in its 8 D4 copies.

    Turning by ``theta`` sends crop 0 to crop 1 and crop 1 to the crop at ``2 theta``,
    which is crop 0 up to a quarter turn only when ``2 theta`` is a multiple of 90; a
    mirror sends crop 1 to the crop at ``-theta``, the same condition.
    """
    theta = second_crop_angle % 90.0
    if math.isclose(theta, 45.0, abs_tol=1e-9):
        return 45.0, True
    if math.isclose(theta, 0.0, abs_tol=1e-9) or math.isclose(theta, 90.0, abs_tol=1e-9):
        return 90.0, True  # crop 1 is crop 0 turned by quarter turns: nothing new
    return 90.0, False  # a turn or mirror that keeps crop 0's orbit moves crop 1 off its own


def network_symmetry(model: Any, augment: aug.AugmentConfig) -> Symmetry:
    """The :class:`Symmetry` of a network from its model config and crop geometry.

    Parameters
    ----------
    model : ModelConfig or SymmetricConfig
        A run's recorded model configuration (``TrainConfig.model``).
    augment : AugmentConfig
        Its crop geometry (``second_crop_angle``).
    """
    if isinstance(model, SymmetricConfig):
        if model.crops == 1:
            return Symmetry(90.0, True, True)
        period, flip = _crop_pair(augment.second_crop_angle)
        return Symmetry(period, flip, True)
    period, flip = _crop_pair(augment.second_crop_angle)  # 16 viewpoints: both crops, 4 turns, mirrored
    return Symmetry(period, flip, getattr(model, "viewpoint_merge", "concat") == "mean")


def _spread(period: float, n: int) -> list[float]:
    """``n`` angles spread evenly over ``[0, period)``, starting at 0."""
    return [period * k / n for k in range(n)]


def matched_tta(name: str, symmetry: Symmetry) -> list[tuple[float, float, bool]]:
    """Test-time set ``name`` (``"none"``, ``"rot"``, ``"paper"``) for a network of this symmetry.

    Returns
    -------
    list of (angle, scale, flip)
        See the module docstring; for the paper's own network (45-degree period, not
        exact) these are exactly :data:`gzmorph.nn.augment.TTA_SETS`.
    """
    if name not in aug.TTA_SETS:
        raise ValueError(f"unknown TTA set {name!r}; choose one of {sorted(aug.TTA_SETS)}")
    if name == "none":
        return [(0.0, 1.0, False)]
    if name == "rot":
        n = max(1, round(symmetry.period / ROT_STEP))
        return [(angle, 1.0, False) for angle in _spread(symmetry.period, n)]
    if not symmetry.exact:
        return list(aug.TTA_SETS["paper"])
    flips = (False,) if symmetry.flip else (False, True)
    return [(angle, s, f) for angle in _spread(symmetry.period, _PAPER_ANGLES) for s in _PAPER_SCALES
            for f in flips]


def run_tta(name: str, run: Any) -> list[tuple[float, float, bool]]:
    """The set ``name`` matched to a loaded run (:class:`~gzmorph.models.rundir.TrainedModel`)."""
    return matched_tta(name, network_symmetry(run.config.model, run.augment))
