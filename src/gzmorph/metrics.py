"""The masked squared error: the one definition of RMSE over available labels.

Labels are NaN where a catalog lacks the value; every loss and metric of gzmorph
(training loss, validation, ensemble weights, evaluation, analysis, the demo) sums
squared errors over the present entries only, through :func:`masked_sums`.  It
accepts numpy arrays and torch tensors alike (the training loss stays on the device
and keeps its gradient).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["masked_sums", "masked_rmse", "masked_mse", "rmse_from_sums"]


def masked_sums(pred: Any, target: Any, axis: int | None = None) -> tuple[Any, Any]:
    """Sum of squared errors and count of the entries where ``target`` is not NaN.

    Parameters
    ----------
    pred, target : ndarray or Tensor, same shape
        ``pred`` may itself hold NaN where ``target`` is NaN.
    axis : int, optional
        Reduce over this axis only (e.g. ``0``: per answer column, ``1``: per image).

    Returns
    -------
    (sse, count) : same library as the inputs
    """
    if isinstance(target, torch.Tensor):
        mask = ~torch.isnan(target)
        diff = torch.where(mask, pred.float() - torch.nan_to_num(target.float()), torch.zeros((), device=pred.device))
        dims = () if axis is None else (axis,)
        return diff.square().sum(dim=dims), mask.sum(dim=dims)
    target = np.asarray(target, dtype=np.float64)
    mask = ~np.isnan(target)
    diff = np.where(mask, np.asarray(pred, dtype=np.float64) - np.nan_to_num(target), 0.0)
    return np.square(diff).sum(axis=axis), mask.sum(axis=axis)


def rmse_from_sums(sse: Any, count: Any) -> Any:
    """sqrt(sse / count); NaN where nothing is labelled (numpy) or 0 (torch, count clamped)."""
    if isinstance(sse, torch.Tensor):
        return (sse / count.clamp_min(1)).sqrt()
    sse, count = np.asarray(sse, dtype=np.float64), np.asarray(count)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, np.sqrt(sse / np.maximum(count, 1)), np.nan)
    return float(out) if out.ndim == 0 else out


def masked_rmse(pred: Any, target: Any, axis: int | None = None) -> Any:
    """RMSE over the entries where ``target`` is not NaN (NaN when there are none)."""
    return rmse_from_sums(*masked_sums(pred, target, axis))


def masked_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Training loss: mean squared error over the present label entries (differentiable)."""
    sse, count = masked_sums(pred, target)
    return sse / count.clamp_min(1)
