"""Builders of small generated test inputs: run directories (written by the one run writer) and images."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gzmorph.nn.model import GalaxyNet
from gzmorph.training.recipes import get_preset
from gzmorph.models.rundir import save_checkpoint, save_run
from gzmorph.tree import GZ2, Tree

SIZE = 40


PCA = {"eigenvector": [0.58, 0.58, 0.57], "eigenvalue": 0.01}


def make_run(path: Path, seed: int, image_size: int = SIZE, step: int = 0, *, tree: Tree = GZ2,
             recentre: bool = False, data: dict | None = None, train: dict | None = None) -> Path:
    """A run directory holding an untrained tiny network, written by :func:`save_run`.

    ``tree``, ``recentre`` (``augment.recentre``) and ``data`` (facts such as
    ``label_columns`` or ``stretch``) describe how the run was trained; ``train``
    overrides other fields of its ``TrainConfig`` (``pixel_scale``...).
    """
    base = get_preset("small")
    cfg = base.override(model=replace(base.model, conv_channels=(4, 4, 8, 8), dense_units=(16,)),
                        image_size=image_size, seed=seed, tree=base.tree if tree is GZ2 else tree.to_dict(),
                        augment=replace(base.augment, recentre=recentre)).override(**(train or {}))
    torch.manual_seed(seed)
    model = GalaxyNet(cfg.model, tree)
    save_run(path, cfg, {"pca": PCA, **(data or {})})
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


def run_killed(target: str, after: int, argv: list[str], timeout: float = 300) -> int:
    """Run ``gzmorph ARGV`` in a child that SIGKILLs itself right after ``after`` calls of ``target``.

    ``target`` is ``"module:function"`` or ``"module:Class.method"``, patched in the child
    (``gzmorph.training.train:save_checkpoint``...).  The kill is real (no ``finally``
    block, no flush) and lands at a deterministic point, not after a sleep.  Returns the
    child's exit status (``-9``).
    """
    module, name = target.split(":")
    script = f"""
import importlib, os, signal, sys
owner = importlib.import_module({module!r})
path = {name!r}.split(".")
for part in path[:-1]:
    owner = getattr(owner, part)
real, calls = getattr(owner, path[-1]), []
def dying(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(owner, path[-1], dying)
from gzmorph.cli import main
sys.exit(main(sys.argv[1:]))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", script, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          env=env, timeout=timeout).returncode
