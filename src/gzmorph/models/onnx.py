"""Running an ONNX model from ``gzmorph export --format onnx`` in gzmorph's pipeline.

The ``.onnx`` file is self-contained: its metadata (key ``gzmorph``) holds the
training configuration, colour PCA, label columns and step, so :func:`load_onnx`
rebuilds the :class:`~gzmorph.models.rundir.TrainedModel` around an :class:`OnnxNet`
(a torch module that calls onnxruntime) without the run directory.  The export is
:func:`gzmorph.sharing.onnx_model.export_onnx`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gzmorph.errors import ConfigError, RunError
from gzmorph.models.extra import require
from gzmorph.models.rundir import TrainedModel
from gzmorph.models.trainconfig import TrainConfig
from gzmorph.tree import get_tree

__all__ = ["ONNX_FORMAT", "META_KEY", "INPUT", "OUTPUT", "OnnxNet", "load_onnx", "is_onnx"]

ONNX_FORMAT = 1
META_KEY = "gzmorph"
INPUT, OUTPUT = "crops", "probabilities"


class OnnxNet(torch.nn.Module):
    """A network run by onnxruntime, called like the torch network it was exported from.

    ``forward(crops)`` takes the crops batch on any device and returns the
    probabilities on that device (computed on the CPU, in fp32: a torch autocast
    context does not apply).  Pickles as the ONNX bytes (Ray ships runs to actors).
    """

    is_onnx = True

    def __init__(self, data: bytes, source: str) -> None:
        super().__init__()
        self.data, self.source = data, source
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._session: Any = None

    def _get_session(self) -> Any:
        if self._session is None:
            ort = require("onnxruntime", "running an ONNX model")
            options = ort.SessionOptions()
            # As many threads as torch has here (PredictConfig.threads sets both).
            options.intra_op_num_threads = torch.get_num_threads()
            self._session = ort.InferenceSession(self.data, sess_options=options, providers=["CPUExecutionProvider"])
        return self._session

    def forward(self, crops: torch.Tensor, constrain: bool = True) -> torch.Tensor:
        if not constrain:
            raise ConfigError(f"{self.source}: an ONNX model holds the constrained outputs only")
        x = np.ascontiguousarray(crops.detach().float().cpu().numpy())
        y = self._get_session().run([OUTPUT], {INPUT: x})[0]
        return torch.from_numpy(y).to(crops.device)

    def weights_digest(self) -> str:
        """Identifies the model in prediction manifests (resume): the file's SHA-256."""
        return self.sha256

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_session"] = None  # a session does not pickle; rebuilt on first use
        return state


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` is an ``.onnx`` file."""
    path = Path(path)
    return path.suffix.lower() == ".onnx" and path.is_file()


def load_onnx(path: str | Path, data: bytes | None = None) -> TrainedModel:
    """Load an ONNX file written by :func:`export_onnx` as a :class:`TrainedModel`."""
    path = Path(path)
    try:
        data = path.read_bytes() if data is None else data
    except OSError as exc:
        raise RunError(f"{path}: cannot be read ({exc})") from None
    net = OnnxNet(data, str(path))
    try:
        meta = net._get_session().get_modelmeta().custom_metadata_map
    except Exception as exc:  # onnxruntime raises its own types for a broken model
        raise RunError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    if META_KEY not in meta:
        raise RunError(f"{path}: an ONNX model without gzmorph's metadata; export it with `gzmorph export "
                       "--format onnx`")
    try:
        stored = json.loads(meta[META_KEY])
        cfg = TrainConfig.from_dict(stored["train"])
    except (ValueError, TypeError, KeyError) as exc:
        raise RunError(f"{path}: unreadable gzmorph metadata ({exc})") from None
    return TrainedModel(model=net.eval(), tree=get_tree(cfg.tree), augment=cfg.augment, pca=stored.get("pca") or {},
                        image_size=cfg.image_size, config=cfg, step=int(stored.get("step", 0)), run_dir=path,
                        label_columns=stored.get("label_columns"), stretch=stored.get("stretch"))
