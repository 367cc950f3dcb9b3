"""Wall-clock seconds per stage of a run (audited with the result; the job metrics read them from there)."""

from __future__ import annotations

import time

__all__ = ["StageClock"]


class StageClock:
    """Wall-clock seconds of consecutive stages: each call closes the stage named, which began at the last call."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = round(now - self._last, 3)
        self._last = now
