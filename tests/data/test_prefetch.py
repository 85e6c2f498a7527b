"""Decoding ahead in a thread (gzmorph/data/prefetch.py): order, bound, errors, early stop."""

from __future__ import annotations

import threading
import time

import pytest

from gzmorph.data.prefetch import prefetch
from gzmorph.inference.timing import Stopwatch


def test_items_come_in_order_and_complete():
    assert list(prefetch(iter(range(1000)), depth=2, group=7)) == list(range(1000))
    assert list(prefetch(iter([]))) == []


def test_the_thread_runs_at_most_depth_groups_ahead():
    pulled = []

    def source():
        for i in range(10_000):
            pulled.append(i)
            yield i

    stream = prefetch(source(), depth=3, group=10)
    assert next(stream) == 0
    time.sleep(0.3)  # let the thread run as far as it may
    # consumed group + 3 queued + one being filled (blocked on the full queue)
    assert len(pulled) <= 10 * (1 + 3 + 1)
    stream.close()


def test_an_error_of_the_stream_reaches_the_consumer_after_its_items():
    def source():
        yield 1
        yield 2
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for item in prefetch(source(), group=1):
            got.append(item)
    assert got == [1, 2]


def test_closing_early_stops_the_thread_and_closes_the_stream():
    closed = threading.Event()

    def source():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()

    before = threading.active_count()
    stream = prefetch(source(), depth=2, group=4)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()
    assert closed.wait(2.0)
    assert threading.active_count() == before


def test_the_stopwatch_gets_decode_and_wait_seconds():
    def slow():
        for i in range(6):
            time.sleep(0.01)
            yield i

    watch = Stopwatch()
    assert list(prefetch(slow(), group=2, stopwatch=watch)) == list(range(6))
    seconds = watch.seconds()
    assert seconds["decode"] >= 0.05 and seconds["wait"] > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth and group"):
        next(prefetch(iter([1]), depth=0))
