"""Revoking consent stops a live WebSocket stream of that subject (issue 14): within a bounded time, whether audio is
flowing or not, with close code 1008 and the reason code, recorded as a cancelled generation and audited."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from service.api.main import create_app
from service.models import Generation, JobStatus
from service.runtime import Runtime, initialize
from service.settings import Settings

pytestmark = pytest.mark.slow

CHECK_S = 0.2  # PROVATAR_LIVE_STOP_CHECK_S for these tests


class Api:
    def __init__(self, client: TestClient, rt: Runtime, admin: tuple[str, str]) -> None:
        self.client, self.rt, self.admin = client, rt, admin

    def bearer(self, scope: str) -> dict[str, str]:
        r = self.client.post("/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=self.admin)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def audit(self, subject: str) -> list[dict[str, object]]:
        r = self.client.get(
            "/v1/audit/events", params={"limit": 1000, "subject": subject}, headers=self.bearer("audit:read")
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("live")
    settings = Settings(data_dir=tmp / "data", rate_limits_enabled=False, live_stop_check_s=CHECK_S)
    init = initialize(settings)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app) as client:
        yield Api(client, rt, (str(init.admin_client_id), str(init.admin_secret)))
    rt.close()


@pytest.fixture(scope="module")
def pcm(example_audio: Path) -> tuple[bytes, int]:
    from generation import load_audio

    audio = load_audio(example_audio).head(3.0)
    return (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes(), audio.sample_rate


def _enroll(api: Api, photo: Path) -> str:
    files = [
        ("photos", (photo.name, photo.read_bytes(), "image/png")),
        ("evidence", ("consent.txt", b"signed consent", "text/plain")),
    ]
    r = api.client.post(
        "/v1/subjects", data={"name": "Eileen", "purposes": ["live"]}, files=files, headers=api.bearer("consent:write")
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _revoke(api: Api, subject: str) -> None:
    r = api.client.post(
        f"/v1/subjects/{subject}/revoke", data={"reason": "withdrawn"}, headers=api.bearer("consent:write")
    )
    assert r.status_code == 200, r.text


def _drain(ws) -> tuple[int, dict[str, object], WebSocketDisconnect | None]:  # type: ignore[no-untyped-def]
    """Frames received, the final text message, and how the socket then closed (None: it did not close)."""
    frames = 0
    while True:
        msg = ws.receive()
        if msg.get("type") == "websocket.close":
            raise AssertionError(f"closed without a final message: {msg}")
        if msg.get("text"):
            final = json.loads(msg["text"])
            break
        assert struct.unpack(">I", msg["bytes"][:4])[0] == frames
        frames += 1
    closed = None
    if final.get("type") == "error":
        try:
            ws.receive_text()
        except WebSocketDisconnect as exc:
            closed = exc
    return frames, final, closed


def _ts(event: dict[str, object]) -> float:
    return datetime.fromisoformat(str(event["ts"]).replace("Z", "+00:00")).timestamp()


def _check_stopped(
    api: Api, subject: str, generation_id: str, closed: WebSocketDisconnect | None, *, bound_s: float
) -> None:
    assert closed is not None and closed.code == 1008 and closed.reason == "consent_revoked"
    with api.rt.session() as session:
        gen = session.get(Generation, generation_id)
        assert gen is not None and gen.status == JobStatus.cancelled and gen.error_code == "consent_revoked"
        assert gen.lease_owner is None
    events = api.audit(subject)
    revoked = [e for e in events if e["action"] == "consent.revoked"]
    cancelled = [
        e
        for e in events
        if e["action"] == "generation.cancelled" and e["details"]["generation_id"] == generation_id  # type: ignore[index]
    ]
    assert len(revoked) == 1 and len(cancelled) == 1, [e["action"] for e in events]
    assert cancelled[0]["details"]["code"] == "consent_revoked" and cancelled[0]["details"]["live"]  # type: ignore[index]
    assert cancelled[0]["outcome"] == "error"
    assert 0 <= _ts(cancelled[0]) - _ts(revoked[0]) < bound_s


def test_revocation_stops_an_idle_stream_with_a_policy_close(
    api: Api, example_photo: Path, pcm: tuple[bytes, int]
) -> None:
    subject = _enroll(api, example_photo)
    data, rate = pcm
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({"subject_id": subject, "purpose": "live", "sample_rate": rate}))
        ws.send_bytes(example_photo.read_bytes())
        ready = ws.receive_json()
        assert ready["type"] == "ready"
        _revoke(api, subject)  # the client is quiet: only the server's own check can notice
        time.sleep(CHECK_S * 5)
        # A stream that ignored the revocation would now end normally with "done".
        ws.send_text(json.dumps({"type": "end"}))
        frames, final, closed = _drain(ws)
    assert final["type"] == "error" and final["code"] == "consent_revoked", final
    assert frames == 0
    # Idle, the bound is one check interval (plus the thread and database hops).
    _check_stopped(api, subject, str(ready["generation_id"]), closed, bound_s=CHECK_S + 2.0)


def test_revocation_stops_a_stream_while_audio_flows(api: Api, example_photo: Path, pcm: tuple[bytes, int]) -> None:
    subject = _enroll(api, example_photo)
    data, rate = pcm
    step = rate // 5 * 2  # 200 ms chunks of s16le
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({"subject_id": subject, "purpose": "live", "sample_rate": rate}))
        ws.send_bytes(example_photo.read_bytes())
        ready = ws.receive_json()
        assert ready["type"] == "ready"
        ws.send_bytes(data[:step])
        _revoke(api, subject)
        time.sleep(CHECK_S * 2)
        for i in range(step, len(data), step):
            ws.send_bytes(data[i : i + step])
        ws.send_text(json.dumps({"type": "end"}))
        frames, final, closed = _drain(ws)
    assert final["type"] == "error" and final["code"] == "consent_revoked", final
    assert frames < 75  # 3 s of audio would make 75 frames
    # Audio flowing, a chunk being rendered finishes first: the bound adds one chunk's rendering (200 ms of audio).
    _check_stopped(api, subject, str(ready["generation_id"]), closed, bound_s=CHECK_S + 5.0)


def test_a_stream_of_a_subject_whose_consent_stands_runs_to_the_end(
    api: Api, example_photo: Path, pcm: tuple[bytes, int]
) -> None:
    """The control: the same stream, idle for the same time, with nobody revoking, ends normally."""
    subject = _enroll(api, example_photo)
    data, rate = pcm
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({"subject_id": subject, "purpose": "live", "sample_rate": rate}))
        ws.send_bytes(example_photo.read_bytes())
        assert ws.receive_json()["type"] == "ready"
        ws.send_bytes(data[: rate * 2])
        time.sleep(CHECK_S * 5)
        ws.send_text(json.dumps({"type": "end"}))
        frames, final, closed = _drain(ws)
    assert final["type"] == "done" and frames == final["frames"] == 25 and closed is None
