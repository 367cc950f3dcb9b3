"""Issue 14 items 2 and 4: hostile input is refused at the edge with a 4xx / exit 2 (never a 500 or a traceback),
every error class has an explicit mapping, and failed client authentication is audited and timed correctly.

Checked to fail on the code before the fix: NUL in path/query on PostgreSQL and in the token endpoint (500),
control characters in query filters (200), an out-of-range integer in a cursor (500), a Basic client id over 255
characters (500), 1x1 / 1x50000 photos and a one-sample WAV (exit 1), an infinite sample (clipped to 1.0 and
rendered), over-long names (internal_error), unknown client ids (two scrypt hashes: about twice as slow), and
error codes without a mapping (invalid_face_image, encode_failed, ... fell through to a generic 500).
"""

from __future__ import annotations

import base64
import importlib
import json
import pkgutil
import statistics
import struct
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from audit.errors import AuditError
from generation.errors import GenerationError
from policies.errors import PolicyError
from safeguards.errors import SafeguardError
from service.api.main import create_app
from service.errors import ServiceError, describe
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import Cli

# --------------------------------------------------------------------------------------------- error mapping


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_error_class_has_an_explicit_mapping() -> None:
    from service.errors import is_mapped

    for pkg in ("audit", "generation", "policies", "safeguards", "service"):
        module = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(module.__path__, pkg + "."):
            if not info.name.endswith("__main__"):
                importlib.import_module(info.name)  # every error class defined anywhere is now registered
    unmapped = []
    for base in (SafeguardError, GenerationError, PolicyError, AuditError):
        for cls in (base, *_subclasses(base)):
            code = cls.__dict__.get("code") or getattr(cls, "code", None)
            if not isinstance(code, str) or not is_mapped(code):
                unmapped.append(f"{cls.__module__}.{cls.__name__} ({code})")
    for cls in _subclasses(ServiceError):
        # A service error says its own status: some class between it and ServiceError must set http_status.
        if not any("http_status" in k.__dict__ for k in cls.__mro__[: cls.__mro__.index(ServiceError)]):
            unmapped.append(f"{cls.__module__}.{cls.__name__} (no http_status)")
    assert not unmapped, "error classes without an explicit mapping in service/errors.py: " + ", ".join(unmapped)


def test_bad_face_image_is_invalid_input_not_a_500() -> None:
    from safeguards.errors import InvalidFaceImage

    problem = describe(InvalidFaceImage("the face crop is 1x1 pixels"))
    assert (problem.http_status, int(problem.exit_status), problem.code) == (400, 2, "invalid_face_image")


# ------------------------------------------------------------------------------------------------------ API


