"""Data-parallel training: 2 gloo processes on the CPU behave like one process with the global batch."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from gzmorph.nn.augment import AugmentConfig
from gzmorph.training.distributed import launch
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.training.recipes import get_preset
from gzmorph.training.train import train


def _deterministic_cfg() -> TrainConfig:
    """No augmentation and no dropout: the only randomness left is which images form a batch."""
    cfg = get_preset("small")
    model = cfg.model.__class__.from_dict({**cfg.model.to_dict(), "dropout": 0.0})
    augment = AugmentConfig(rotate=False, shift=0.0, scale_max=1.0, flip=False, brightness_std=0.0)
    return cfg.override(model=model, augment=augment, examples=64, batch_size=8, eval_every=32, image_size=48)


def _rank_worker(cfg_dict: dict, data: str, out: str, states: str) -> None:
    """Runs in every process: train, then save this rank's parameters for comparison."""
    import os

    result = train(TrainConfig.from_dict(cfg_dict), data, out, device="cpu", workers=0, progress=False)
    rank = int(os.environ["RANK"])
    torch.save({k: v.detach().clone() for k, v in result["model"].state_dict().items()},
               Path(states) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def runs(tiny_kaggle, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    cfg = _deterministic_cfg()
    single = train(cfg, tiny_kaggle, root / "single", device="cpu", workers=0, progress=False)
    (root / "states").mkdir()
    launch(_rank_worker, 2, cfg.to_dict(), str(tiny_kaggle), str(root / "ddp"), str(root / "states"))
    return root, single


def test_ranks_hold_identical_parameters(runs):
    root, _ = runs
    a = torch.load(root / "states" / "rank0.pt", weights_only=True)
    b = torch.load(root / "states" / "rank1.pt", weights_only=True)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_two_processes_equal_one_with_the_global_batch(runs):
    root, single = runs
    ddp = torch.load(root / "ddp" / "checkpoints" / "last.pt", weights_only=True)
    assert ddp["step"] == single["step"] == 8
    ref = single["model"].state_dict()
    for k, v in ddp["model"].items():
        torch.testing.assert_close(v, ref[k], rtol=1e-4, atol=1e-5)
    # metrics are written once (rank 0) and aggregated over both processes' validation shards
    got = [json.loads(x) for x in (root / "ddp" / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(x) for x in (root / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in got] == [r["step"] for r in want] == [4, 8]
    for g, w in zip(got, want):
        assert g["val_rmse"] == pytest.approx(w["val_rmse"], rel=1e-4)
        assert g["train_loss"] == pytest.approx(w["train_loss"], rel=1e-3)


def test_distributed_run_resumes(runs, tiny_kaggle, tmp_path):
    root, _ = runs
    cfg = _deterministic_cfg().override(examples=96)
    # A copy of the module's run (the other tests read it) with a longer budget:
    # resume continues from step 8 in two processes.
    run = tmp_path / "ddp"
    shutil.copytree(root / "ddp", run)
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["examples"] = 96
    torch.save(ckpt, run / "checkpoints" / "last.pt")
    result = train(cfg, tiny_kaggle, run, device="cpu", workers=0, progress=False, processes=2, resume=True)
    assert result["step"] == 12 and result["finished"]
