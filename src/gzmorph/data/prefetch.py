"""Decoding ahead of the network: a stream of items run in a background thread, bounded.

Without it, a job decodes a batch, then runs the network on it, then decodes the next:
on a small CPU the network's cores idle while one decodes, and the decoder idles while
the network runs.  :func:`prefetch` moves the pulling of the stream (in-process JPEG
decoding, or the hand-over from decoding processes, or cache reads) into one thread,
which runs at most ``depth`` groups of ``group`` items ahead of the consumer, so memory
stays bounded whatever the collection size.  Pillow and NumPy release the GIL while
they decode and resize, and torch while it computes, so the two overlap on two cores.

Order, items and failures are those of the stream; an exception of the stream is raised
in the consumer.  Closing the consumer (``break``, an exception, the end) stops the
thread and closes the stream there (which stops its decoding processes).
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator, TypeVar

__all__ = ["prefetch"]

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _produce(items: Iterator[Any], out: queue.Queue, stop: threading.Event, group: int, stopwatch: Any) -> None:
    """The thread: pull ``items`` ``group`` at a time into ``out`` until the end or ``stop``."""
    try:
        done = False
        while not done and not stop.is_set():
            t0 = time.perf_counter()
            batch = []
            for item in items:
                batch.append(item)
                if len(batch) == group:
                    break
            else:
                done = True
            if stopwatch is not None:
                stopwatch.add("decode", time.perf_counter() - t0, len(batch))
            if batch and not _put(out, batch, stop):
                return
        _put(out, _END, stop)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
        _put(out, _Failure(exc), stop)
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # in this thread, the one running the stream: stops its decoding processes


def _put(out: queue.Queue, value: Any, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            out.put(value, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterator[T], depth: int = 4, group: int = 32, stopwatch: Any = None) -> Iterator[T]:
    """Yield the items of ``items``, pulled ahead in a background thread.

    Parameters
    ----------
    items : iterator
        The stream (e.g. :meth:`gzmorph.data.source.Source.stream`); it is run in the
        thread from the first item on.
    depth : int
        Groups held ready at most: memory holds ``(depth + 2) * group`` items at most.
    group : int
        Items handed over at once (fewer hand-overs than one item at a time).
    stopwatch : Stopwatch, optional
        Receives ``decode`` (the thread's seconds pulling items) and ``wait`` (the
        consumer's seconds waiting for them) (:class:`gzmorph.inference.timing.Stopwatch`).
    """
    if depth < 1 or group < 1:
        raise ValueError(f"depth and group must be >= 1, got {depth}, {group}")
    out: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(iter(items), out, stop, group, stopwatch),
                              name="gzmorph-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            t0 = time.perf_counter()
            value = out.get()
            if stopwatch is not None:
                stopwatch.add("wait", time.perf_counter() - t0)
            if value is _END:
                return
            if isinstance(value, _Failure):
                raise value.exc
            yield from value
    finally:
        stop.set()
        thread.join()
