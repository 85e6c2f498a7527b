"""Tests of gzmorph.nn.viewpoints: exact pixel correspondence of the 16 viewpoints."""

from __future__ import annotations

import pytest
import torch

from gzmorph.nn.viewpoints import N_VIEWPOINTS, PART_SIZE, extract_viewpoints, viewpoint_index

B, S, P = 3, 69, PART_SIZE


@pytest.fixture
def crops() -> torch.Tensor:
    # Distinct values everywhere, so any misplaced pixel is caught.
    return torch.randperm(B * 2 * 3 * S * S, generator=torch.Generator().manual_seed(0)).float().view(B, 2, 3, S, S)


def view(vp: torch.Tensor, v: int) -> torch.Tensor:
    return vp[v * B : (v + 1) * B]


def test_shape_and_viewpoint_major_order(crops):
    vp = extract_viewpoints(crops)
    assert vp.shape == (N_VIEWPOINTS * B, 3, P, P)
    for c in (0, 1):
        for m in (False, True):
            src = crops[:, c].flip(-1) if m else crops[:, c]
            for r in range(4):
                want = torch.rot90(src, r, dims=(-2, -1))[..., :P, :P]
                assert torch.equal(view(vp, viewpoint_index(c, m, r)), want)


def test_matches_the_paper_code_slicing(crops):
    # Dieleman's MultiRotSliceLayer: slices with reversed ranges + transposes.
    x = crops[:, 0]
    vp = extract_viewpoints(crops)
    parts = [
        x[..., :P, :P],
        x[..., :P, :].flip(-1)[..., :P].transpose(-1, -2),  # input[:, :, :ps, :-ps-1:-1].dimshuffle(0, 1, 3, 2)
        x.flip(-2, -1)[..., :P, :P],  # input[:, :, :-ps-1:-1, :-ps-1:-1]
        x.flip(-2)[..., :P, :P].transpose(-1, -2),  # input[:, :, :-ps-1:-1, :ps].dimshuffle(0, 1, 3, 2)
    ]
    for r, part in enumerate(parts):
        assert torch.equal(view(vp, r), part)


def test_galaxy_centre_sits_bottom_right_in_every_viewpoint(crops):
    vp = extract_viewpoints(crops)
    c = S // 2  # 34: crop centre
    lo = S - P  # 24: the central region shared by all four corners
    for v in range(N_VIEWPOINTS):
        crop, rest = divmod(v, 8)
        mirrored, r = divmod(rest, 4)
        src = crops[:, crop].flip(-1) if mirrored else crops[:, crop]
        assert torch.equal(view(vp, v)[..., c, c], src[..., c, c])
        centre = torch.rot90(src[..., lo:P, lo:P], r, dims=(-2, -1))
        assert torch.equal(view(vp, v)[..., lo:, lo:], centre)


def test_rotating_the_crops_by_90_degrees_permutes_the_viewpoints(crops):
    vp = extract_viewpoints(crops)
    turned = extract_viewpoints(torch.rot90(crops, 1, dims=(-2, -1)))
    for c in (0, 1):
        for r in range(4):
            # unmirrored corners move one step on; mirrored ones one step back
            plain, mirrored = viewpoint_index(c, False, r), viewpoint_index(c, True, r)
            assert torch.equal(view(turned, plain), view(vp, viewpoint_index(c, False, (r + 1) % 4)))
            assert torch.equal(view(turned, mirrored), view(vp, viewpoint_index(c, True, (r - 1) % 4)))


def test_flipping_the_crops_swaps_the_mirrored_viewpoints(crops):
    vp = extract_viewpoints(crops)
    flipped = extract_viewpoints(crops.flip(-1))
    for c in (0, 1):
        for r in range(4):
            assert torch.equal(view(flipped, viewpoint_index(c, True, r)), view(vp, viewpoint_index(c, False, r)))
            assert torch.equal(view(flipped, viewpoint_index(c, False, r)), view(vp, viewpoint_index(c, True, r)))


def test_gradients_flow_and_channels_last_input(crops):
    x = crops.clone().requires_grad_(True)
    extract_viewpoints(x).sum().backward()
    # Every crop pixel lies in at least one viewpoint of each (mirrored or not) copy.
    assert (x.grad >= 2).all()
    cl = crops.reshape(B * 2, 3, S, S).contiguous(memory_format=torch.channels_last).view(B, 2, 3, S, S)
    assert torch.equal(extract_viewpoints(cl), extract_viewpoints(crops))


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(B, 2, C, S, S\)"):
        extract_viewpoints(torch.zeros(2, 3, 3, 69, 69))
    with pytest.raises(ValueError, match="smaller than"):
        extract_viewpoints(torch.zeros(2, 2, 3, 40, 40))
    with pytest.raises(ValueError):
        viewpoint_index(2, False, 0)