@dataclass
class Api:
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]

    def bearer(self) -> dict[str, str]:
        scope = "generate detect consent:read consent:write audit:read clients:admin webhooks"
        r = self.client.post("/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=self.admin)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _api(settings: Settings) -> Iterator[Api]:
    init = initialize(settings)
    rt = Runtime(settings)
    with TestClient(create_app(settings, runtime=rt, start_worker=False), raise_server_exceptions=False) as client:
        yield Api(client, rt, (str(init.admin_client_id), str(init.admin_secret)))
    rt.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    yield from _api(Settings(data_dir=tmp_path_factory.mktemp("hostile") / "data", rate_limits_enabled=False))


def _cursor(values: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


HOSTILE_URLS = [
    ("GET", "/v1/subjects/subj_%00x"),
    ("GET", "/v1/generations/gen_%00"),
    ("GET", "/v1/generations/gen_%00/video"),
    ("DELETE", "/v1/generations/gen_%00"),
    ("POST", "/v1/generations/gen_%00/cancel"),
    ("GET", "/v1/audit/events?actor=a%00b"),
    ("GET", "/v1/audit/events?subject=%00"),
    ("GET", "/v1/audit/events?action=%1b%5b31m"),
    ("DELETE", "/v1/blocklist/blk_%00"),
    ("POST", "/v1/subjects/subj_%00/revoke"),
    ("GET", "/v1/clients/c%00"),
    ("GET", "/v1/webhooks/w%00"),
    ("GET", "/v1/subjects?after=%00"),
]


def _assert_4xx_problems(api: Api) -> None:
    headers = api.bearer()
    for method, url in HOSTILE_URLS:
        r = api.client.request(method, url, headers=headers)
        assert r.status_code == 400, (method, url, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), (url, r.headers)
    for cid in ("c\x00x", "x" * 300, "\x1b]8;;http://evil\x07"):
        basic = api.client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(cid, "secret"))
        assert basic.status_code == 401 and basic.json()["error"] == "invalid_client", (cid, basic.text)
        form = api.client.post(
            "/v1/token", data={"grant_type": "client_credentials", "client_id": cid, "client_secret": "s"}
        )
        assert form.status_code == 400 and form.json()["error"] == "invalid_client", (cid, form.text)


def test_control_characters_in_url_and_client_id_are_4xx_problems(api: Api) -> None:
    _assert_4xx_problems(api)


def _assert_stream_refuses_control_characters(api: Api, photo: bytes) -> None:
    with api.client.websocket_connect("/v1/stream", headers=api.bearer()) as ws:
        ws.send_text(json.dumps({"subject_id": "subj_\u0000x", "purpose": "live", "sample_rate": 16000}))
        ws.send_bytes(photo)
        answer = ws.receive_json()
        assert answer["code"] == "invalid_request" and "control character" in answer["message"], answer


@pytest.mark.postgres
def test_control_characters_are_4xx_on_postgresql_too(pg_url: str, tmp_path: Path, example_photo: Path) -> None:
    for api in _api(Settings(data_dir=tmp_path / "data", database_url=pg_url, rate_limits_enabled=False)):
        _assert_4xx_problems(api)
        _assert_stream_refuses_control_characters(api, example_photo.read_bytes())


def test_out_of_range_integers_in_query_and_cursor_are_4xx(api: Api) -> None:
    headers = api.bearer()
    huge = 9223372036854775808
    for url in (
        f"/v1/audit/events?after={_cursor({'seq': huge})}",
        f"/v1/audit/events?after={_cursor({'seq': -huge - 1})}",
        f"/v1/audit/events?after={_cursor({'seq': True})}",
        f"/v1/audit/events?limit={huge}",
        f"/v1/subjects?limit={huge}",
        f"/v1/generations?limit=-{huge}",
        f"/v1/audit/events?after={_cursor({'seq': 'NaN'})}",
    ):
        r = api.client.get(url, headers=headers)
        assert r.status_code in (400, 422), (url, r.status_code, r.text)
    # Parameters the API does not have (offset, after_seq) are ignored, never a 500.
    for url in (f"/v1/subjects?offset={huge}", f"/v1/audit/events?after_seq={huge}"):
        assert api.client.get(url, headers=headers).status_code == 200


def _failed_auth_actors(api: Api) -> list[str]:
    """Actors of failed authentications: the first of a window is its own entry, the rest are in the summary."""
    from sqlmodel import col, select

    from audit.models import AuditEvent

    api.client.app.state.rejections.flush(force=True)  # type: ignore[attr-defined]
    with api.rt.session() as session:
        events = session.exec(
            select(AuditEvent).where(col(AuditEvent.action).in_(["auth.failed", "auth.failed.summary"]))
        ).all()
    actors = [e.actor for e in events if e.action == "auth.failed"]
    return actors + [a for e in events if e.action == "auth.failed.summary" for a in e.details.get("actors", {})]


def test_failed_token_request_audits_the_attempted_client_id(api: Api) -> None:
    for cid in ("cl_doesnotexist", "y" * 300):
        for transport in ("basic", "form"):
            form = {"grant_type": "client_credentials"}
            if transport == "basic":
                r = api.client.post("/v1/token", data=form, auth=(cid, "wrong"))
            else:
                r = api.client.post("/v1/token", data={**form, "client_id": cid, "client_secret": "wrong"})
            assert r.status_code in (400, 401), r.text
    actors = _failed_auth_actors(api)
    assert "client:cl_doesnotexist" in actors, actors
    assert all(len(a) <= 255 for a in actors)


def test_unknown_client_id_costs_the_same_as_a_known_one(api: Api) -> None:
    from service.auth import authenticate_client
    from service.errors import Unauthorized

    known = api.admin[0]

    def cost(client_id: str) -> float:
        t0 = time.perf_counter()
        with api.rt.session() as session, pytest.raises(Unauthorized):
            authenticate_client(session=session, client_id=client_id, client_secret="wrong secret")
        return time.perf_counter() - t0

    cost("cl_warmup")
    samples = {"known": [], "unknown": []}  # type: dict[str, list[float]]
    for _ in range(7):  # interleaved, so load on the machine hits both alike
        samples["known"].append(cost(known))
        samples["unknown"].append(cost("cl_0000000000000000"))
    ratio = statistics.median(samples["unknown"]) / statistics.median(samples["known"])
    assert 0.75 < ratio < 1.33, (ratio, samples)


# ------------------------------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def enrolled(cli: Cli, tmp_path_factory: pytest.TempPathFactory, example_photo: Path) -> str:
    r = cli("init")
    assert r.exit_code == 0, r.output
    r = cli("consent", "enroll", str(example_photo), "--name", "Eileen", "--purpose", "test", "--json",
            "--evidence-sha256", "e" * 64)  # fmt: skip
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["subject_id"])


