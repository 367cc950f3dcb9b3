"""Run the stages of a frame stream on separate threads, so rendering, watermarking and encoding overlap.

torch, numpy/OpenCV and x264 all release the GIL in their inner loops, so on 2 cores a three-stage stream runs at
roughly the speed of its slowest stage instead of the sum of all three. Order is preserved; memory is bounded by
`depth` frames per stage; an exception in a stage is re-raised in the consumer; closing the consumer stops it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def threaded(items: Iterable[T], *, depth: int = 8, name: str = "provatar-stage") -> Generator[T, None, None]:
    """Iterate `items` on a background thread, handing results over through a bounded queue."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            q.put(_Failure(exc))

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=5)
