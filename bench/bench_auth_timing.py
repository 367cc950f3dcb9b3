"""Does a token request for an unknown client id cost the same as one for a known id (no enumeration by timing)?

Prints the median cost of: a known id with a wrong secret, an unknown id the old way (a fresh dummy hash per
request: two scrypts), and the way service.auth does it now (one dummy hash made once). Run from the repo root:
    PYTHONPATH=. python bench/bench_auth_timing.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from service.auth import _dummy_hash, check_secret, hash_secret


def median_ms(fn: Callable[[], object], n: int = 15) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def main() -> None:
    stored = hash_secret("the real secret")
    _dummy_hash()
    known = median_ms(lambda: check_secret("wrong", stored))
    before = median_ms(lambda: check_secret("wrong", hash_secret("x")))
    after = median_ms(lambda: check_secret("wrong", _dummy_hash()))
    print(f"known id, wrong secret:           {known:6.1f} ms  1.00x")  # noqa: T201
    print(f"unknown id, before (fresh dummy): {before:6.1f} ms  {before / known:.2f}x")  # noqa: T201
    print(f"unknown id, after (dummy once):   {after:6.1f} ms  {after / known:.2f}x")  # noqa: T201


if __name__ == "__main__":
    main()
