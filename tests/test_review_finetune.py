"""The loop closed: expert answers -> exported labels -> `gzmorph train --init-from RUN`."""

import json

import pytest
import torch

from gzmorph.cli import main
from gzmorph.data.catalog import open_catalog
from gzmorph.training.recipes import get_preset
from gzmorph.review.db import ReviewStore
from gzmorph.review.export import export_labels
from gzmorph.models.rundir import load_run, read_run
from gzmorph.training.train import train
from gzmorph.tree import GZ2

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def base_run(tiny_kaggle, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "base"
    cfg = get_preset("small").override(examples=64, batch_size=8, eval_every=32, image_size=48)
    train(cfg, tiny_kaggle, out, device="cpu", workers=1, progress=False)
    return out


def expert_labels(tiny_kaggle, path):
    """Two reviewers answer four galaxies of the tiny catalog; their labels are exported."""
    store = ReviewStore(path.with_suffix(".sqlite"), GZ2,
                        meta={"catalog": str(tiny_kaggle), "split": "train", "id_column": "GalaxyID"})
    for gid in ("500", "501", "502", "503"):
        for reviewer, first in (("ann", "Class1.1"), ("bob", "Class1.3")):
            store.record_answer(gid, reviewer, "Q1", first)
            store.record_answer(gid, reviewer, "Q6", "Class6.2")
            if first == "Class1.1":
                store.record_answer(gid, reviewer, "Q7", "Class7.1")
    export_labels(path.with_suffix(".sqlite"), path)
    return path


def test_finetune_on_exported_labels_starts_from_the_run(tiny_kaggle, base_run, tmp_path):
    labels = expert_labels(tiny_kaggle, tmp_path / "labels.csv")
    assert open_catalog(labels).labels[:, 0].tolist() == [0.5] * 4
    out = tmp_path / "ft"
    # No --preset: the base run's configuration; a vanishing learning rate keeps its weights.
    assert main(["train", "--data", str(labels), "--out", str(out), "--init-from", str(base_run),
                 "--examples", "8", "--batch-size", "8", "--eval-every", "8", "--lr", "1e-12",
                 "--device", "cpu", "--workers", "1", "--no-progress"]) == 0
    cfg, facts = read_run(out)
    base = load_run(base_run, device="cpu")
    assert cfg.init_from == str(base_run) and facts["init"]["step"] == base.step
    assert facts["n_train"] + facts["n_val"] == 4 and cfg.model == base.config.model
    tuned = load_run(out, "last", device="cpu").model.state_dict()
    for name, value in base.model.state_dict().items():
        torch.testing.assert_close(tuned[name], value, atol=1e-6, rtol=0)


def test_init_from_refuses_another_network(tiny_kaggle, base_run, tmp_path):
    cfg = get_preset("paper").override(examples=8, batch_size=8, image_size=48, init_from=str(base_run))
    with pytest.raises(ValueError, match="another network"):
        train(cfg, tiny_kaggle, tmp_path / "bad", device="cpu", workers=1, progress=False)
