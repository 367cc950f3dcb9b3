"""The same service on the real PostgreSQL server: consent, a generation, a denial, detection and audit verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import consent_ops
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
    finally:
        rt.close()
