"""The model package: a trained network as a self-contained, pickle-free folder.

A package holds::

    model.safetensors   the weights of one checkpoint (the averaged weights when the run
                        trained with ``ema_decay``: what prediction from the run uses)
    config.json         everything needed to rebuild and feed the network (see below)
    README.md           the model card (:mod:`gzmorph.sharing.card`)
    model.onnx          optional (``export --onnx``): the same network for onnxruntime
    triage_thresholds.json  optional: the triage thresholds given at export
    calibration.json    optional: the run's `gzmorph calibrate` fit (applied by predict)

``config.json`` (format ``"gzmorph-model"``, version :data:`PACKAGE_VERSION`) keeps the
run's resolved training configuration under ``"train"`` (the authority when loading:
model, tree, augmentation and image size, so any new preprocessing field of
:class:`~gzmorph.training.recipes.TrainConfig` travels without a change here), and a
readable summary for other tools: ``"model"``, ``"tree"``, ``"preprocessing"`` (image
size, crop geometry, colour PCA, the test-time averaging levels), ``"data"`` (facts
about the training data), ``"weights"`` (file, SHA-256, checkpoint, step) and
``"versions"``.  Loading refuses weights whose SHA-256 differs from the recorded one.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

import gzmorph
from gzmorph.errors import OutputError, RunError
from gzmorph.nn import augment as aug
from gzmorph.nn.model import build_model
from gzmorph.runtime import refuse_overwrite, resolve_device, write_json
from gzmorph.sharing.card import read_metrics, read_report, render_card
from gzmorph.sharing.extra import require
from gzmorph.sharing.onnx_model import export_onnx
from gzmorph.training.recipes import TrainConfig
from gzmorph.training.rundir import RUN_FILES, TrainedModel, load_run, read_run
from gzmorph.tree import get_tree

__all__ = ["PACKAGE_FORMAT", "PACKAGE_VERSION", "PACKAGE_FILES", "TTA_LEVELS", "is_package", "sha256_file",
           "export_package", "read_package_config", "verify_file", "load_package"]

PACKAGE_FORMAT = "gzmorph-model"
PACKAGE_VERSION = 1
PACKAGE_FILES = {"weights": "model.safetensors", "config": "config.json", "card": "README.md",
                 "onnx": "model.onnx", "thresholds": "triage_thresholds.json",
                 # = gzmorph.inference.calibrator.CALIBRATION_FILE, the same name as in a run directory
                 "calibration": "calibration.json"}
TTA_LEVELS = ("none", "rot", "paper")


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


def _package_config(trained: TrainedModel, data: dict[str, Any], which: str, sha: str,
                    thresholds: dict[str, Any] | None) -> dict[str, Any]:
    cfg = trained.config
    return {
        "format": PACKAGE_FORMAT, "version": PACKAGE_VERSION,
        "weights": {"file": PACKAGE_FILES["weights"], "sha256": sha, "checkpoint": which, "step": trained.step,
                    "averaged": cfg.ema_decay > 0},
        "model": cfg.model.to_dict(),
        "tree": trained.tree.to_dict(),
        "preprocessing": {
            "image_size": cfg.image_size, "augment": cfg.augment.to_dict(), "pca": trained.pca,
            # The FITS colour composite the model was trained on (None: JPEG/PNG composites).
            "stretch": trained.stretch,
            "input": "uint8 RGB images (N, S, S, 3), S = image_size; crops rendered by "
                     "gzmorph.nn.augment.render_crops",
            "tta": {name: [list(t) for t in aug.tta_transforms(name)] for name in TTA_LEVELS}},
        "train": cfg.to_dict(),
        "data": {k: v for k, v in data.items() if k != "pca"},
        "triage_thresholds": thresholds,
        "versions": {"gzmorph": gzmorph.__version__, "torch": torch.__version__},
        "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def export_package(run_dir: str | Path, out: str | Path, *, which: str = "best", report: str | Path | None = None,
                   thresholds: str | Path | None = None, onnx: bool = False) -> Path:
    """Write the model package of a run directory to the new folder ``out``.

    Parameters
    ----------
    run_dir : path
        Run directory written by ``gzmorph train``.
    out : path
        Folder to create (refused when it exists); written beside it and renamed, so a
        killed export leaves no half package.
    which : {"best", "last"}
        The checkpoint (``best`` falls back to ``last`` as in prediction).
    report : path, optional
        A ``gzmorph evaluate`` report folder (or its ``metrics.json``): its metrics go
        into the model card, and its ``triage_thresholds.json`` unless ``thresholds``.
    thresholds : path, optional
        A triage thresholds file (card and ``config.json``).
    onnx : bool
        Also write ``model.onnx`` (:func:`gzmorph.sharing.onnx_model.export_onnx`).
    """
    safetensors_torch = require("safetensors.torch", "gzmorph export")
    run_dir, out = Path(run_dir), Path(out)
    if out.exists():
        raise OutputError(f"--out {out} exists; give a new folder for the package")
    refuse_overwrite([run_dir], folders=[out])
    trained = load_run(run_dir, which=which, device="cpu")
    _, data = read_run(run_dir)
    metrics = read_metrics(run_dir / RUN_FILES["metrics"])
    evaluation, report_thresholds = read_report(report)
    triage = _read_thresholds(thresholds) if thresholds is not None else report_thresholds
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weights = tmp / PACKAGE_FILES["weights"]
        # safetensors refuses shared or strided storage: one contiguous copy per tensor.
        state = {k: v.detach().cpu().contiguous().clone() for k, v in trained.model.state_dict().items()}
        safetensors_torch.save_file(state, str(weights), metadata={"format": "pt"})
        config = _package_config(trained, data, which, sha256_file(weights), triage)
        if onnx:
            export_onnx(trained, tmp / PACKAGE_FILES["onnx"])
            config["onnx"] = {"file": PACKAGE_FILES["onnx"], "sha256": sha256_file(tmp / PACKAGE_FILES["onnx"])}
        calibration = run_dir / PACKAGE_FILES["calibration"]
        if calibration.is_file():  # gzmorph calibrate's fit travels with the weights; predict applies it
            shutil.copyfile(calibration, tmp / PACKAGE_FILES["calibration"])
            config["calibration"] = {"file": PACKAGE_FILES["calibration"], "sha256": sha256_file(calibration),
                                     **{k: v for k, v in json.loads(calibration.read_text()).items()
                                        if k in ("temperature", "votes", "level", "thresholds", "target_accuracy",
                                                 "fitted_on", "skipped")}}
        write_json(config, tmp / PACKAGE_FILES["config"])
        if triage is not None:  # also as a file: gzmorph predict --triage-thresholds PACKAGE/triage_thresholds.json
            write_json(triage, tmp / PACKAGE_FILES["thresholds"])
        card = render_card(config, metrics, evaluation, run_name=run_dir.resolve().name)
        (tmp / PACKAGE_FILES["card"]).write_text(card, encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _read_thresholds(path: str | Path) -> dict[str, Any]:
    try:
        stored = json.loads(Path(path).read_text())
        if not isinstance(stored.get("thresholds"), dict):
            raise ValueError("no 'thresholds' object")
    except (OSError, ValueError, AttributeError) as exc:
        raise RunError(f"{path}: not a triage thresholds file from `gzmorph evaluate` ({exc})") from None
    return stored


def read_package_config(package: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a package, checked for its format and version."""
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
    return config


def verify_file(package: Path, entry: dict[str, Any]) -> Path:
    """The file ``entry["file"]`` of a package, after checking its recorded SHA-256."""
    path = package / entry["file"]
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
        model.load_state_dict(safetensors_torch.load_file(str(path)))
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
