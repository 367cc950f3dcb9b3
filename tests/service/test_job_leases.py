"""Job leases, the reaper and exactly-once completion, on SQLite and PostgreSQL (issue 10 items 1 and 5, issue 14's
job ownership). No rendering here: rows are made directly; test_celery_worker.py runs real jobs on a real worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from audit.models import AuditEvent
from service import job_state, leases
from service.jobs import Worker, queued_ids
from service.models import Generation, JobStatus
from service.pipeline import create_generation
from service.reaper import reap_expired_leases, resend_unclaimed
from service.runtime import Runtime, initialize
from service.settings import Settings


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """None (the installation's SQLite file) or a fresh schema on the real PostgreSQL server, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    from tests.conftest import postgres_schema

    with postgres_schema("t_leases") as url:
        yield url


@pytest.fixture(scope="module")
def rt(db_url: str | None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    """One initialised installation per database kind (tests make their own jobs and look only at those); short
    leases."""
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("leases") / "data",
        database_url=db_url,
        job_lease_seconds=0.6,
        job_max_attempts=2,
        rate_limits_enabled=False,
    )
    initialize(settings)
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def _job(rt: Runtime, **kwargs: object) -> str:
    return create_generation(
        rt,
        subject_id="subj_x",
        purpose="p",
        client_id="c",
        photo_path=Path("/nonexistent/photo.png"),
        audio_path=Path("/nonexistent/audio.wav"),
        output_path=None,
        request_id="r",
        **kwargs,  # type: ignore[arg-type]
    ).id


def _row(rt: Runtime, gen_id: str) -> Generation:
    with rt.session() as session:
        gen = session.get(Generation, gen_id)
    assert gen is not None
    return gen


def _entries(rt: Runtime, action: str, gen_id: str) -> list[AuditEvent]:
    with rt.session() as session:
        rows = session.exec(select(AuditEvent).where(AuditEvent.action == action)).all()
    return [e for e in rows if e.details.get("generation_id") == gen_id]


def test_only_one_of_many_racing_runners_claims_a_job(rt: Runtime) -> None:
    gen_id = _job(rt)
    barrier = threading.Barrier(6)
    won: list[str] = []

    def race(i: int) -> None:
        barrier.wait()
        if (claimed := leases.claim(rt, gen_id, owner=f"runner-{i}")) is not None:
            won.append(claimed[0].owner)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    gen = _row(rt, gen_id)
    assert gen.status == JobStatus.running and gen.lease_owner == won[0] and gen.attempts == 1
    assert gen.lease_expires_at is not None and gen.lease_expires_at > datetime.now(UTC)
    assert leases.claim(rt, gen_id) is None  # running under a live lease: not claimable again


def test_a_job_reserved_for_its_process_is_claimed_by_no_one_else(rt: Runtime) -> None:
    gen_id = _job(rt, reserved_for="cli-owner")
    assert leases.claim(rt, gen_id) is None
    assert gen_id not in queued_ids(rt)  # a server's worker never picks up a CLI's job
    assert leases.claim(rt, gen_id, owner="cli-owner") is not None


def test_the_heartbeat_keeps_a_lease_alive_and_the_reaper_takes_it_once_it_stops(rt: Runtime) -> None:
    gen_id = _job(rt)
    claimed = leases.claim(rt, gen_id)
    assert claimed is not None
    lease = claimed[0]
    with leases.Heartbeat(rt, lease) as beat:
        time.sleep(1.5)  # 2.5 leases: without renewals it would have expired twice
        assert gen_id not in reap_expired_leases(rt) and not beat.lost.is_set()
        renewed = _row(rt, gen_id)
        assert renewed.heartbeat_at is not None and renewed.heartbeat_at > datetime.now(UTC) - timedelta(seconds=0.5)
    time.sleep(0.8)  # the runner is "dead": nobody renews
    assert gen_id in reap_expired_leases(rt)
    gen = _row(rt, gen_id)
    assert gen.status == JobStatus.queued and gen.lease_owner is None
    # The dead runner cannot record anything for it any more.
    assert not leases.renew(rt, lease)
    assert job_state.move(rt, gen_id, JobStatus.failed, conditions=[leases.held(lease.owner)]) is None


def test_an_expired_lease_is_retried_up_to_the_limit_then_fails_with_a_reason(rt: Runtime) -> None:
    gen_id = _job(rt)
    later = datetime.now(UTC) + timedelta(seconds=10)  # as if the runner stopped long ago
    sent: list[str] = []
    assert leases.claim(rt, gen_id) is not None
    assert gen_id in reap_expired_leases(rt, enqueue=sent.append, now=later)
    assert _row(rt, gen_id).status == JobStatus.queued and gen_id in sent  # re-sent to the broker
    sent.clear()
    assert leases.claim(rt, gen_id) is not None  # attempt 2 of 2
    assert gen_id in reap_expired_leases(rt, enqueue=sent.append, now=later)
    gen = _row(rt, gen_id)
    assert gen.status == JobStatus.failed and gen.error_code == "lease_expired" and gen.attempts == 2
    assert "2 attempts" in str(gen.error_message) and gen.finished_at is not None
    assert gen_id not in sent
    assert len(_entries(rt, "generation.requeued", gen_id)) == 1
    failed = _entries(rt, "generation.failed", gen_id)
    assert len(failed) == 1 and failed[0].details["reason"] == "lease_expired"
    assert gen_id not in reap_expired_leases(rt, now=later)  # nothing left to do: recorded once


def test_a_dead_cli_job_is_failed_not_finished_by_someone_else(rt: Runtime) -> None:
    gen_id = create_generation(
        rt,
        subject_id="s",
        purpose="p",
        client_id="cli",
        photo_path=Path("/x.png"),
        audio_path=Path("/x.wav"),
        output_path=Path("/tmp/user-file.mp4"),
        request_id="r",
        params={"in_process": True},
        reserved_for="cli-process",
    ).id
    assert leases.claim(rt, gen_id, owner="cli-process") is not None
    assert gen_id in reap_expired_leases(rt, now=datetime.now(UTC) + timedelta(seconds=10))
    gen = _row(rt, gen_id)
    assert gen.status == JobStatus.failed and gen.error_code == "lease_expired" and gen.attempts == 1
    assert "provatar generate" in str(gen.error_message)


def test_a_live_lease_is_not_taken_over_when_another_replica_starts(rt: Runtime) -> None:
    """What issue 14 saw: a server starting on the same database requeued a job alive elsewhere and ran it twice."""
    from fastapi.testclient import TestClient

    from service.api.main import create_app

    gen_id = _job(rt)
    claimed = leases.claim(rt, gen_id, owner="other-host:123:abcd")
    assert claimed is not None
    with leases.Heartbeat(rt, claimed[0]):
        with TestClient(create_app(rt.settings, runtime=rt, start_worker=True)) as client:
            assert client.get("/health").status_code in (200, 503)
            time.sleep(0.3)
        restarted = Worker(rt, poll_seconds=60)  # a restarting in-process worker reaps at start
        restarted.start()
        restarted.stop(timeout=10)
        assert gen_id not in reap_expired_leases(rt)
        gen = _row(rt, gen_id)
        assert gen.status == JobStatus.running and gen.lease_owner == "other-host:123:abcd" and gen.attempts == 1
    assert _entries(rt, "generation.requeued", gen_id) == []


def test_completion_is_recorded_once_and_only_by_the_lease_holder(rt: Runtime) -> None:
    gen_id = _job(rt)
    claimed = leases.claim(rt, gen_id)
    assert claimed is not None
    published: list[str] = []

    def complete(owner: str) -> object:
        return job_state.move_audited(
            rt,
            gen_id,
            JobStatus.succeeded,
            conditions=[leases.held(owner)],
            publish=lambda: published.append(owner),
            audit={
                "action": "generation.completed",
                "actor": "test",
                "outcome": "ok",
                "details": {"generation_id": gen_id},
            },
        )

    assert complete("someone-else") is None  # not the holder: no entry, no output
    done = complete(claimed[0].owner)
    assert done is not None
    gen, event = done
    assert gen.status == JobStatus.succeeded and gen.audit_seq == event.seq and gen.lease_owner is None
    assert complete(claimed[0].owner) is None  # a redelivered run finishing again records nothing
    assert published == [claimed[0].owner]
    assert len(_entries(rt, "generation.completed", gen_id)) == 1
    rt.audit.verify()


def test_a_queued_job_whose_enqueue_failed_is_sent_again(rt: Runtime) -> None:
    gen_id = _job(rt)
    cli_job = _job(rt, reserved_for="cli-process")
    sent: list[str] = []
    assert gen_id not in resend_unclaimed(rt, enqueue=sent.append)  # fresh: its first message may be on the way
    later = datetime.now(UTC) + timedelta(seconds=rt.settings.job_resend_after_seconds + 1)
    assert gen_id in resend_unclaimed(rt, enqueue=sent.append, now=later)
    assert gen_id not in resend_unclaimed(rt, enqueue=sent.append, now=later)  # once per window, whoever reaps
    assert sent.count(gen_id) == 1 and cli_job not in sent

    def broker_down(_: str) -> None:
        raise ConnectionError("broker unreachable")

    much_later = later + timedelta(seconds=rt.settings.job_resend_after_seconds + 1)
    assert gen_id not in resend_unclaimed(rt, enqueue=broker_down, now=much_later)
    assert _row(rt, gen_id).status == JobStatus.queued  # still there for the next pass


def test_a_submission_survives_an_unreachable_broker(tmp_path: Path) -> None:
    from service.job_queue import BrokerQueue

    settings = Settings(data_dir=tmp_path / "data", broker_url="redis://127.0.0.1:1/0")
    initialize(settings)
    rt = Runtime(settings)
    try:
        gen_id = _job(rt)
        t0 = time.monotonic()
        BrokerQueue(rt).submit(gen_id)  # logs, does not raise: the reaper re-sends it
        assert time.monotonic() - t0 < 10
        assert _row(rt, gen_id).status == JobStatus.queued
    finally:
        rt.close()


def test_transient_failures_are_retried_with_backoff(rt: Runtime) -> None:
    from sqlalchemy import create_engine

    from service.jobs import JobOutcome, run_job
    from service.tasks import retry_delay

    gen_id = _job(rt)
    healthy = rt.engine
    rt.engine = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 1})
    try:
        assert run_job(rt, gen_id) == JobOutcome.retry  # database unreachable: not a failure of the job
    finally:
        rt.engine.dispose()
        rt.engine = healthy
    assert _row(rt, gen_id).status == JobStatus.queued and _row(rt, gen_id).attempts == 0
    assert [retry_delay(n, 5.0) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]
    # A deterministic failure (here: the photo does not exist) is recorded, not retried.
    assert run_job(rt, gen_id) == JobOutcome.finished
    gen = _row(rt, gen_id)
    assert gen.status == JobStatus.failed and gen.error_code != "database_unavailable" and gen.attempts == 1


