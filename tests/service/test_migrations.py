"""Migrations on real SQLite and PostgreSQL: an empty database upgraded to head matches the models exactly
(Alembic's autogenerate diff is empty), a second upgrade changes nothing, databases made by `create_all` before
migrations are recognised and upgraded, and concurrent start-ups upgrade once."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import CheckConstraint, MetaData, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel
from typer.testing import CliRunner

from service import migrations
from service.db import make_engine
from service.errors import SchemaMismatch
from tests.conftest import REPO_ROOT

HEAD = migrations.head_revision()
RELEASE_2_TABLES = ("service_webhook_attempt", "service_webhook_delivery", "service_webhook_endpoint")
RELEASE_3_TABLES = ("consent_identity_review", "consent_blocked_reference")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema on the real PostgreSQL server (dropped afterwards)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        yield request.getfixturevalue("pg_url")


@pytest.fixture()
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    yield eng
    eng.dispose()


def _schema(engine: Engine) -> dict[str, object]:
    """Tables with their columns and indexes, to show that a repeated upgrade changed nothing."""
    insp = inspect(engine)
    return {
        t: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            sorted((i["name"] or "", tuple(i["column_names"])) for i in insp.get_indexes(t)),
        )
        for t in sorted(insp.get_table_names())
    }


def _make_the_old_way(engine: Engine) -> None:
    """What `create_tables` did before migrations: `create_all` of every model (no alembic_version)."""
    SQLModel.metadata.create_all(engine, tables=list(migrations.target_metadata().sorted_tables))
    _without_job_leases(engine)


def _without_job_leases(engine: Engine) -> None:
    """The job-lease columns came with migrations (0005): no database made by `create_all` had them."""
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_service_generation_lease_expires_at"))
        for column in ("lease_owner", "lease_expires_at", "heartbeat_at", "enqueued_at"):
            conn.execute(text(f"ALTER TABLE service_generation DROP COLUMN {column}"))


def _as_second_release(engine: Engine) -> None:
    """Turn a `create_all` database into what issue 11's release made: no identity reviews, one photo per block."""
    with engine.begin() as conn:
        for table in RELEASE_3_TABLES:
            conn.execute(text(f"DROP TABLE {table}"))


def _as_first_release(engine: Engine) -> None:
    """Turn a `create_all` database into what the first release made: no jobs/idempotency/webhook additions."""
    _as_second_release(engine)
    with engine.begin() as conn:
        for table in (*RELEASE_2_TABLES, "service_idempotency_key"):
            conn.execute(text(f"DROP TABLE {table}"))
        for column in ("cancel_requested_at", "output_deleted_at"):
            conn.execute(text(f"ALTER TABLE service_generation DROP COLUMN {column}"))
        if engine.dialect.name == "postgresql":  # no webhook status type yet; the job status had no 'cancelled'
            conn.execute(text("DROP TYPE webhookstatus"))
            conn.execute(text("ALTER TABLE service_generation ALTER COLUMN status TYPE text"))
            conn.execute(text("DROP TYPE jobstatus"))
            conn.execute(text("CREATE TYPE jobstatus AS ENUM ('queued', 'running', 'succeeded', 'denied', 'failed')"))
            conn.execute(
                text("ALTER TABLE service_generation ALTER COLUMN status TYPE jobstatus USING status::jobstatus")
            )


def _insert_job(engine: Engine, job_id: str, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO service_generation (id, subject_id, purpose, client_id, status, progress, created_at, "
                "request_id, watermark_tag, photo_path, audio_path, params, attempts) VALUES (:id, 's', 'p', 'c', "
                ":status, 0, CURRENT_TIMESTAMP, 'r', :tag, 'a', 'b', '{}', 0)"
            ),
            {"id": job_id, "status": status, "tag": abs(hash(job_id)) % 2**31},
        )


def test_an_empty_database_upgrades_to_the_models_schema_and_a_second_upgrade_is_a_no_op(engine: Engine) -> None:
    assert migrations.current_revision(engine) is None
    first = migrations.upgrade(engine)
    assert (first.before, first.after, first.adopted) == (None, HEAD, None)
    assert migrations.schema_diff(engine) == []
    tables = set(inspect(engine).get_table_names())
    assert set(migrations.target_metadata().tables) | {"alembic_version"} == tables
    before = _schema(engine)
    again = migrations.upgrade(engine)
    assert (again.before, again.after, again.changed) == (HEAD, HEAD, False)
    assert _schema(engine) == before


