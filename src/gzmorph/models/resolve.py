"""The one resolution of a ``--model`` value into a loaded model.

Every command that takes a model (``predict``, ``analyze``, ``train --init-from``) and
:class:`~gzmorph.inference.ensemble.Ensemble` go through :func:`resolve_model`, so a
run directory, a model package, an ``.onnx`` file and ``hf:ORG/NAME[@REVISION]`` work
everywhere and give the same :class:`~gzmorph.models.rundir.TrainedModel`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gzmorph.errors import ConfigError, RunError
from gzmorph.models.hub import HubRef, download, parse_ref
from gzmorph.models.onnx import load_onnx
from gzmorph.models.package import PACKAGE_FILES, is_package, load_package, read_package_config, verify_file
from gzmorph.models.rundir import RUN_FILES, TrainedModel, load_run

__all__ = ["resolve_model", "model_kind", "model_inputs"]

ONNX_SUFFIX = ".onnx"


def model_kind(path: Path) -> str:
    """``"onnx"`` (a file), ``"package"`` (model package folder) or ``"run"`` (anything else)."""
    if path.suffix.lower() == ONNX_SUFFIX and path.is_file():
        return "onnx"
    return "package" if is_package(path) else "run"


def resolve_model(spec: str | Path | TrainedModel, which: str = "best",
                  device: str | torch.device | None = "auto", purpose: str | None = None) -> TrainedModel:
    """Load the model ``spec`` names.

    Parameters
    ----------
    spec : path, ``"hf:ORG/NAME[@REVISION]"`` or TrainedModel
        A run directory (``which`` checkpoint), a model package folder (its weights,
        SHA-256 checked), an ``.onnx`` file from ``gzmorph export --format onnx``, or a
        package on the Hugging Face Hub (downloaded into, or found offline in, the Hub
        cache).  A loaded model is returned as it is.
    which : {"best", "last"}
        Checkpoint of a run directory (a package holds the one chosen at export).
    device : str or torch.device
        Where the torch network goes (an ONNX model runs on the CPU).
    purpose : str, optional
        What needs the torch network itself (``"analyzed"``, ``"fine-tuned"``): an ONNX
        model is then refused with a message saying so.
    """
    if isinstance(spec, TrainedModel):
        return spec
    ref = parse_ref(spec)
    path = Path(spec) if ref is None else download(ref)
    kind = model_kind(path)
    if kind == "onnx":
        if purpose:
            raise ConfigError(f"{spec}: an ONNX model cannot be {purpose}; give its run directory or model package")
        if is_package(path.parent):  # the ONNX file of a package: its recorded SHA-256 holds for it too
            entry = read_package_config(path.parent).get("onnx") or {}
            if entry.get("file") == path.name:
                verify_file(path.parent, entry)
        return load_onnx(path)
    if kind == "package":
        return load_package(path, device=device)
    if ref is not None:
        raise RunError(f"{spec}: {path} holds no gzmorph model package "
                       f"({PACKAGE_FILES['config']} of format gzmorph-model)")
    return load_run(path, which=which, device=device)


def model_inputs(spec: str | Path | TrainedModel) -> list[Path]:
    """The files a model is read from: inputs that an output must never replace."""
    if isinstance(spec, TrainedModel):
        spec = spec.run_dir
    if isinstance(spec, str) and isinstance(parse_ref(spec), HubRef):
        return []  # in the Hub cache, never an output
    path = Path(spec)
    names = [RUN_FILES["config"], RUN_FILES["best"], RUN_FILES["last"], PACKAGE_FILES["weights"], PACKAGE_FILES["onnx"]]
    return [path, *(path / name for name in names)]
