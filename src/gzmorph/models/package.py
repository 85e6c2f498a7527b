"""The model package format: a trained network as a self-contained, pickle-free folder, and its reader.

A package holds::

    model.safetensors   the weights of one checkpoint (the averaged weights when the run
                        trained with ``ema_decay``: what prediction from the run uses)
    config.json         everything needed to rebuild and feed the network (see below)
    README.md           the model card (:mod:`gzmorph.sharing.card`)
    model.onnx          optional (``export --onnx``): the same network for onnxruntime
    triage_thresholds.json  optional: the triage thresholds given at export

``config.json`` (format ``"gzmorph-model"``, version :data:`PACKAGE_VERSION`) keeps the
run's resolved training configuration under ``"train"`` (the authority when loading:
model, tree, augmentation and image size, so any new preprocessing field of
:class:`~gzmorph.models.trainconfig.TrainConfig` travels without a change here), and a
readable summary for other tools: ``"model"``, ``"tree"``, ``"preprocessing"`` (image
size, crop geometry, colour PCA, the test-time averaging levels), ``"data"`` (facts
about the training data), ``"weights"`` (file, SHA-256, checkpoint, step) and
``"versions"``.  Loading refuses weights whose SHA-256 differs from the recorded one, a
``config.json`` whose content differs from its ``config_sha256`` (version 2), and file
entries that are not plain names inside the package.

Written by :func:`gzmorph.sharing.package.export_package`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from gzmorph.errors import RunError
from gzmorph.models.extra import require
from gzmorph.models.rundir import TrainedModel, check_finite
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.nn.model import build_model
from gzmorph.runtime import resolve_device
from gzmorph.tree import get_tree

__all__ = ["PACKAGE_FORMAT", "PACKAGE_VERSION", "PACKAGE_FILES", "is_package", "sha256_file",
           "read_package_config", "verify_file", "load_package", "config_digest"]

PACKAGE_FORMAT = "gzmorph-model"
PACKAGE_VERSION = 2  # 2: config.json carries config_sha256, the digest of its own content
PACKAGE_FILES = {"weights": "model.safetensors", "config": "config.json", "card": "README.md",
                 "onnx": "model.onnx", "thresholds": "triage_thresholds.json",
                 # = gzmorph.inference.calibrator.CALIBRATION_FILE, the same name as in a run directory
                 "calibration": "calibration.json"}

def is_package(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding a model package's ``config.json``."""
    config = Path(path) / PACKAGE_FILES["config"]
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == PACKAGE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of a package configuration (canonical JSON, without its own ``config_sha256``)."""
    body = {k: v for k, v in config.items() if k != "config_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_package_config(package: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a package, checked for its format, version, digest and sections."""
    path = Path(package) / PACKAGE_FILES["config"]
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: cannot be read as a model package configuration ({exc})") from None
    if not isinstance(config, dict) or config.get("format") != PACKAGE_FORMAT:
        raise RunError(f"{path}: not a gzmorph model package (format {PACKAGE_FORMAT!r} expected)")
    if not isinstance(config.get("version"), int) or config["version"] > PACKAGE_VERSION:
        raise RunError(f"{path}: package version {config.get('version')!r} is newer than this gzmorph reads "
                       f"({PACKAGE_VERSION}); upgrade gzmorph")
    if config["version"] >= 2 and config.get("config_sha256") != config_digest(config):
        raise RunError(f"{path}: its content does not match its config_sha256 (edited or damaged after export); "
                       "refusing to load it")
    for section in ("weights", "preprocessing", "train"):
        if not isinstance(config.get(section), dict):
            raise RunError(f"{path}: no {section!r} section; not a complete gzmorph model package configuration")
    return config


def verify_file(package: Path, entry: dict[str, Any]) -> Path:
    """The file ``entry["file"]`` of a package, after checking its recorded SHA-256."""
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise RunError(f"{package / PACKAGE_FILES['config']}: file entry {name!r} is not a plain file name inside "
                       "the package; refused")
    path = package / name
    if not path.is_file():
        raise RunError(f"{path}: missing from the model package {package}")
    actual = sha256_file(path)
    if actual != entry.get("sha256"):
        raise RunError(f"{path}: its SHA-256 is {actual}, but {package / PACKAGE_FILES['config']} records "
                       f"{entry.get('sha256')}; the file was changed or damaged after export, refusing to load it")
    return path


def load_package(package: str | Path, device: str | torch.device | None = "auto") -> TrainedModel:
    """Load a model package as a :class:`TrainedModel` in eval mode (weights hash checked)."""
    safetensors_torch = require("safetensors.torch", "loading a gzmorph model package")
    package = Path(package)
    config = read_package_config(package)
    path = verify_file(package, config["weights"])
    try:
        cfg = TrainConfig.from_dict(config["train"])
    except (ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{package / PACKAGE_FILES['config']}: not a valid training configuration ({exc})") from None
    dev = device if isinstance(device, torch.device) else resolve_device(device).device
    tree = get_tree(cfg.tree)
    model = build_model(cfg.model, tree)
    try:
        state = safetensors_torch.load_file(str(path))
        check_finite(state, path)
        model.load_state_dict(state)
    except (RuntimeError, OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise RunError(f"{path}: its weights do not fit the network of {package / PACKAGE_FILES['config']} "
                       f"({first})") from None
    model.to(dev).eval()
    data = config.get("data", {})
    return TrainedModel(model=model, tree=tree, augment=cfg.augment, pca=config["preprocessing"].get("pca", {}),
                        image_size=cfg.image_size, config=cfg, step=int(config["weights"].get("step", 0)),
                        run_dir=package, label_columns=data.get("label_columns"),
                        stretch=config["preprocessing"].get("stretch", data.get("stretch")))
