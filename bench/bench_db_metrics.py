"""Cost of the schema step and of a /metrics scrape: what every process start and every Prometheus scrape pays.

    python bench/bench_db_metrics.py [--postgres URL] [--entries 5000]

Prints: upgrade of an empty database to head, the no-op upgrade run at every start (median of 20), and the
first and following /metrics scrapes of an installation whose audit log holds N entries.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy

from service import migrations
from service.db import make_engine


def time_upgrades(url: str) -> tuple[float, float]:
    engine = make_engine(url)
    t0 = time.perf_counter()
    migrations.upgrade(engine)
    first = time.perf_counter() - t0
    noops = []
    for _ in range(20):
        t0 = time.perf_counter()
        migrations.upgrade(engine)
        noops.append(time.perf_counter() - t0)
    engine.dispose()
    return first, statistics.median(noops)


def time_scrapes(entries: int, tmp: Path) -> tuple[float, float, float]:
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.runtime import Runtime, initialize
    from service.settings import Settings

    settings = Settings(data_dir=tmp / "data", rate_limits_enabled=False)
    initialize(settings)
    rt = Runtime(settings)
    t0 = time.perf_counter()
    for i in range(entries):
        rt.audit.append(action="bench.event", actor="bench", outcome="ok", details={"i": i})
    append_s = time.perf_counter() - t0
    with TestClient(create_app(settings, runtime=rt, start_worker=False)) as client:
        t0 = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        assert client.get("/metrics").status_code == 200
        second = time.perf_counter() - t0
    rt.close()
    return append_s, first, second


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--entries", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        first, noop = time_upgrades(f"sqlite:///{d}/b.db")
        print(f"sqlite: empty -> head {first * 1000:.0f} ms; no-op upgrade {noop * 1000:.1f} ms (median of 20)")
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(args.postgres)
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
        try:
            first, noop = time_upgrades(f"{args.postgres}?options=-csearch_path%3D{schema}")
            print(f"postgresql: empty -> head {first * 1000:.0f} ms; no-op upgrade {noop * 1000:.1f} ms (median of 20)")
        finally:
            with admin.begin() as conn:
                conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        append_s, first, second = time_scrapes(args.entries, Path(d))
        print(
            f"/metrics with {args.entries} audit entries ({append_s:.1f} s to append them): "
            f"first scrape {first * 1000:.0f} ms, next {second * 1000:.1f} ms"
        )


if __name__ == "__main__":
    main()
