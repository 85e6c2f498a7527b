"""The dihedral group D4 of the square: its 8 elements acting on images, and its tables.

Shared by the symmetry-built families (:mod:`gzmorph.nn.p4m`, :mod:`gzmorph.nn.cyclic`).
"""

from __future__ import annotations

import functools

import torch

__all__ = ["D4_ORDER", "d4_transform", "d4_tables"]

D4_ORDER = 8


def d4_transform(x: torch.Tensor, g: int) -> torch.Tensor:
    """Element ``g`` of D4 acting on the last two axes: mirror if ``g >= 4``, then turn ``g % 4`` x 90 deg."""
    if g >= 4:
        x = torch.flip(x, (-1,))
    return torch.rot90(x, g % 4, dims=(-2, -1)) if g % 4 else x


@functools.lru_cache(maxsize=1)
def d4_tables() -> tuple[tuple[tuple[int, ...], ...], tuple[int, ...]]:
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
