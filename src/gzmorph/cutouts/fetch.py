"""Fetching many cutouts politely: bounded concurrency, a per-host rate, retries with backoff.

:func:`fetch_all` runs ``concurrency`` asyncio workers over one ``httpx.AsyncClient``.
Before each request a worker waits for its host's turn (:class:`HostLimiter`: at most
``rate`` request starts per second per host).  A 429 or 503 answer pauses the whole
host for its ``Retry-After`` (capped), so every worker backs off, not only the one that
was told.  Timeouts, dropped connections, 408/429/5xx answers and bodies that fail
:func:`~gzmorph.cutouts.validate.check_body` with ``retry`` are retried after an
exponential backoff with full jitter; other answers (404, a wrong pixel scale) fail at
once.  Each request ends as one :class:`FetchResult`, passed to ``on_result`` in the
event loop's thread, so the caller writes its journal without locks.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterable

import httpx

from gzmorph.cutouts.validate import BadBody, BodyInfo, check_body

__all__ = ["FetchRequest", "FetchResult", "FetchOptions", "HostLimiter", "fetch_all", "backoff_delay"]

#: Longest ``Retry-After`` honoured, seconds (a server asking for hours is treated as failing).
MAX_RETRY_AFTER = 120.0
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class FetchRequest:
    """One cutout to fetch: ``index`` is the caller's (the input row), ``check`` the body's expectations."""

    index: int
    url: str
    host: str
    format: str
    size: int
    pixscale: float
    need_wcs: bool = True


@dataclass
class FetchResult:
    """How one request ended: ``body`` and ``info`` when it worked, else ``error``."""

    request: FetchRequest
    body: bytes | None
    info: BodyInfo | None
    error: str | None
    attempts: int


@dataclass(frozen=True)
class FetchOptions:
    """Politeness and persistence (see :class:`gzmorph.cutouts.job.CutoutConfig` for the user's view)."""

    concurrency: int = 8
    rate: float = 5.0
    attempts: int = 5
    timeout: float = 60.0
    backoff: float = 1.0
    max_backoff: float = 60.0
    user_agent: str = "gzmorph"


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**(attempt-1))]."""
    return rng.uniform(0.0, min(cap, base * 2.0 ** (attempt - 1)))


class HostLimiter:
    """At most ``rate`` request starts per second per host (0: no limit), and host-wide pauses."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def wait(self, host: str) -> None:
        """Return when ``host`` may be sent the next request."""
        lock = self._locks.setdefault(host, asyncio.Lock())
        async with lock:  # one waiter at a time takes the next slot
            now = time.monotonic()
            start = max(now, self._next.get(host, now))
            self._next[host] = start + self.interval
        if start > now:
            await asyncio.sleep(start - now)

    def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` for ``seconds`` from now (a 429's ``Retry-After``)."""
        self._next[host] = max(self._next.get(host, 0.0), time.monotonic() + seconds)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER)
    except ValueError:  # an HTTP date: rare for cutout services; back off normally
        return None


async def _attempt(client: httpx.AsyncClient, req: FetchRequest,
                   limiter: HostLimiter) -> tuple[FetchResult | None, str, bool, float | None]:
    """One try: (final result or None, failure reason, retry?, server-requested delay)."""
    await limiter.wait(req.host)
    try:
        response = await client.get(req.url)
    except httpx.TimeoutException as exc:
        return None, f"timeout ({type(exc).__name__})", True, None
    except httpx.TransportError as exc:  # refused, reset, closed before the whole body came
        return None, f"connection error ({type(exc).__name__}: {exc})", True, None
    status = response.status_code
    if status == 200:
        try:
            info = check_body(response.content, response.headers.get("content-type", ""), req.format, req.size,
                              req.pixscale, req.need_wcs)
        except BadBody as exc:
            return None, exc.reason, exc.retry, None
        return FetchResult(req, response.content, info, None, 0), "", False, None
    text = " ".join(response.text[:80].split()) if response.content else ""
    reason = f"HTTP {status}" + (f": {text}" if text else "")
    if status in _RETRY_STATUS:
        delay = _retry_after(response)
        if delay is not None:
            limiter.pause(req.host, delay)
        return None, reason, True, delay
    return None, reason, False, None


async def _fetch_one(client: httpx.AsyncClient, req: FetchRequest, limiter: HostLimiter, opts: FetchOptions,
                     rng: random.Random) -> FetchResult:
    reason = ""
    for attempt in range(1, opts.attempts + 1):
        result, reason, retry, delay = await _attempt(client, req, limiter)
        if result is not None:
            result.attempts = attempt
            return result
        if not retry or attempt == opts.attempts:
            return FetchResult(req, None, None, reason, attempt)
        await asyncio.sleep(delay if delay is not None else backoff_delay(attempt, opts.backoff, opts.max_backoff,
                                                                           rng))
    return FetchResult(req, None, None, reason, opts.attempts)


async def _run(requests: Iterable[FetchRequest], opts: FetchOptions, on_result: Callable[[FetchResult], None],
               seed: int) -> None:
    queue: asyncio.Queue[FetchRequest | None] = asyncio.Queue(maxsize=4 * opts.concurrency)
    limiter, rng = HostLimiter(opts.rate), random.Random(seed)
    limits = httpx.Limits(max_connections=opts.concurrency, max_keepalive_connections=opts.concurrency)
    timeout = httpx.Timeout(opts.timeout)
    async with httpx.AsyncClient(limits=limits, timeout=timeout, follow_redirects=True,
                                 headers={"User-Agent": opts.user_agent}) as client:
        async def worker() -> None:
            while (req := await queue.get()) is not None:
                on_result(await _fetch_one(client, req, limiter, opts, rng))

        async def produce() -> None:
            for req in requests:  # a bounded queue: a catalogue of millions is never all in memory
                await queue.put(req)
            for _ in range(opts.concurrency):
                await queue.put(None)

        tasks = [asyncio.create_task(worker()) for _ in range(opts.concurrency)]
        tasks.append(asyncio.create_task(produce()))
        try:
            await asyncio.gather(*tasks)  # the first error (of on_result) stops everything
        finally:
            for task in tasks:
                task.cancel()


def fetch_all(requests: Iterable[FetchRequest], opts: FetchOptions, on_result: Callable[[FetchResult], None],
              seed: int = 0) -> None:
    """Fetch every request; ``on_result`` gets each one's :class:`FetchResult` as it ends (any order).

    An exception raised by ``on_result`` stops the job (the results already passed on
    stay recorded by the caller).
    """
    asyncio.run(_run(requests, opts, on_result, seed))
