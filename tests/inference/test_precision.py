"""Which precision prediction runs in (gzmorph/inference/precision.py), per preset and CPU.

The CPU's bf16 capability is mocked, so these hold on any machine.  The preset check
(bf16 against fp32 of every preset recorded as bf16-safe) runs on generated galaxies.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from gzmorph import runtime as rt_module
from gzmorph.inference import precision as prec
from gzmorph.inference.ensemble import Ensemble
from gzmorph.inference.precision import BF16_TOLERANCE, run_rule, uses_bf16
from gzmorph.mock.render import render_galaxy
from gzmorph.mock.params import sample_params
from gzmorph.models.rundir import TrainedModel, load_run
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.nn.model import build_model
from gzmorph.runtime import Runtime, cpu_flags, cpu_has_native_bf16, resolve_device
from gzmorph.training.recipes import PRESETS, get_preset, recorded_predict_precision
from gzmorph.tree import GZ2

from discovery_helpers import make_p4m_run
from factories import make_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = Runtime(device=torch.device("cpu"), autocast=False, channels_last=False)
CUDA = Runtime(device=torch.device("cuda"), autocast=True, channels_last=True)  # never computed on here


@pytest.fixture
def native(monkeypatch):
    """Set whether the CPU computes bf16 natively: native(True) / native(False)."""
    def set_native(value: bool) -> None:
        monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: value)
    return set_native


def trained(preset: str, **changes) -> TrainedModel:
    cfg = get_preset(preset).override(**changes) if changes else get_preset(preset)
    net = build_model(cfg.model, GZ2).eval()
    return TrainedModel(model=net, tree=GZ2, augment=cfg.augment, pca={}, image_size=cfg.image_size, config=cfg,
                        step=0, run_dir=Path(preset))


# ------------------------------------------------------------------ the rule
@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_gives_p4m_bf16_only_on_a_bf16_cpu(native, has_bf16):
    native(has_bf16)
    assert uses_bf16(trained("p4m"), "auto", CPU) is has_bf16
    assert uses_bf16(trained("p4m"), "auto", CUDA)


@pytest.mark.parametrize("preset", ["paper", "paper-recentred", "paper-2dense"])
def test_paper_presets_predict_in_fp32_on_every_device_unless_asked(native, preset):
    native(True)
    run = trained(preset)
    assert not uses_bf16(run, "auto", CPU) and not uses_bf16(run, "auto", CUDA)
    assert uses_bf16(run, "fast", CUDA) and uses_bf16(run, "fast", CPU) and uses_bf16(run, "bf16", CPU)


@pytest.mark.parametrize("preset", ["small", "cyclic", "fast"])
def test_unmeasured_presets_keep_bf16_to_cuda(native, preset):
    native(True)
    run = trained(preset)
    assert not uses_bf16(run, "auto", CPU) and uses_bf16(run, "auto", CUDA)
    native(False)
    assert not uses_bf16(run, "fast", CPU) and uses_bf16(run, "fast", CUDA)


def test_explicit_choices_override_the_preset(native):
    native(True)
    p4m = trained("p4m")
    assert not uses_bf16(p4m, "fp32", CPU) and not uses_bf16(p4m, "fp32", CUDA)
    native(False)
    assert uses_bf16(p4m, "bf16", CPU)
    with pytest.raises(ValueError, match="precision must be one of"):
        run_rule(p4m, "half")


def test_an_onnx_network_is_fp32(native):
    native(True)
    run = trained("p4m")
    run.model.is_onnx = True  # what OnnxNet declares
    assert not uses_bf16(run, "bf16", CPU)


def test_a_run_from_before_the_field_takes_its_presets_rule():
    old = TrainConfig.from_dict({k: v for k, v in get_preset("p4m").to_dict().items() if k != "predict_precision"})
    assert old.predict_precision is None and recorded_predict_precision(old) == "fast"
    old_paper = TrainConfig.from_dict({k: v for k, v in get_preset("paper").to_dict().items()
                                       if k not in ("predict_precision", "precision")})
    assert recorded_predict_precision(old_paper) == "fp32"  # not `fast`'s rule: another optimizer
    other = old.override(model=replace(old.model, channels=(4, 8, 8, 8)), predict_precision=None)
    assert recorded_predict_precision(other) == "auto"  # an unmeasured network


def test_the_paper_preset_trains_in_fp32(monkeypatch):
    monkeypatch.setattr(rt_module, "cpu_has_native_bf16", lambda: True)
    assert get_preset("paper").precision == "fp32"
    assert not resolve_device("cpu", precision=get_preset("paper").precision).autocast
    assert resolve_device("cpu", precision="fast").autocast  # the explicit speed path


# ------------------------------------------------------------------ detection
def test_native_bf16_detection_from_torch_probes_or_cpu_flags(monkeypatch, tmp_path):
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False, raising=False)
    assert not cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert cpu_has_native_bf16()
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):  # a torch without the probes
        monkeypatch.delattr(torch.cpu, name)
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16 amx_tile\n")
    monkeypatch.setattr(rt_module, "cpu_flags", lambda: cpu_flags(info))
    assert cpu_has_native_bf16()
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert not cpu_has_native_bf16()
    assert cpu_flags(tmp_path / "missing") == frozenset()


# ------------------------------------------------------------------ the ensemble follows it
def test_ensemble_decides_per_run(native, tmp_path):
    p4m = make_p4m_run(tmp_path / "p4m")
    small = make_run(tmp_path / "small", seed=1)
    native(True)
    ens = Ensemble.load([p4m, small], resolve_device("cpu"), precision="auto")
    assert ens.bf16 == [True, False]
    native(False)
    assert Ensemble.load([p4m, small], resolve_device("cpu"), precision="auto").bf16 == [False, False]
    assert Ensemble.load([p4m, small], resolve_device("cpu"), precision="bf16").bf16 == [True, True]


# ------------------------------------------------------------------ the recorded property, checked
def galaxies(n: int, side: int = 141, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([render_galaxy(sample_params(rng), rng, side) for _ in range(n)])  # (n, S, S, 3) uint8


BF16_PRESETS = [name for name, cfg in PRESETS.items() if cfg.predict_precision == "fast"]


def test_some_preset_is_recorded_bf16_safe():
    assert "p4m" in BF16_PRESETS


@pytest.mark.parametrize("preset", BF16_PRESETS)
def test_bf16_predictions_of_a_bf16_safe_preset_agree_with_fp32(preset, tmp_path):
    """The preset's network (random weights, batch-norm statistics of real activations) on generated galaxies."""
    torch.manual_seed(0)
    cfg = get_preset(preset)
    net = build_model(cfg.model, GZ2)
    images = galaxies(24, cfg.image_size)
    x = torch.from_numpy(images)
    from gzmorph.nn import augment as aug

    with torch.no_grad():  # batch-norm statistics from these images, as training would leave them
        net.train()
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.momentum = None  # a cumulative average
        net(aug.render_crops(x, aug.fixed_transforms(len(x)), cfg.augment))
        # A head like a trained one: outputs that vary with the image, mostly above the ReLU's cut.
        net.output.weight.normal_(0.0, 0.1)
        net.output.bias.fill_(0.3)
    net.eval()
    run = TrainedModel(model=net, tree=GZ2, augment=cfg.augment, pca={}, image_size=cfg.image_size, config=cfg,
                       step=0, run_dir=tmp_path)
    fp32 = Ensemble([run], resolve_device("cpu"), precision="fp32")(images)
    bf16 = Ensemble([run], resolve_device("cpu"), precision="bf16")(images)
    worst, rms = float(np.abs(bf16 - fp32).max()), float(np.sqrt(np.mean((bf16 - fp32) ** 2)))
    assert worst > 0  # bf16 really was computed
    assert worst <= BF16_TOLERANCE[0] and rms <= BF16_TOLERANCE[1], (worst, rms)
    assert fp32.std(axis=0).max() > 0.01  # outputs that depend on the image, not a constant
