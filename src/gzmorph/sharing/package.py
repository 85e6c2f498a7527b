"""Writing the model package of a run: :func:`export_package`.

The format (``model.safetensors``, ``config.json`` with its ``config_sha256``,
``README.md``, optional ``model.onnx``, ``triage_thresholds.json`` and ``calibration.json``) and its reader,
which checks the digests, are :mod:`gzmorph.models.package`.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

import gzmorph
from gzmorph.errors import OutputError, RunError
from gzmorph.models.extra import require
from gzmorph.models.metrics_log import read_metrics
from gzmorph.models.package import PACKAGE_FILES, PACKAGE_FORMAT, PACKAGE_VERSION, config_digest, sha256_file
from gzmorph.models.rundir import TrainedModel, load_run, read_run
from gzmorph.nn.tta import network_symmetry, run_tta
from gzmorph.outputs import temporary_folder
from gzmorph.runtime import refuse_overwrite, write_json
from gzmorph.sharing.card import read_report, render_card
from gzmorph.sharing.onnx_model import export_onnx

__all__ = ["TTA_LEVELS", "export_package"]

TTA_LEVELS = ("none", "rot", "paper")


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
            # Each level as this network's matched set (gzmorph.nn.tta: its symmetry period).
            "tta": {name: [list(t) for t in run_tta(name, trained)] for name in TTA_LEVELS},
            "symmetry": asdict(network_symmetry(cfg.model, cfg.augment))},
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
    refuse_overwrite([run_dir, report, thresholds], folders=[out])
    trained = load_run(run_dir, which=which, device="cpu")
    _, data = read_run(run_dir)
    metrics = read_metrics(run_dir)
    evaluation, report_thresholds = read_report(report)
    triage = _read_thresholds(thresholds) if thresholds is not None else report_thresholds
    tmp = temporary_folder(out)  # unique and created here: never someone else's folder
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
        config = json.loads(json.dumps(config, default=str))  # as read back (tuples as lists...)
        config["config_sha256"] = config_digest(config)
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
