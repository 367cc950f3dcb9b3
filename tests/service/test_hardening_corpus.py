"""Issue 14 item 6 (in part): the bad-input corpus of tests/bad_corpus.py (57 files, made, not downloaded) through
the API and the CLI: every file refused with a 4xx problem / exit 2-3 naming the right code, never a 5xx or a
traceback, nothing left behind in uploads/ or outputs/, and every refusal audited.

Before this branch the corpus hit: 1x1 and 1x50000 photos -> 500 / exit 1 (invalid_face_image unmapped), a
one-sample WAV -> 500 / exit 1 (TypeError in phone recognition), and infinite samples -> accepted (clipped to 1.0).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service import consent_ops
from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.bad_corpus import make_corpus
from tests.service.conftest import Cli, short_speech

pytestmark = [
    pytest.mark.slow,
    # Pillow warns about the corrupt EXIF of the TIFF header file; the refusal is what is tested.
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]


@dataclass
class Site:
    settings: Settings
    rt: Runtime
    admin: tuple[str, str]
    subject_id: str
    corpus: list[tuple[str, Path, set[str]]]
    photo: Path
    audio: Path


@pytest.fixture(scope="module")
def site(
    data_dir: Path, tmp_path_factory: pytest.TempPathFactory, example_photo: Path, example_audio: Path
) -> Iterator[Site]:
    settings = Settings(data_dir=data_dir, rate_limits_enabled=False)
    init = initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[example_photo.read_bytes()],
        purposes=["test"],
        clients=[],
        expires_days=1,
        evidence_sha256="f" * 64,
        actor="test",
    )
    work = tmp_path_factory.mktemp("corpus")
    corpus = make_corpus(work / "files")
    audio = short_speech(example_audio, work / "speech.wav", 1.0)
    yield Site(
        settings, rt, (str(init.admin_client_id), str(init.admin_secret)), subject.id, corpus, example_photo, audio
    )
    rt.close()


def _audit_count(site: Site) -> int:
    with sqlite3.connect(site.settings.data_dir / "provatar.db") as db:
        return int(db.execute("SELECT count(*) FROM audit_event").fetchone()[0])


def _leftovers(site: Site) -> list[Path]:
    return [p for d in (site.settings.uploads_dir, site.settings.outputs_dir) if d.exists() for p in d.rglob("*")]


def test_corpus_has_at_least_50_files(site: Site) -> None:
    assert len(site.corpus) >= 50
    assert {slot for slot, _, _ in site.corpus} == {"photo", "audio"}


def test_every_corpus_file_is_a_clean_4xx_through_the_api(site: Site) -> None:
    with TestClient(create_app(site.settings, runtime=site.rt, start_worker=False), raise_server_exceptions=False) as c:
        token = c.post(
            "/v1/token", data={"grant_type": "client_credentials", "scope": "generate"}, auth=site.admin
        ).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        before = _audit_count(site)
        bad = []
        for slot, path, codes in site.corpus:
            photo = (f"p{path.suffix}", path.read_bytes() if slot == "photo" else site.photo.read_bytes())
            audio = (f"a{path.suffix}", path.read_bytes() if slot == "audio" else site.audio.read_bytes())
            r = c.post(
                "/v1/generations",
                headers=headers,
                data={"subject_id": site.subject_id, "purpose": "test"},
                files={"photo": photo, "audio": audio},
            )
            ok = r.status_code in (400, 403, 413, 415, 422) and r.headers["content-type"].startswith(
                "application/problem+json"
            )
            if not ok or r.json().get("code") not in codes:
                bad.append((path.name, r.status_code, r.text[:200]))
        assert not bad, bad
        # One audit entry at least per refusal (policy decisions and request rejections).
        assert _audit_count(site) - before >= len(site.corpus)
    assert not _leftovers(site), _leftovers(site)


def test_every_corpus_file_is_exit_2_or_3_through_the_cli(cli: Cli, site: Site, tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    before = _audit_count(site)
    bad = []
    for slot, path, codes in site.corpus:
        photo = path if slot == "photo" else site.photo
        audio = path if slot == "audio" else site.audio
        r = cli("generate", str(photo), str(audio), "-o", str(out), "--subject", site.subject_id, "--purpose", "test")
        named = any(f"error[{code}]" in r.output for code in codes)
        if r.exit_code not in (2, 3) or not named or "Traceback" in r.output or out.exists():
            bad.append((path.name, r.exit_code, r.output[:200]))
    assert not bad, bad
    assert _audit_count(site) - before >= len(site.corpus)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_corpus_script_writes_the_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tests.bad_corpus", str(tmp_path / "c")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "c").rglob("*.*"))) >= 50
    assert json.dumps(r.stdout)  # prints a one-line summary
