"""ONNX: export a trained network, and run one with onnxruntime in gzmorph's pipeline.

The exported graph is the whole network from the crops batch ``(B, 2, 3, S, S)``
float32 (what :func:`gzmorph.nn.augment.render_crops` makes) to the tree-constrained
probabilities ``(B, n_answers)``, with a dynamic batch axis.  The crop warp stays in
torch, shared with every other path: test-time averaging, streaming, output and
resume are the same code whatever runs the network.

The ``.onnx`` file is self-contained: its metadata (key ``gzmorph``) holds the
training configuration, colour PCA, label columns and step, so
:func:`load_onnx` rebuilds the :class:`~gzmorph.training.rundir.TrainedModel`
around an :class:`OnnxNet` without the run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gzmorph.errors import ConfigError, RunError
from gzmorph.runtime import atomic_write
from gzmorph.sharing.extra import require
from gzmorph.training.recipes import TrainConfig
from gzmorph.training.rundir import TrainedModel
from gzmorph.tree import get_tree

__all__ = ["ONNX_FORMAT", "META_KEY", "PARITY_TOLERANCE", "export_onnx", "OnnxNet", "load_onnx", "is_onnx"]

ONNX_FORMAT = 1
META_KEY = "gzmorph"
PARITY_TOLERANCE = 1e-4
INPUT, OUTPUT = "crops", "probabilities"


def _metadata(trained: TrainedModel) -> str:
    return json.dumps({"format": ONNX_FORMAT, "train": trained.config.to_dict(), "pca": trained.pca,
                       "label_columns": trained.label_columns, "step": trained.step, "stretch": trained.stretch,
                       "input": f"{INPUT}: float32 (batch, 2, 3, S, S) in [0, 1] from gzmorph.nn.augment.render_crops",
                       "output": f"{OUTPUT}: float32 (batch, {trained.tree.n_answers}) tree-constrained"})


def export_onnx(trained: TrainedModel, out: str | Path, opset: int = 18) -> dict[str, Any]:
    """Write ``trained``'s network as an ONNX file, checked and compared with torch.

    The exporter is torch's ``dynamo=True`` one (``torch.export`` + onnxscript): the
    TorchScript exporter, deprecated since torch 2.9, cannot export ``rot90`` (the
    viewpoints and the D4 group) and bakes the traced batch size into the tree
    constraint, while ``torch.export`` keeps the batch axis symbolic.

    Returns
    -------
    dict
        ``path`` and ``max_abs_diff``: the largest difference from torch on random
        crops at two batch sizes (above :data:`PARITY_TOLERANCE` the export fails).
    """
    onnx = require("onnx", "ONNX export")
    require("onnxscript", "ONNX export")  # torch's dynamo exporter builds the graph with it
    model = trained.model.float().eval().cpu()
    side = trained.augment.out_size
    example = torch.rand(2, 2, 3, side, side, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=65536)
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)  # e.g. "torchvision is not installed. Skipping torchvision::nms"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing chatter
            program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                        input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes={"crops": {0: batch}}, verbose=False, report=False,
                                        verify=False, optimize=True)
    finally:
        logger.setLevel(level)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, _metadata(trained)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = _parity(model, data, side)
    if not diff <= PARITY_TOLERANCE:
        raise RuntimeError(f"the ONNX graph of {trained.run_dir} differs from torch by {diff:.2e} "
                           f"(> {PARITY_TOLERANCE}); not written")
    atomic_write(out, lambda tmp: tmp.write_bytes(data))
    return {"path": Path(out), "max_abs_diff": diff}


def _parity(model: torch.nn.Module, data: bytes, side: int) -> float:
    net = OnnxNet(data, "export check")
    gen = torch.Generator().manual_seed(1)
    worst = 0.0
    for n in (1, 3):  # two batch sizes: the batch axis really is dynamic
        crops = torch.rand(n, 2, 3, side, side, generator=gen)
        with torch.inference_mode():
            worst = max(worst, float((net(crops) - model(crops)).abs().max()))
    return worst


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


def _check_graph(session: Any, path: Path, n_answers: int) -> None:
    """Refuse a graph that is not the exported network: one 5-D input, one output of ``n_answers`` columns."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    problem = None
    if [i.name for i in inputs] != [INPUT] or len(inputs[0].shape) != 5:
        problem = f"inputs {[(i.name, i.shape) for i in inputs]}, expected one 5-D {INPUT!r}"
    elif [o.name for o in outputs] != [OUTPUT]:
        problem = f"outputs {[o.name for o in outputs]}, expected exactly one {OUTPUT!r}"
    elif len(outputs[0].shape) != 2 or outputs[0].shape[1] not in (n_answers, None) and \
            not isinstance(outputs[0].shape[1], str):
        problem = f"output shape {outputs[0].shape}, expected (batch, {n_answers})"
    if problem:
        raise RunError(f"{path}: not a network exported by gzmorph ({problem})")


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
    tree = get_tree(cfg.tree)
    _check_graph(net._get_session(), path, tree.n_answers)
    return TrainedModel(model=net.eval(), tree=tree, augment=cfg.augment, pca=stored.get("pca") or {},
                        image_size=cfg.image_size, config=cfg, step=int(stored.get("step", 0)), run_dir=path,
                        label_columns=stored.get("label_columns"), stretch=stored.get("stretch"))
