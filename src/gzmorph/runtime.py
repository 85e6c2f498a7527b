"""Device, dtype, seeding and atomic checkpoint I/O: decided once, used everywhere."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import random
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from gzmorph.errors import ConfigError, RunError
from gzmorph.outputs import atomic_write, refuse_overwrite  # re-exported: their home is the torch-free outputs

__all__ = ["Runtime", "resolve_device", "cpu_has_native_bf16", "cpu_flags", "PRECISIONS", "seed_everything", "atomic_write",
           "atomic_save", "load_checkpoint", "write_json", "refuse_overwrite"]


@dataclass(frozen=True)
class Runtime:
    """Where and how tensors are computed.

    ``autocast`` is bf16 autocast on CUDA only: CPU bf16 matmuls are slow on many
    cores, and results must not depend on the machine unless asked.
    """

    device: torch.device
    autocast: bool
    channels_last: bool

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast_context(self):
        if self.autocast:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return torch.autocast(device_type=self.device.type, enabled=False)


#: Training/prediction precisions: "auto" (bf16 autocast on CUDA only), "fast" (bf16 wherever the
#: hardware computes it natively: CUDA, or CPUs with AVX512-BF16/AMX), "fp32", "bf16" (always).
PRECISIONS = ("auto", "fast", "fp32", "bf16")


#: /proc/cpuinfo flags of native bf16 arithmetic (what oneDNN's bf16 kernels use).
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(path: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no ``/proc/cpuinfo``)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): only then is CPU bf16 faster.

    torch's own probes (``torch.cpu._is_amx_tile_supported``, ``_is_avx512_bf16_supported``,
    what its oneDNN kernels dispatch on) where this torch has them, else the kernel's
    CPU flags (:data:`BF16_CPU_FLAGS`).
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if any(callable(p) for p in probes):
        return any(bool(p()) for p in probes if callable(p))
    return bool(cpu_flags() & set(BF16_CPU_FLAGS))


def resolve_device(spec: str | None = "auto", fast: bool = True, precision: str = "auto") -> Runtime:
    """Pick the device once: ``"auto"`` takes CUDA when present, else the CPU.

    ``fast`` turns on the GPU-only speed paths (bf16 autocast, channels_last) on CUDA.
    ``precision`` (one of :data:`PRECISIONS`) can ask for bf16 autocast on the CPU too:
    ``"fast"`` where the CPU has native bf16, ``"bf16"`` always; ``"fp32"`` never autocasts.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if spec in (None, "", "auto"):
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} requested but CUDA is not available on this machine")
    cuda = device.type == "cuda"
    if cuda:
        # fp32 means fp32: no TF32 matmuls either (the paper preset's default).
        torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.allow_tf32 = precision != "fp32"
        torch.backends.cudnn.benchmark = True
    if precision == "fp32":
        autocast = False
    elif precision == "bf16":
        autocast = True
    elif precision == "fast":
        autocast = cuda or cpu_has_native_bf16()
    else:
        autocast = cuda and fast
    return Runtime(device=device, autocast=autocast, channels_last=cuda and fast and precision != "fp32")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a torch CPU generator seeded the same."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` atomically: a job killed mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by :func:`atomic_save` with ``weights_only=True``.

    Checkpoints therefore hold only tensors and plain Python containers/scalars
    (configs are stored as dicts, RNG states as tensors).  A file that is empty,
    truncated, not a torch archive or holds other objects (a pickle that would run
    code) raises :class:`RunError` naming it; torch's own message is not passed on,
    as it suggests turning the safe loading off.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise RunError(f"{path}: empty file, not a checkpoint")
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(f"{path}: holds objects other than tensors and plain data; refused (checkpoints are "
                       "loaded without running any code they contain)") from None
    except (RuntimeError, EOFError, ValueError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise RunError(f"{path}: no such checkpoint") from None
        raise RunError(f"{path}: truncated or corrupt checkpoint ({type(exc).__name__}), not a complete "
                       "torch archive") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise RunError(f"{path}: not a gzmorph checkpoint (no 'model' entry)")
    return ckpt


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically (rename over the target)."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def cpu_cores() -> int:
    """The CPU cores this process may run on (its affinity mask on Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads (``None``: leave the setting), then restore it."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