def test_the_diff_sees_a_schema_that_does_not_match_the_models(engine: Engine) -> None:
    """Negative control: the empty-diff check above can fail."""
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP INDEX ix_service_webhook_delivery_status"))
        conn.execute(text("ALTER TABLE service_generation DROP COLUMN output_deleted_at"))
    kinds = sorted(d[0] if isinstance(d, tuple) else d[0][0] for d in migrations.schema_diff(engine))
    assert kinds == ["add_column", "add_index"]


def _models_with(*checks: CheckConstraint) -> MetaData:
    """A copy of the models whose audit_event has these CHECK constraints too."""
    models = MetaData()
    for table in migrations.target_metadata().sorted_tables:
        table.to_metadata(models)
    for check in checks:
        models.tables["audit_event"].append_constraint(check)
    return models


def test_audit_seq_must_be_positive_and_the_diff_compares_check_constraints(engine: Engine) -> None:
    """0004's CHECK is there and enforced; autogenerate does not compare CHECKs, schema_diff does."""
    migrations.upgrade(engine)
    positive = CheckConstraint("seq > 0", name="ck_audit_event_seq_positive")
    assert migrations.schema_diff(engine, _models_with(positive)) == []
    lacking = _models_with(positive, CheckConstraint("length(ts) = 27", name="ck_audit_event_ts_width"))
    assert migrations.schema_diff(engine, lacking) == [
        ("missing_check_constraints", "audit_event", ["ck_audit_event_ts_width"])
    ]
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_event (seq, event_id, ts, kind, action, actor, outcome, details, prev_hash, "
                "entry_hash) VALUES (0, 'e', 't', 'k', 'a', 'a', 'ok', '{}', 'p', 'h')"
            )
        )


def test_a_log_already_holding_a_bad_seq_still_upgrades(engine: Engine) -> None:
    """The CHECK cannot be added over a row that breaks it: the upgrade leaves that table alone, `audit verify`
    (not the schema step) is what reports the row."""
    before_the_check = _models_with()  # the models as the last create_all release made them: no CHECK yet
    audit_event = before_the_check.tables["audit_event"]
    for check in [c for c in audit_event.constraints if isinstance(c, CheckConstraint)]:
        audit_event.constraints.discard(check)
    before_the_check.create_all(engine)
    _without_job_leases(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO audit_event (seq, event_id, ts, kind, action, actor, outcome, details, prev_hash, "
                "entry_hash) VALUES (0, 'e', 't', 'k', 'a', 'a', 'ok', '{}', 'p', 'h')"
            )
        )
    assert migrations.upgrade(engine).after == HEAD
    assert "ck_audit_event_seq_positive" not in {
        c["name"] for c in inspect(engine).get_check_constraints("audit_event")
    }


def test_downgrade_to_base_and_back(engine: Engine) -> None:
    migrations.upgrade(engine)
    _insert_job(engine, "gen_keep", "succeeded")
    migrations.downgrade(engine, "0001")
    assert "service_webhook_endpoint" not in inspect(engine).get_table_names()
    migrations.downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    assert migrations.upgrade(engine).after == HEAD
    assert migrations.schema_diff(engine) == []


def test_a_database_made_by_create_all_is_adopted(engine: Engine) -> None:
    _make_the_old_way(engine)
    _insert_job(engine, "gen_old", "cancelled")
    result = migrations.upgrade(engine)
    assert (result.before, result.adopted, result.after) == (None, "0003", HEAD)
    assert migrations.schema_diff(engine) == []
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM service_generation")).scalar_one() == "cancelled"


def test_a_first_release_database_is_adopted_and_upgraded(engine: Engine) -> None:
    _make_the_old_way(engine)
    _as_first_release(engine)
    _insert_job(engine, "gen_v1", "succeeded")
    if engine.dialect.name == "postgresql":  # the enum check sees the missing label before the upgrade
        assert ("missing_enum_values", "jobstatus", ["cancelled"]) in migrations.schema_diff(engine)
    result = migrations.upgrade(engine)
    assert (result.before, result.adopted, result.after) == (None, "0001", HEAD)
    assert migrations.schema_diff(engine) == []
    _insert_job(engine, "gen_v2", "cancelled")  # the new columns and the enum value are there
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status, cancel_requested_at FROM service_generation ORDER BY id")).all()
    assert [(r[0], r[1], r[2]) for r in rows] == [("gen_v1", "succeeded", None), ("gen_v2", "cancelled", None)]