def test_an_orphaned_worker_process_stops_renewing_and_its_job_goes_to_the_reaper(rt: Runtime) -> None:
    """A Celery child whose worker was killed must not finish its job unsupervised (tasks.py sets the probe)."""
    gen_id = _job(rt)
    claimed = leases.claim(rt, gen_id)
    assert claimed is not None
    leases.set_process_probe(lambda: False)  # "my parent is gone"
    try:
        with leases.Heartbeat(rt, claimed[0], interval=0.05) as beat:
            assert beat.lost.wait(5)
    finally:
        leases.set_process_probe(leases._always_alive)
    assert _row(rt, gen_id).status == JobStatus.running  # nothing recorded by the orphan...
    assert gen_id in reap_expired_leases(rt, now=datetime.now(UTC) + timedelta(seconds=10))  # ...the reaper retries
    assert _row(rt, gen_id).status == JobStatus.queued


def test_the_worker_command_refuses_to_start_without_a_broker(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from service.cli import app
    from service.settings import get_settings

    env = {"PROVATAR_DATA_DIR": str(tmp_path / "data"), "PROVATAR_BROKER_URL": ""}
    get_settings.cache_clear()
    try:
        missing = CliRunner().invoke(app, ["worker"], env=env)
        bad_level = CliRunner().invoke(app, ["worker", "--loglevel", "loud"], env=env)
    finally:
        get_settings.cache_clear()
    assert missing.exit_code == 2 and "error[broker_not_configured]" in missing.output, missing.output
    assert bad_level.exit_code == 2 and "--loglevel" in bad_level.output
    assert "Traceback" not in missing.output + bad_level.output
