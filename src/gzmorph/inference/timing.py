"""Where a prediction job's time goes: seconds per stage, accumulated.

The stages are ``decode`` (reading and decoding images, in the decoding thread or
worker processes' hand-over), ``wait`` (the network's thread waiting for decoded
images: decoding is the bottleneck when it is large), ``warp`` (rendering the crops),
``forward`` (the networks) and ``write`` (building and writing the tables).  On a CPU
each number is the stage's own wall time (torch computes synchronously there); on
CUDA ``warp`` and ``forward`` only count the launch of asynchronous kernels.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from typing import Iterator

__all__ = ["Stopwatch"]


class Stopwatch:
    """Seconds and calls per named stage; thread-safe (the decoding thread adds to it too)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = defaultdict(float)
        self._calls: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t0)

    def add(self, stage: str, seconds: float, calls: int = 1) -> None:
        with self._lock:
            self._seconds[stage] += seconds
            self._calls[stage] += calls

    def seconds(self) -> dict[str, float]:
        """``{stage: seconds}`` so far."""
        with self._lock:
            return dict(self._seconds)

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._calls.clear()

    def __getstate__(self) -> dict:  # a lock does not pickle (the Ray executor ships the job)
        return {"_seconds": dict(self._seconds), "_calls": dict(self._calls)}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self._seconds.update(state["_seconds"])
        self._calls.update(state["_calls"])
