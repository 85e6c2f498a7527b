"""Shared fixtures: small generated datasets (never the real images)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gzmorph.tree import GZ2, TreeConstraint

# Outputs record the date they were written (provenance); a fixed one, the reproducible-builds
# convention, keeps two runs of one job byte-identical (the resume tests compare bytes).
os.environ.setdefault("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00Z


def make_tiny_kaggle(root: Path, n: int = 40, seed: int = 0, side: int = 96) -> Path:
    """A Kaggle-layout folder of random-texture images whose brightness drives Class1.1."""
    rng = np.random.default_rng(seed)
    (root / "images_training_rev1").mkdir(parents=True)
    raw = rng.normal(size=(n, 37)).astype(np.float32)
    for k, gid in enumerate(range(500, 500 + n)):
        level = rng.integers(20, 235)
        raw[k, 0] = 3 * (level / 255 - 0.5)
        img = np.clip(rng.normal(level, 20, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images_training_rev1" / f"{gid}.jpg")
    labels = TreeConstraint(GZ2)(torch.from_numpy(raw)).numpy()
    df = pd.DataFrame(labels, columns=GZ2.columns)
    df.insert(0, "GalaxyID", range(500, 500 + n))
    df.to_csv(root / "training_solutions_rev1.csv", index=False)
    return root


@pytest.fixture(scope="session")
def tiny_kaggle(tmp_path_factory) -> Path:
    """40 labelled 96-px images in the Kaggle layout (session-wide, read-only by convention)."""
    return make_tiny_kaggle(tmp_path_factory.mktemp("tiny_kaggle"))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    """An untrained run directory (seed 1), one per test module: some tests damage its files."""
    from factories import make_run

    return make_run(tmp_path_factory.mktemp("runs") / "a", 1)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module with one torch thread (tiny tensors), restoring the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster on loopback for a module (starting one takes seconds); skips without Ray."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield
    if started:
        ray.shutdown()


@pytest.fixture
def rendered_crops(monkeypatch) -> list:
    """Every batch of crops prediction gives the network (``render_crops`` spied on), in call order."""
    import gzmorph.inference.ensemble as ensemble

    seen: list = []
    real = ensemble.aug.render_crops

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(ensemble.aug, "render_crops", spy)
    return seen
