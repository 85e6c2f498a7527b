"""Builders of small generated test inputs: run directories (written by the one run writer) and images."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gzmorph.nn.model import GalaxyNet
from gzmorph.training.recipes import get_preset
from gzmorph.training.rundir import save_checkpoint, save_run
from gzmorph.tree import GZ2

SIZE = 40


PCA = {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}


def make_run(path: Path, seed: int, image_size: int = SIZE, step: int = 0) -> Path:
    """A run directory holding an untrained tiny network, written by :func:`save_run`."""
    base = get_preset("small")
    cfg = base.override(model=replace(base.model, conv_channels=(4, 4, 8, 8), dense_units=(16,)),
                        image_size=image_size, seed=seed)
    torch.manual_seed(seed)
    model = GalaxyNet(cfg.model, GZ2)
    save_run(path, cfg, {"pca": PCA})
    save_checkpoint(path / "checkpoints" / "best.pt", model, step, cfg)
    return path


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """Tiny noisy JPEGs with a bright blob of random size (so predictions differ)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:SIZE, :SIZE] - SIZE / 2
    paths = []
    for i in range(n):
        blob = np.exp(-(xx**2 + (yy * rng.uniform(0.3, 1)) ** 2) / rng.uniform(5, 80))
        img = np.clip(rng.normal(20, 8, (SIZE, SIZE, 3)) + 230 * blob[..., None] * rng.uniform(0.4, 1, 3), 0, 255)
        paths.append(folder / f"{1000 + i}.jpg")
        Image.fromarray(img.astype(np.uint8)).save(paths[-1], quality=95)
    return paths