def _float_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """A 32-bit IEEE-float WAV (format 3): the one common format that can carry NaN and infinity."""
    data = np.asarray(samples, "<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, rate, rate * 4, 4, 32)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


@pytest.mark.slow
def test_degenerate_photos_and_audio_are_exit_2(
    cli: Cli, enrolled: str, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    Image.new("RGB", (1, 1), (200, 150, 120)).save(tmp_path / "1x1.png")
    Image.new("RGB", (1, 50000), (200, 150, 120)).save(tmp_path / "1x50000.png")
    with wave.open(str(tmp_path / "one.wav"), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x10\x00")
    tone = (0.1 * np.sin(np.arange(16000) / 10)).astype(np.float32)
    for name, bad in (("nan", np.nan), ("inf", np.inf), ("-inf", -np.inf)):
        samples = tone.copy()
        samples[500] = bad
        _float_wav(tmp_path / f"{name}.wav", samples)
    out = tmp_path / "out.mp4"
    cases = [
        ("1x1.png", None, "invalid_image"),
        ("1x50000.png", None, "invalid_image"),
        (None, "one.wav", "invalid_audio"),
        (None, "nan.wav", "invalid_audio"),
        (None, "inf.wav", "invalid_audio"),
        (None, "-inf.wav", "invalid_audio"),
    ]
    for photo, audio, code in cases:
        args = [
            str(tmp_path / photo) if photo else str(example_photo),
            str(tmp_path / audio) if audio else str(example_audio),
        ]
        r = cli("generate", *args, "-o", str(out), "--subject", enrolled, "--purpose", "test")
        assert r.exit_code == 2, (photo, audio, r.output)
        assert f"error[{code}]" in r.output and "Traceback" not in r.output, r.output
        assert not out.exists()
    r = cli("consent", "enroll", str(tmp_path / "1x1.png"), "--name", "Tiny", "--purpose", "t",
            "--evidence-sha256", "e" * 64)  # fmt: skip
    assert r.exit_code == 2 and "error[invalid_image]" in r.output, r.output


@pytest.mark.slow
def test_over_long_or_control_character_names_are_exit_2(cli: Cli, enrolled: str, example_photo: Path) -> None:
    for name in ("n" * 201, "evil\x1b]8;;http://x\x07name"):
        r = cli("consent", "enroll", str(example_photo), "--name", name, "--purpose", "t",
                "--evidence-sha256", "e" * 64)  # fmt: skip
        assert r.exit_code == 2 and "error[invalid_consent]" in r.output, r.output
    r = cli("consent", "revoke", enrolled, "--reason", "r" * 1001)
    assert r.exit_code == 2, r.output
    r = cli("client", "create", "x" * 201, "--scope", "generate")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    r = cli("client", "create", "bad\x1b[2Jname", "--scope", "generate")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output


# ------------------------------------------------------------------------------------------- terminal safety

HOSTILE_NAMES = ["[/]", "[link=https://evil.example]click[/link]", "[bold red]admin", ":warning:"]
ESCAPES = "\x1b]8;;https://evil.example\x07osc\x1b]8;;\x07 \x1b[2J\x1b[31mred\r\x9b"


@pytest.mark.slow
def test_cli_prints_names_as_typed_never_as_markup_or_escapes(
    cli: Cli, enrolled: str, data_dir: Path, example_photo: Path
) -> None:
    import sqlite3

    for name in HOSTILE_NAMES:
        r = cli("consent", "enroll", str(example_photo), "--name", name, "--purpose", "t",
                "--evidence-sha256", "e" * 64)  # fmt: skip
        assert r.exit_code == 0, (name, r.output)
    r = cli("client", "create", "[/]", "--scope", "generate")
    assert r.exit_code == 0, r.output
    # Rows written before names were checked (or by another tool) may hold terminal escapes: show them inert.
    with sqlite3.connect(data_dir / "provatar.db") as db:
        db.execute("UPDATE consent_subject SET display_name = ? WHERE id = ?", ("esc" + ESCAPES, enrolled))
        db.execute("UPDATE service_client SET name = ? WHERE name = '[/]'", ("[/]" + ESCAPES,))
    for command in (("consent", "list"), ("client", "list")):
        r = cli(*command)
        assert r.exit_code == 0, (command, r.output)
        assert "\x1b" not in r.output and "\x07" not in r.output and "\r" not in r.output and "\x9b" not in r.output
        assert "[/]" in r.output and "\\x1b]8;;https://evil.example" in r.output
    r = cli("consent", "list")
    for name in HOSTILE_NAMES:
        assert name in r.output, (name, r.output)
    r = cli("consent", "revoke", "subj_[/]\x1b[31m")
    assert r.exit_code == 2 and "\x1b" not in r.output and "Traceback" not in r.output, r.output
