"""ONNX export of a trained network (running one: :mod:`gzmorph.models.onnx`).

The exported graph is the whole network from the crops batch ``(B, 2, 3, S, S)``
float32 (what :func:`gzmorph.nn.augment.render_crops` makes) to the tree-constrained
probabilities ``(B, n_answers)``, with a dynamic batch axis.  The crop warp stays in
torch, shared with every other path: test-time averaging, streaming, output and
resume are the same code whatever runs the network.

The ``.onnx`` file is self-contained: its metadata (key ``gzmorph``) holds the
training configuration, colour PCA, label columns and step, so
:func:`gzmorph.models.onnx.load_onnx` rebuilds the :class:`~gzmorph.models.rundir.TrainedModel`
around an :class:`OnnxNet` without the run directory.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch

from gzmorph.models.extra import require
from gzmorph.models.onnx import INPUT, META_KEY, ONNX_FORMAT, OUTPUT, OnnxNet
from gzmorph.models.rundir import TrainedModel
from gzmorph.runtime import atomic_write

__all__ = ["PARITY_TOLERANCE", "export_onnx"]

PARITY_TOLERANCE = 1e-4


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
