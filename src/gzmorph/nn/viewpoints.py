"""The 16 viewpoints of Dieleman, Willett & Dambre (2015), by indexing only.

Each of the two 69 x 69 crops and its horizontal mirror image is cut into four
overlapping 45 x 45 corner patches, and each patch is turned by a multiple of 90
degrees so that the galaxy centre sits towards its bottom-right corner: 2 crops x 2
mirrorings x 4 corners = 16 viewpoints sharing one convolutional stack.  Corner
``r`` is the top-left patch of the crop rotated by ``torch.rot90(.., r)``, so
rotating a crop by 90 degrees only permutes its viewpoints, and no pixel is
interpolated.  For 69-px crops the crop centre pixel ``(34, 34)`` is pixel
``(34, 34)`` of every viewpoint.

Viewpoint index ``v = 8 * crop + 4 * mirrored + r`` (the order of the paper's code).
"""

from __future__ import annotations

import torch

__all__ = ["extract_viewpoints", "N_VIEWPOINTS", "PART_SIZE", "viewpoint_index"]

#: Number of viewpoints per example.
N_VIEWPOINTS = 16
#: Side of a viewpoint patch in pixels.
PART_SIZE = 45


def viewpoint_index(crop: int, mirrored: bool, rotation: int) -> int:
    """Index of the viewpoint from ``crop`` (0/1), mirroring and corner ``rotation`` (0-3)."""
    if crop not in (0, 1) or rotation not in range(4):
        raise ValueError(f"crop must be 0 or 1 and rotation 0-3, got {crop}, {rotation}")
    return 8 * crop + 4 * int(bool(mirrored)) + rotation


def extract_viewpoints(crops: torch.Tensor, part_size: int = PART_SIZE) -> torch.Tensor:
    """Cut the 16 viewpoints out of a crops batch.

    Parameters
    ----------
    crops : Tensor, shape (B, 2, C, S, S)
        The two crops of every example (``S >= part_size``; 69 in the paper).
    part_size : int
        Side of the corner patches (45).

    Returns
    -------
    Tensor, shape (16 * B, C, part_size, part_size)
        Viewpoint-major: rows ``v * B .. (v + 1) * B - 1`` hold viewpoint ``v`` of every
        example (see :func:`viewpoint_index`).
    """
    if crops.dim() != 5 or crops.shape[1] != 2 or crops.shape[-1] != crops.shape[-2]:
        raise ValueError(f"crops must have shape (B, 2, C, S, S), got {tuple(crops.shape)}")
    if crops.shape[-1] < part_size:
        raise ValueError(f"crops of {crops.shape[-1]} px are smaller than the {part_size}-px viewpoints")
    p = part_size
    b, c = crops.shape[0], crops.shape[2]
    x = crops.transpose(0, 1)  # (2, B, C, S, S)
    x = torch.stack([x, x.flip(-1)], dim=1)  # (2 crops, 2 mirrorings, B, C, S, S)
    # rot90(x, r)[:p, :p] is the corner that rotation brings to the top left, turned;
    # slicing the corner first rotates p x p pixels instead of S x S.
    dims = (-2, -1)
    parts = [
        x[..., :p, :p],
        torch.rot90(x[..., :p, -p:], 1, dims),
        torch.rot90(x[..., -p:, -p:], 2, dims),
        torch.rot90(x[..., -p:, :p], 3, dims),
    ]
    out = torch.stack(parts, dim=2)  # (2, 2, 4, B, C, p, p)
    return out.reshape(N_VIEWPOINTS * b, c, p, p)  # (16 * B, C, p, p), viewpoint-major