def test_a_second_release_database_is_adopted_and_its_blocked_identities_get_reference_rows(engine: Engine) -> None:
    _make_the_old_way(engine)
    _as_second_release(engine)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO consent_blocked_identity (id, label, reason, embedding, embedder, photo_sha256, "
                "created_at, created_by) VALUES ('blk_1', 'X', 'public figure', '[0.5, 0.25]', 'dlib', :sha, "
                "CURRENT_TIMESTAMP, 'test')"
            ),
            {"sha": "d" * 64},
        )
    result = migrations.upgrade(engine)
    assert (result.adopted, result.after) == ("0002", HEAD)
    assert migrations.schema_diff(engine) == []
    with engine.connect() as conn:
        refs = conn.execute(text("SELECT blocked_id, embedder, photo_sha256 FROM consent_blocked_reference")).all()
    assert [tuple(r) for r in refs] == [("blk_1", "dlib", "d" * 64)]


def test_a_partial_or_unknown_schema_is_refused_not_guessed(engine: Engine) -> None:
    _make_the_old_way(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE service_webhook_attempt"))
    with pytest.raises(SchemaMismatch, match="service_webhook_attempt"):
        migrations.upgrade(engine)
    assert migrations.current_revision(engine) is None  # nothing stamped
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE audit_event"))
        conn.execute(text("DROP TABLE audit_checkpoint"))
    with pytest.raises(SchemaMismatch, match="audit_checkpoint, audit_event"):
        migrations.upgrade(engine)


def test_a_revision_from_a_newer_release_is_refused(engine: Engine) -> None:
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaMismatch) as refused:
        migrations.upgrade(engine)
    assert refused.value.code == "database_newer_than_code"


def test_concurrent_start_ups_upgrade_once(db_url: str, engine: Engine) -> None:
    """Three processes upgrading the same empty database at once: all succeed, one does the work."""
    code = (
        "import sys; from service.db import make_engine, create_tables; "
        "r = create_tables(make_engine(sys.argv[1])); print(r.before, r.after)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [r[1].decode()[-2000:] for r in results]
    lines = sorted(r[0].decode().split()[0] for r in results)
    assert lines == [HEAD, HEAD, "None"]  # one upgraded from empty, the others found head
    assert migrations.schema_diff(engine) == []


def test_db_upgrade_command_adopts_an_old_installation_and_the_api_works(db_url: str, tmp_path: Path) -> None:
    """As an operator: a database made the old way, `provatar db upgrade`, `provatar init`, then the API."""
    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.cli import app
    from service.settings import Settings, get_settings

    old = make_engine(db_url)
    _make_the_old_way(old)
    _as_first_release(old)
    old.dispose()
    env = {"PROVATAR_DATA_DIR": str(tmp_path / "data"), "PROVATAR_DATABASE_URL": db_url}
    runner = CliRunner()

    def cli(*args: str):  # type: ignore[no-untyped-def]
        get_settings.cache_clear()
        try:
            return runner.invoke(app, list(args), env=env, catch_exceptions=False)
        finally:
            get_settings.cache_clear()

    status = cli("db", "status")
    assert status.exit_code == 1 and "current: none" in status.stdout
    up = cli("db", "upgrade")
    assert up.exit_code == 0, up.output
    assert "as revision 0001" in up.stdout and f"empty -> {HEAD}" in up.stdout
    again = cli("db", "upgrade")
    assert again.exit_code == 0 and f"already at {HEAD}" in again.stdout
    init = cli("init")
    assert init.exit_code == 0, init.output
    client_id = init.stdout.split("client_id:")[1].split()[0]
    secret = init.stdout.split("client_secret:")[1].split()[0]
    assert cli("db", "status").exit_code == 0

    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        webhook_allow_http=True,
        webhook_allowed_networks=["127.0.0.1/32"],  # registration checks the address; nothing is sent here
    )
    older = make_engine(db_url)
    migrations.downgrade(older, "0002")  # as if this release's code started on the previous release's schema
    with TestClient(create_app(settings, start_worker=False)) as client:
        assert migrations.current_revision(older) == HEAD  # the API's start-up upgraded it
        token = client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        listed = client.get("/v1/generations", headers=auth)
        assert listed.status_code == 200 and listed.json()["items"] == []
        hook = client.post(
            "/v1/webhooks", json={"url": "http://127.0.0.1:9/hook", "events": ["generation.succeeded"]}, headers=auth
        )
        assert hook.status_code == 201, hook.text  # a table the first release did not have
        verified = client.get("/v1/audit/verify", headers=auth)
        assert verified.status_code == 200 and verified.json()["intact"] is True
    older.dispose()
