"""Which precision each run of a prediction job computes in.

``PredictConfig.precision`` (``--precision``):

``"auto"`` (default)
    Each run's recorded rule (``TrainConfig.predict_precision``, a property of its
    preset, :func:`gzmorph.training.recipes.recorded_predict_precision`): ``"fast"``
    presets (bf16 measured as accurate as fp32: ``p4m``) predict in bf16 on CUDA and on
    CPUs with AVX512-BF16 or AMX, fp32 on other CPUs; ``"auto"`` presets in bf16 on
    CUDA only; the ``paper`` presets in fp32 on every device.
``"fast"``
    bf16 wherever the hardware computes it natively (CUDA, or a CPU with
    AVX512-BF16/AMX), for every run.
``"fp32"`` / ``"bf16"``
    That precision, for every run, on every device.

An ONNX network always computes in fp32 (onnxruntime's CPU provider has no bf16
kernels).  "Native" is :func:`gzmorph.runtime.cpu_has_native_bf16`.
"""

from __future__ import annotations

from gzmorph.models.rundir import TrainedModel
from gzmorph.runtime import PRECISIONS, Runtime, cpu_has_native_bf16
from gzmorph.training.recipes import recorded_predict_precision

__all__ = ["PREDICT_PRECISIONS", "uses_bf16", "run_rule", "BF16_TOLERANCE"]

#: The choices of ``--precision`` for prediction.
PREDICT_PRECISIONS = PRECISIONS

#: How far bf16 predictions of a ``"fast"`` preset may be from fp32 on generated data:
#: (largest absolute difference of a probability, RMS difference). Checked per preset by
#: ``tests/inference/test_precision.py``; on real data see BENCHMARKS.md ("CPU throughput").
BF16_TOLERANCE = (0.02, 0.003)


def run_rule(run: TrainedModel, requested: str) -> str:
    """The precision rule for ``run``: ``requested``, or with ``"auto"`` the run's recorded one."""
    if requested not in PREDICT_PRECISIONS:
        raise ValueError(f"precision must be one of {PREDICT_PRECISIONS}, not {requested!r}")
    if getattr(run.model, "is_onnx", False):
        return "fp32"
    return recorded_predict_precision(run.config) if requested == "auto" else requested


def uses_bf16(run: TrainedModel, requested: str, runtime: Runtime) -> bool:
    """Whether ``run`` predicts in bf16 on ``runtime``'s device under ``--precision requested``."""
    rule = run_rule(run, requested)
    cuda = runtime.device.type == "cuda"
    if rule == "bf16":
        return True
    if rule == "fast":
        return cuda or cpu_has_native_bf16()
    if rule == "auto":
        return cuda
    return False
