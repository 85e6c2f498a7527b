"""Decoding many image files in parallel worker processes, streaming in input order.

One file: :mod:`gzmorph.data.decode`.  Every input comes out as one
:class:`~gzmorph.data.decode.Item` (position, image or failure reason, geometry).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from gzmorph.data.decode import DEFAULT_SIZE, DecodeOptions, Item, decode_item

__all__ = ["iter_decoded", "load_images", "default_workers"]


def default_workers() -> int:
    """Worker processes to use by default: the CPU cores this process may run on."""
    from gzmorph.runtime import cpu_cores  # torch: not imported by decoding workers

    return cpu_cores()


def _decode_chunk(start: int, paths: Sequence[str | None], size: int | None,
                  options: DecodeOptions | None = None, scales: Sequence | None = None) -> list[Item]:
    """Worker-side: decode a chunk of paths starting at position ``start`` (with their per-row scales)."""
    scales = [None] * len(paths) if scales is None else scales
    return [decode_item(start + i, path, size, options, scale) for i, (path, scale) in enumerate(zip(paths, scales))]


def _pool(workers: int) -> ProcessPoolExecutor:
    # On Linux, fork (as torch's DataLoader does): workers start in milliseconds and
    # only run Pillow/NumPy code, never torch, so threads of the parent do not matter.
    # forkserver/spawn would re-run the user's main script in every worker and crash
    # scripts without an `if __name__ == "__main__":` guard.  Elsewhere fork is unsafe
    # (macOS system libraries) or missing (Windows): spawn.
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_die_with_parent,
                               initargs=(os.getpid(),))


def _die_with_parent(parent_pid: int) -> None:
    """Make a worker exit when the job that started it is killed (even by SIGKILL).

    Without this, a ``kill -9`` of a long prediction leaves its forked decoders blocked
    on their task pipe for ever.  Linux only (``prctl(PR_SET_PDEATHSIG)``).
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def iter_decoded(
    paths: Sequence[str | Path | None],
    size: int | None = DEFAULT_SIZE,
    workers: int | None = None,
    chunk: int = 64,
    options: DecodeOptions | None = None,
    scales: Sequence | None = None,
) -> Iterator[Item]:
    """Decode images in worker processes, streaming one :class:`Item` per path in input order.

    At most ``2 * workers`` chunks are in flight, so memory stays bounded whatever
    ``len(paths)`` (``2 * workers * chunk`` decoded images: 120 MB for 16 workers at
    141 px); a slow consumer simply pauses the workers.

    Parameters
    ----------
    paths : sequence of str, Path or None
        Image files; ``None`` yields a failure (``"no image path"``).
    size : int or None
        Output side (see :func:`gzmorph.data.decode.decode`).
    workers : int or None
        Worker processes; ``None`` = :func:`default_workers`, ``0`` = decode in this
        process (also used when ``workers`` is ``None`` and there are fewer than two
        chunks of work, where starting a pool costs more than it saves).
    chunk : int
        Images per task sent to a worker.
    options : DecodeOptions, optional
        FITS composite, and recentring (then every item carries its geometry).
    scales : sequence, optional
        Each path's raw pixel-scale value, needed (and only used) when
        ``options.pixel_scale`` is ``"column:NAME"``; a task carries only its chunk's
        values, never a mapping of the whole input.

    Yields
    ------
    Item
        ``row`` is the position in ``paths``.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if workers is not None and workers < 0:
        raise ValueError(f"workers must be >= 0 or None, got {workers}")
    items = [None if p is None else str(p) for p in paths]
    scales = _check_scales(scales, len(items), options)
    if workers is None:
        workers = 0 if len(items) < 2 * chunk else default_workers()
    if workers == 0:
        for i, path in enumerate(items):
            yield decode_item(i, path, size, options, None if scales is None else scales[i])
        return
    yield from _iter_pool(items, size, workers, chunk, options, scales)


def _check_scales(scales: Sequence | None, n: int, options: DecodeOptions | None) -> Sequence | None:
    """``scales`` when per-row scales are asked for (checked eagerly: a wrong call is no error row)."""
    from gzmorph.data.pixscale import scale_column

    if options is None or scale_column(options.pixel_scale) is None:
        return None
    if scales is None or len(scales) != n:
        raise ValueError(f"pixel scale {options.pixel_scale!r} needs one scale per path: got "
                         f"{'none' if scales is None else len(scales)} for {n} paths")
    return scales


def _iter_pool(items: list[str | None], size: int | None, workers: int, chunk: int,
               options: DecodeOptions | None, scales: Sequence | None = None) -> Iterator[Item]:
    starts = iter(range(0, len(items), chunk))
    pending: deque[Future] = deque()
    with _pool(workers) as pool:
        try:

            def submit_next() -> None:
                start = next(starts, None)
                if start is not None:
                    part = None if scales is None else scales[start : start + chunk]
                    pending.append(pool.submit(_decode_chunk, start, items[start : start + chunk], size, options,
                                               part))

            for _ in range(2 * workers):
                submit_next()
            while pending:
                results = pending.popleft().result()
                submit_next()  # keep the workers busy while the consumer handles this chunk
                yield from results
        finally:
            # The consumer may stop early (break, exception): drop the queued work.
            for future in pending:
                future.cancel()


def load_images(
    paths: Sequence[str | Path | None],
    size: int = DEFAULT_SIZE,
    workers: int | None = None,
    progress: bool = True,
    options: DecodeOptions | None = None,
    scales: Sequence | None = None,
) -> tuple[np.ndarray, list[tuple[int, str]], np.ndarray | None]:
    """Decode a list of images into one array (for collections that fit in memory).

    Parameters
    ----------
    paths : sequence of str, Path or None
    size : int
        Output side in pixels (a fixed size is needed to stack the images).
    workers, options, scales
        See :func:`iter_decoded`.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    images : ndarray, shape (N, size, size, 3), uint8
        Rows of images that failed are zeros.
    errors : list of (index, reason)
    geometry : ndarray, shape (N, 4), float32, or None
        With ``options.recentre`` or ``options.pixel_scale`` (every item then carries
        one); failed rows get the plain centre crop, flagged not found.
    """
    if size is None or size < 1:
        raise ValueError(f"load_images needs a positive output size, got {size}")
    from tqdm.auto import tqdm

    from gzmorph.data.recentre import NO_GEOMETRY

    measured = options is not None and (options.recentre or options.pixel_scale is not None)
    out = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    geometry = np.tile(NO_GEOMETRY, (len(paths), 1)) if measured else None
    errors: list[tuple[int, str]] = []
    stream = iter_decoded(paths, size=size, workers=workers, options=options, scales=scales)
    for i, image, reason, geom in tqdm(stream, total=len(paths), disable=not progress, unit="img", desc="decode"):
        if image is None:
            errors.append((i, str(reason)))
        else:
            out[i] = image
            if geometry is not None and geom is not None:
                geometry[i] = geom
    return out, errors, geometry
