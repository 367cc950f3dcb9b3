"""The same service on the real PostgreSQL server: consent, a generation, a denial, detection and audit verify."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from safeguards.consent import SubjectReference
from service import consent_ops, erasure
from service.detect import run_detection
from service.errors import Denied
from service.pipeline import generate_file
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import short_speech

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture()
def pg_settings(pg_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=pg_url)


def test_generation_chain_on_postgresql(
    pg_settings: Settings, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    initialize(pg_settings)
    rt = Runtime(pg_settings)
    try:
        assert rt.engine.dialect.name == "postgresql"
        subject, record = consent_ops.enroll(
            rt,
            name="Eileen",
            photos=[example_photo.read_bytes()],
            purposes=["pg"],
            clients=[],
            expires_days=1,
            evidence_sha256="a" * 64,
            actor="test",
        )
        audio = short_speech(example_audio, tmp_path / "a.wav", 1.2)
        kwargs = {
            "subject_id": subject.id,
            "purpose": "pg",
            "client_id": "cli",
            "photo_path": example_photo,
            "audio_path": audio,
            "actor": "test",
        }
        done = generate_file(rt, output_path=tmp_path / "pg.mp4", **kwargs)  # type: ignore[arg-type]
        assert done.status == "succeeded" and done.consent_record_id == record.id
        report = run_detection(rt, tmp_path / "pg.mp4", actor="test", request_id="r2")
        assert report.watermark["generation_id"] == done.id and report.verdict == "provatar-generated"

        consent_ops.revoke(rt, subject_id=subject.id, reason="test", actor="test")
        with pytest.raises(Denied) as denied:
            generate_file(rt, output_path=tmp_path / "pg2.mp4", **kwargs)  # type: ignore[arg-type]
        assert denied.value.reasons[0] == "consent_revoked"
        assert not (tmp_path / "pg2.mp4").exists()
        verified = rt.audit.verify()
        assert verified.entries >= 8

        # Erasure on PostgreSQL: no embedding, photo hash or name left in any table; the log still verifies.
        with rt.session() as session:
            ref = session.exec(select(SubjectReference).where(SubjectReference.subject_id == subject.id)).one()
            needles = [json.dumps(ref.embedding[5]), json.dumps(ref.embedding[100]), ref.photo_sha256, "Eileen"]

        def found() -> set[str]:
            hits = set()
            with rt.engine.connect() as conn:
                for table in inspect(conn).get_table_names():
                    for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                        cells = " ".join(str(v) for v in row)
                        hits |= {f"{table}:{n}" for n in needles if n in cells}
            return hits

        assert len(found()) >= len(needles)  # the search finds them while they are there
        erased = erasure.erase_subject(rt, subject.id, actor="test")
        assert erased.references_deleted == 1 and erased.generations_erased
        # The CLI wrote pg.mp4 where its user asked, outside the data dir: counted, left to them.
        assert erased.outputs_outside_data_dir == 1 and (tmp_path / "pg.mp4").exists()
        assert found() == set()
        assert rt.audit.verify().entries > verified.entries
    finally:
        rt.close()


def test_idempotency_cancel_and_pages_on_postgresql(
    pg_settings: Settings, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient
    from sqlmodel import func, select

    from service import job_state
    from service.api.main import create_app
    from service.db import create_tables
    from service.models import Generation, JobStatus

    init = initialize(pg_settings)
    rt = Runtime(pg_settings)
    try:
        create_tables(rt.engine)  # the upgrade step runs again on an up-to-date schema without harm
        subject, _ = consent_ops.enroll(
            rt,
            name="Eileen",
            photos=[example_photo.read_bytes()],
            purposes=["pg"],
            clients=[],
            expires_days=1,
            evidence_sha256="c" * 64,
            actor="test",
        )
        audio = short_speech(example_audio, tmp_path / "a.wav", 1.0).read_bytes()
        with TestClient(create_app(pg_settings, runtime=rt, start_worker=False)) as client:
            token = client.post(
                "/v1/token", data={"grant_type": "client_credentials"}, auth=(init.admin_client_id, init.admin_secret)
            ).json()["access_token"]

            def submit(key: str, audio_bytes: bytes):  # type: ignore[no-untyped-def]
                return client.post(
                    "/v1/generations",
                    data={"subject_id": subject.id, "purpose": "pg"},
                    files={"photo": ("p.png", example_photo.read_bytes()), "audio": ("a.wav", audio_bytes)},
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                )

            first, again = submit("k1", audio), submit("k1", audio)
            assert first.status_code == again.status_code == 202 and first.json() == again.json()
            assert submit("k1", audio + b"\x00\x00").status_code == 409
            with rt.session() as session:
                assert session.exec(select(func.count()).select_from(Generation)).one() == 1
            # Cancel a queued job (the PostgreSQL enum type knows `cancelled`).
            r = client.post(
                f"/v1/generations/{first.json()['id']}/cancel", headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 200 and r.json()["status"] == "cancelled"
            # 520 rows with shared timestamps page without loss or repeats.
            base = datetime.now(UTC) - timedelta(days=1)
            with rt.session() as session:
                for i in range(520):
                    session.add(
                        Generation(
                            id=f"gen_pg{i:04d}",
                            request_id="r",
                            subject_id=subject.id,
                            purpose="pg",
                            client_id=str(init.admin_client_id),
                            watermark_tag=0x6000_0000 + i,
                            photo_path="/x",
                            audio_path="/x",
                            status=JobStatus.running,
                            created_at=base + timedelta(seconds=i // 10),
                        )
                    )
                session.commit()
            seen: list[str] = []
            url: str | None = "/v1/generations?limit=150"
            while url:
                page = client.get(url, headers={"Authorization": f"Bearer {token}"}).json()
                seen += [g["id"] for g in page["items"]]
                url = page["next"]
            assert len(seen) == len(set(seen)) == 521
        # A running job's cancellation is a flag its runner sees at the next frame.
        flagged = job_state.request_cancel(rt, "gen_pg0001")
        assert flagged.status == JobStatus.running and job_state.cancel_requested(rt, "gen_pg0001")
        assert job_state.move(rt, "gen_pg0001", JobStatus.queued) is not None
        assert job_state.move(rt, "gen_pg0001", JobStatus.succeeded) is None  # not from queued
    finally:
        rt.close()


def test_webhook_delivery_and_retry_on_postgresql(pg_settings: Settings) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from service import webhooks
    from service.models import WebhookAttempt, WebhookDelivery, WebhookStatus

    hits: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["content-length"]))
            hits.append(1)
            self.send_response(500 if len(hits) == 1 else 200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = pg_settings.model_copy(
        update={
            "webhook_allow_http": True,
            "webhook_allowed_networks": ["127.0.0.1/32"],
            "webhook_retry_base_seconds": 0,
        }
    )
    initialize(settings)
    rt = Runtime(settings)
    try:
        endpoint, _ = webhooks.create_endpoint(
            rt,
            client_id="cl_pg",
            url=f"http://127.0.0.1:{server.server_address[1]}/hook",
            events=["generation.succeeded"],
            description=None,
            actor="test",
            request_id=None,
        )
        [msg] = webhooks.enqueue(rt, event_type="generation.succeeded", data={"x": 1}, client_ids=["cl_pg"])
        dispatcher = webhooks.Dispatcher(rt)
        with httpx.Client(trust_env=False) as client:
            assert dispatcher.run_due(client) == 1  # 500
            assert dispatcher.run_due(client) == 1  # retried at once (base 0 s): 200
            assert dispatcher.run_due(client) == 0
        with rt.session() as session:
            delivery = session.get(WebhookDelivery, msg)
            assert delivery is not None and delivery.status == WebhookStatus.succeeded and delivery.attempts == 2
            outcomes = [a.outcome for a in session.exec(select(WebhookAttempt).order_by(WebhookAttempt.id)).all()]
            assert outcomes == ["http_error", "ok"]
    finally:
        rt.close()
        server.shutdown()
        server.server_close()
