"""The prediction form of p4m networks (gzmorph/nn/fused.py) and one-crop rendering."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gzmorph.nn import augment as aug
from gzmorph.nn.fused import FusedP4M, crops_used, fuse_for_prediction
from gzmorph.nn.model import GalaxyNet, ModelConfig
from gzmorph.nn.symmetric import SYMMETRIC_PRESETS, SymmetricNet
from gzmorph.tree import GZ2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def trained_like(cfg, seed: int = 0) -> SymmetricNet:
    """A p4m network in eval mode whose batch norms hold non-trivial statistics and whose head is not flat."""
    torch.manual_seed(seed)
    net = SymmetricNet(cfg, GZ2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
        net.output.weight.normal_(0.0, 0.3)  # outputs that depend on the image
    return net.eval()


def crops_of(n: int, side: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 2, 3, side, side, generator=torch.Generator().manual_seed(seed))


SMALL = replace(SYMMETRIC_PRESETS["p4m"], channels=(4, 8, 8), pool_after=(0, 1), hidden=16)


@pytest.mark.parametrize("changes", [{}, {"blocks": 1}, {"crops": 2}, {"group_pool": "max"}, {"output": "dirichlet"},
                                     {"hidden": 0}])
def test_fused_fp32_equals_the_network(changes):
    net = trained_like(replace(SMALL, **changes))
    crops = crops_of(5, side=24)
    fused = fuse_for_prediction(net)
    assert isinstance(fused, FusedP4M)
    with torch.inference_mode():
        torch.testing.assert_close(fused(crops), net(crops), atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(fused.pooled_features(crops), net.pooled_features(crops), atol=2e-6, rtol=1e-5)
        if changes.get("output") == "dirichlet":
            torch.testing.assert_close(fused(crops, concentrations=True), net(crops, concentrations=True),
                                       atol=2e-5, rtol=1e-5)


def test_fused_preset_network_fp32_and_bf16():
    net = trained_like(SYMMETRIC_PRESETS["p4m"])
    crops = crops_of(8)
    with torch.inference_mode():
        ref = net(crops)
        torch.testing.assert_close(FusedP4M(net)(crops), ref, atol=2e-6, rtol=1e-5)
        low = FusedP4M(net, torch.bfloat16)(crops)
    assert low.dtype == torch.float32
    diff = (low - ref).abs().max().item()
    assert 0 < diff < 0.05  # bf16 is computed (not fp32 again), and close


def test_fused_reads_the_weights_once_and_moves_with_to():
    net = trained_like(SMALL)
    fused = FusedP4M(net)
    crops = crops_of(2, side=24)
    with torch.inference_mode():
        before = fused(crops)
        net.stages[0].entry[0].weight.mul_(2.0)  # a later change to the network is not seen
        torch.testing.assert_close(fused(crops), before)
    fused.to(torch.device("cpu"))
    assert all(w.device.type == "cpu" for w, _ in fused._banks)


def test_fused_is_only_for_p4m_in_eval_mode():
    assert fuse_for_prediction(trained_like(SMALL).train()) is None
    assert fuse_for_prediction(SymmetricNet(SYMMETRIC_PRESETS["cyclic"], GZ2).eval()) is None
    assert fuse_for_prediction(GalaxyNet(ModelConfig(), GZ2).eval()) is None


def test_crops_used():
    assert crops_used(SymmetricNet(SMALL, GZ2)) == 1
    assert crops_used(SymmetricNet(replace(SMALL, crops=2), GZ2)) == 2
    assert crops_used(FusedP4M(trained_like(SMALL))) == 1
    assert crops_used(GalaxyNet(ModelConfig(), GZ2)) == 2


def test_render_one_crop_is_crop_zero_of_two():
    images = torch.randint(0, 256, (3, 40, 40, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cfg = aug.AugmentConfig(out_size=16)
    t = aug.fixed_transforms(3, angle=30.0, scale=1.1, flip=True)
    t.brightness = torch.tensor([0.5, -1.0, 0.0])
    pca = {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.02}
    both = aug.render_crops(images, t, cfg, pca)
    one = aug.render_crops(images, t, cfg, pca, crops=1)
    assert one.shape == (3, 1, 3, 16, 16)
    torch.testing.assert_close(one, both[:, :1])
    with pytest.raises(ValueError, match="crops must be 1 or 2"):
        aug.render_crops(images, t, cfg, pca, crops=3)


def testmax_pool2_equalsmax_pool2d_on_both_layouts():
    from gzmorph.nn.fused import max_pool2

    x = torch.randn(3, 16, 12, 12, generator=torch.Generator().manual_seed(0))
    for t in (x, x.contiguous(memory_format=torch.channels_last), x.bfloat16()):
        torch.testing.assert_close(max_pool2(t), torch.nn.functional.max_pool2d(t, 2), atol=0, rtol=0)
