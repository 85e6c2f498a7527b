"""Fine-tuning options: frozen stages, head-only training, layer-wise learning-rate decay."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gzmorph.cli import main
from gzmorph.errors import RunError
from gzmorph.models.rundir import load_run
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.nn.model import build_model
from gzmorph.training.finetune import layer_groups, prepare_finetuning
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import learning_rate, train
from gzmorph.tree import GZ2


def _tiny_p4m(**changes) -> TrainConfig:
    p4m = get_preset("p4m")
    return p4m.override(model=replace(p4m.model, channels=(4, 8, 8)), examples=64, batch_size=16, eval_every=64,
                        image_size=48, precision="fp32", **changes)


def _ckpt(run, which="last"):
    return torch.load(run / "checkpoints" / f"{which}.pt", map_location="cpu", weights_only=False)


# ------------------------------------------------------------------ config
def test_options_validated_and_freezing_everything_is_one_clear_error():
    cfg = _tiny_p4m(freeze_stages=2, lr_layer_decay=0.5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="freeze_stages=4 would freeze the whole network, which has 3 stages"):
        _tiny_p4m(freeze_stages=4)
    for bad, match in (({"freeze_stages": -1}, ">= 0"), ({"freeze_stages": 1.5}, "whole number"),
                       ({"head_only": True, "freeze_stages": 1}, "contradicts"),
                       ({"lr_layer_decay": 0.0}, r"\(0, 1\]"), ({"lr_layer_decay": 1.5}, r"\(0, 1\]"),
                       ({"head_only": True, "lr_layer_decay": 0.5}, "nothing to decay"),
                       ({"head_only": "yes"}, "true or false")):
        with pytest.raises(ValueError, match=match):
            _tiny_p4m(**bad)
    # The paper's network counts its convolutional layers as stages.
    with pytest.raises(ValueError, match="has 4 stages"):
        get_preset("paper").override(freeze_stages=5)
    assert get_preset("finetune-small-labels").freeze_stages == 1


def test_cli_refuses_freezing_everything_in_one_line(tiny_kaggle, tmp_path, capsys):
    code = main(["train", "--data", str(tiny_kaggle), "--out", str(tmp_path / "r"), "--preset", "p4m",
                 "--freeze-stages", "9"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "freeze_stages=9 would freeze the whole network" in err


# ------------------------------------------------------------------ groups
@pytest.mark.parametrize("preset", ["p4m", "small"])
def test_layer_groups_partition_the_parameters_input_to_output(preset):
    model = build_model(get_preset(preset).model, GZ2)
    groups = layer_groups(model)
    ids = [id(p) for g in groups for p in g.params]
    assert sorted(ids) == sorted(id(p) for p in model.parameters()) and len(set(ids)) == len(ids)
    assert groups[-1].name == "head" and any(p is model.output.weight for p in groups[-1].params)
    first = model.stages[0] if preset == "p4m" else model.convs[0]
    assert [id(p) for p in groups[0].params] == [id(p) for p in first.parameters()]


def test_lr_decay_gives_each_group_its_scale():
    cfg = _tiny_p4m(lr_layer_decay=0.5)
    model = build_model(cfg.model, GZ2)
    tuning = prepare_finetuning(model, cfg)
    assert [(g["name"], g["lr_scale"]) for g in tuning.param_groups] == [
        ("stage1", 0.125), ("stage2", 0.25), ("stage3", 0.5), ("head", 1.0)]
    assert all(p.requires_grad for p in model.parameters()) and not tuning.frozen
    # Nothing asked: one group, exactly as without fine-tuning.
    assert prepare_finetuning(model, _tiny_p4m()).param_groups is None


def test_freezing_random_weights_is_refused():
    cfg = _tiny_p4m(freeze_stages=1)
    with pytest.raises(RunError, match="give init_from"):
        prepare_finetuning(build_model(cfg.model, GZ2), cfg)


# ------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def base_run(tiny_kaggle, tmp_path_factory):
    run = tmp_path_factory.mktemp("ft") / "base"
    train(_tiny_p4m(), tiny_kaggle, run, device="cpu", workers=0, progress=False)
    return run


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


@pytest.mark.slow
def test_frozen_stages_stay_byte_identical_and_groups_get_decayed_lrs(tiny_kaggle, base_run, tmp_path):
    cfg = _tiny_p4m(init_from=str(base_run), freeze_stages=1, lr_layer_decay=0.5, seed=3)
    train(cfg, tiny_kaggle, tmp_path / "ft", device="cpu", workers=0, progress=False)
    start = load_run(base_run, "best", device="cpu").model.state_dict()
    ckpt = _ckpt(tmp_path / "ft")
    changed = _changed(start, ckpt["model"])
    frozen = {k for k in start if k.startswith("stages.0.")}
    assert frozen and not changed & frozen  # weights and batch-norm statistics of stage 1
    assert not _changed({k: start[k] for k in frozen}, ckpt["ema"])  # the average too
    assert any(k.startswith("stages.1.") for k in changed) and any(k.startswith("output.") for k in changed)
    last = learning_rate(cfg, cfg.steps - 1)
    lrs = {g["name"]: g["lr"] for g in ckpt["optimizer"]["param_groups"]}
    assert lrs == pytest.approx({"stage2": 0.25 * last, "stage3": 0.5 * last, "head": last})


@pytest.mark.slow
def test_head_only_trains_only_the_head(tiny_kaggle, base_run, tmp_path):
    cfg = _tiny_p4m(init_from=str(base_run), head_only=True, seed=4)
    train(cfg, tiny_kaggle, tmp_path / "head", device="cpu", workers=0, progress=False)
    start = load_run(base_run, "best", device="cpu").model.state_dict()
    changed = _changed(start, _ckpt(tmp_path / "head")["model"])
    assert changed and all(k.startswith(("output.", "hidden.")) for k in changed)


def test_train_refuses_freezing_without_init_from_before_any_work(tiny_kaggle, tmp_path):
    with pytest.raises(RunError, match="give init_from"):
        train(get_preset("finetune-small-labels"), tiny_kaggle, tmp_path / "r", device="cpu", workers=0,
              progress=False)
    assert not (tmp_path / "r").exists()
