"""Builders of the discovery tests: a tiny p4m run (written by the one run writer) and images."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from gzmorph.discovery.embed import METADATA_KEY
from gzmorph.models.rundir import save_checkpoint, save_run
from gzmorph.nn.model import build_model
from gzmorph.tree import GZ2
from gzmorph.training.recipes import get_preset

from factories import PCA, SIZE


def make_p4m_run(path: Path, seed: int = 0, image_size: int = SIZE) -> Path:
    """An untrained tiny p4m network (3 stages of 4 channels, 48-px crop)."""
    base = get_preset("p4m")
    cfg = base.override(model=replace(base.model, channels=(4, 4, 8)), image_size=image_size, seed=seed)
    torch.manual_seed(seed)
    model = build_model(cfg.model, GZ2)
    save_run(path, cfg, {"pca": PCA})
    save_checkpoint(path / "checkpoints" / "best.pt", model, 0, cfg)
    return path


def save_png(path: Path, pixels: np.ndarray) -> Path:
    """Lossless, so a turned copy holds exactly the turned pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def blob_images(folder: Path, n: int, seed: int = 0, side: int = SIZE) -> list[np.ndarray]:
    """``n`` lossless PNGs ``<1000+i>.png`` of elongated blobs at random angles; returns the pixels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side] - (side - 1) / 2
    out = []
    for i in range(n):
        a = rng.uniform(0, np.pi)
        u, v = xx * np.cos(a) + yy * np.sin(a), -xx * np.sin(a) + yy * np.cos(a)
        blob = np.exp(-(u**2 / rng.uniform(20, 80) + v**2 / rng.uniform(5, 20)))
        img = np.clip(rng.normal(15, 3, (side, side, 3)) + 220 * blob[..., None] * rng.uniform(0.5, 1, 3), 0, 255)
        out.append(img.astype(np.uint8))
        save_png(folder / f"{1000 + i}.png", out[-1])
    return out


def write_embedding(path, vectors, meta=None, ids=None):
    """An embedding file written directly (planted vectors), with a record like gzmorph embed's."""
    meta = {"digest": "d" * 40, "dim": vectors.shape[1], "id_column": "GalaxyID", "model": "m", **(meta or {})}
    flat = pa.array(vectors.astype(np.float32).reshape(-1), pa.float32())  # (N, F) -> (N * F,)
    table = pa.table({"GalaxyID": pa.array(np.arange(len(vectors)) if ids is None else np.asarray(ids), pa.int64()),
                      "path": pa.array([f"/nowhere/{i}.png" for i in range(len(vectors))]),
                      "embedding": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()}), path)
    return path
