from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from generation.concurrency import threaded


def test_order_and_completeness_are_preserved_across_stages() -> None:
    stage1 = threaded(iter(range(500)), depth=3)
    stage2 = threaded((x * 2 for x in stage1), depth=2)
    assert list(stage2) == [x * 2 for x in range(500)]


def test_a_failing_stage_raises_in_the_consumer() -> None:
    def boom() -> Iterator[int]:
        yield 1
        raise ValueError("stage broke")

    it = threaded(boom())
    assert next(it) == 1
    with pytest.raises(ValueError, match="stage broke"):
        next(it)


def test_closing_the_consumer_stops_the_producer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    before = threading.active_count()
    it = threaded(endless(), depth=2)
    assert next(it) == 0
    it.close()
    time.sleep(0.3)
    n = len(produced)
    time.sleep(0.2)
    assert len(produced) == n  # no longer producing
    assert threading.active_count() <= before
