"""The HTTP API end to end: auth on every route, a full generation with a token from the token endpoint,
denials, bad input (clean 4xx, nothing left behind, audited), and job recovery after a restart."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import ECKey

from service.api.main import create_app
from service.models import Generation, JobStatus
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import long_silence_wav, short_speech

pytestmark = pytest.mark.slow

SCOPE_OF_PREFIX = {
    "/v1/generations": "generate",
    "/v1/detections": "detect",
    "/v1/audit": "audit:read",
    "/v1/subjects": "consent:write",
    "/v1/blocklist": "consent:write",
    "/v1/clients": "clients:admin",
    "/v1/webhooks": "webhooks",
    "/v1/reviews": "consent:write",
}


@dataclass
class Api:
    app: FastAPI
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]
    tmp: Path

    def token(self, scope: str | None = None, creds: tuple[str, str] | None = None) -> str:
        data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        r = self.client.post("/v1/token", data=data, auth=creds or self.admin)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def bearer(self, scope: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(scope)}"}

    def audit(self, **filters: str) -> list[dict[str, object]]:
        r = self.client.get("/v1/audit/events", params={"limit": 1000, **filters}, headers=self.bearer("audit:read"))
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    settings = Settings(data_dir=tmp / "data", max_upload_bytes=4 * 1024 * 1024, rate_limits_enabled=False)
    init = initialize(settings)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app) as client:
        yield Api(app, client, rt, (str(init.admin_client_id), str(init.admin_secret)), tmp)
    rt.close()


def _v1_routes(api: Api) -> list[tuple[str, str]]:
    """Every /v1 operation in the OpenAPI schema (the token endpoint aside), with path parameters filled in."""
    routes = []
    for path, ops in api.app.openapi()["paths"].items():
        if path.startswith("/v1") and path != "/v1/token":
            for method in ops:
                routes.append((method.upper(), re.sub(r"\{[^}]+\}", "x_1", path)))
    return routes


def test_every_v1_route_refuses_missing_forged_expired_and_wrong_scope_tokens(api: Api) -> None:
    routes = _v1_routes(api)
    assert len(routes) >= 12
    forger = ECKey.generate_key("P-256")
    now = int(time.time())
    claims = {
        "iss": "provatar",
        "aud": "provatar-api",
        "sub": api.admin[0],
        "client_id": api.admin[0],
        "scope": "generate detect consent:read consent:write audit:read",
        "iat": now,
        "exp": now + 60,
    }
    forged = jwt.encode({"alg": "ES256"}, claims, forger)
    expired = jwt.encode({"alg": "ES256"}, {**claims, "exp": now - 300}, api.rt.tokens._key)
    tampered = api.token()[:-4] + "AAAA"
    for method, path in routes:
        for headers in (
            {},
            {"Authorization": "Bearer " + forged},
            {"Authorization": "Bearer " + expired},
            {"Authorization": "Bearer " + tampered},
            {"Authorization": "Basic YTpi"},
        ):
            r = api.client.request(method, path, headers=headers)
            assert r.status_code == 401, (method, path, headers, r.text)
            assert r.json()["code"] in ("missing_token", "invalid_token")
        needed = next(s for p, s in SCOPE_OF_PREFIX.items() if path.startswith(p))
        other = "detect" if needed != "detect" else "generate"
        if method == "GET" and needed == "consent:write":
            continue  # reads need consent:read, checked below
        r = api.client.request(method, path, headers=api.bearer(other))
        assert r.status_code == 403, (method, path, r.text)
        assert r.json()["code"] == "insufficient_scope"
    r = api.client.get("/v1/subjects", headers=api.bearer("consent:write"))
    assert r.status_code == 403
    # Summarised per source: the first failure in full, the rest of the window as one counted entry.
    api.app.state.rejections.flush(force=True)
    failures = api.audit(action="auth.failed")
    summaries = api.audit(action="auth.failed.summary")
    counted = len(failures) + sum(int(e["details"]["count"]) for e in summaries)  # type: ignore[index]
    assert counted >= len(routes) * 5 and len(failures) + len(summaries) <= 6


def test_token_endpoint(api: Api) -> None:
    r = api.client.post(
        "/v1/token",
        data={
            "grant_type": "client_credentials",
            "client_id": api.admin[0],
            "client_secret": api.admin[1],
            "scope": "detect",
        },
    )
    assert r.status_code == 200 and r.json()["scope"] == "detect" and r.headers["cache-control"] == "no-store"
    r = api.client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=(api.admin[0], "wrong"))
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert r.headers["www-authenticate"].startswith("Basic ")
    r = api.client.post("/v1/token", data={"grant_type": "password"}, auth=api.admin)
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = api.client.post("/v1/token", data={"grant_type": "client_credentials", "scope": "root"}, auth=api.admin)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    assert api.client.get("/.well-known/jwks.json").json()["keys"][0]["alg"] == "ES256"
    assert api.client.get("/health").json()["status"] == "ok"


def _enroll(api: Api, photo: Path, purposes: list[str]) -> dict[str, object]:
    files = [
        ("photos", (photo.name, photo.read_bytes(), "image/png")),
        ("evidence", ("consent.txt", b"signed consent", "text/plain")),
    ]
    r = api.client.post(
        "/v1/subjects", data={"name": "Eileen", "purposes": purposes}, files=files, headers=api.bearer("consent:write")
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert "embedding" not in json.dumps(body)
    return dict(body)


def _submit(
    api: Api,
    photo: Path,
    audio: Path,
    subject: str,
    purpose: str = "api-test",
    photo_bytes: bytes | None = None,
    audio_bytes: bytes | None = None,
):  # type: ignore[no-untyped-def]
    files = {
        "photo": (photo.name, photo_bytes if photo_bytes is not None else photo.read_bytes(), "image/png"),
        "audio": (audio.name, audio_bytes if audio_bytes is not None else audio.read_bytes(), "audio/wav"),
    }
    return api.client.post(
        "/v1/generations", data={"subject_id": subject, "purpose": purpose}, files=files, headers=api.bearer("generate")
    )


def test_full_generation_through_the_api(api: Api, example_photo: Path, example_audio: Path) -> None:
    subject = _enroll(api, example_photo, ["api-test"])
    audio = short_speech(example_audio, api.tmp / "speech.wav", 2.0)
    r = _submit(api, example_photo, audio, str(subject["id"]))
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued"
    assert api.app.state.worker.run_pending() == 1
    assert not list(api.rt.settings.uploads_dir.glob("req_*"))  # the uploaded photo and audio are not kept
    r = api.client.get(f"/v1/generations/{job['id']}", headers=api.bearer("generate"))
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
    video = api.client.get(f"/v1/generations/{job['id']}/video", headers=api.bearer("generate"))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    r = api.client.post(
        "/v1/detections", files={"file": ("clip.mp4", video.content, "video/mp4")}, headers=api.bearer("detect")
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["verdict"] == "provatar-generated"
    assert report["watermark"]["generation_id"] == job["id"] and report["c2pa"]["state"] == "Trusted"
    actions = [e["action"] for e in api.audit(subject=str(subject["id"]))]
    for a in (
        "subject.enrolled",
        "consent.granted",
        "policy.decision",
        "generation.requested",
        "generation.completed",
        "detection.completed",
    ):
        assert a in actions, a
    assert api.client.get("/v1/audit/verify", headers=api.bearer("audit:read")).json()["intact"] is True
    export = api.client.get(
        "/v1/audit/export", params={"action": "generation.completed"}, headers=api.bearer("audit:read")
    )
    lines = [json.loads(x) for x in export.text.splitlines()]
    assert lines and all(x["action"] == "generation.completed" for x in lines)

    # Revocation: the very next request is denied with the reason.
    r = api.client.post(
        f"/v1/subjects/{subject['id']}/revoke", data={"reason": "withdrawn"}, headers=api.bearer("consent:write")
    )
    assert r.status_code == 200, r.text
    r = _submit(api, example_photo, audio, str(subject["id"]))
    assert r.status_code == 403 and r.json()["code"] == "consent_revoked", r.text
    assert "consent_revoked" in r.json()["reasons"]


def test_bad_input_gets_a_clear_4xx_leaves_nothing_and_is_audited(
    api: Api, example_photo: Path, example_audio: Path
) -> None:
    subject = _enroll(api, example_photo, ["api-test"])
    audio = short_speech(example_audio, api.tmp / "speech2.wav", 1.0)
    uploads = api.rt.settings.uploads_dir
    before = set(uploads.iterdir())
    cases = [
        ({"photo_bytes": b"not an image at all"}, 400, "invalid_image"),
        ({"audio_bytes": b""}, 400, "invalid_audio"),
        ({"audio_bytes": b"RIFF\x00\x00\x00\x00WAVEjunk" * 10}, 400, "invalid_audio"),
        ({"photo_bytes": b"\x89PNG" + b"\x00" * (5 * 1024 * 1024)}, 413, "payload_too_large"),
    ]
    for kwargs, status, code in cases:
        r = _submit(api, example_photo, audio, str(subject["id"]), **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status and r.json()["code"] == code, (code, r.text)
        assert "Traceback" not in r.text and r.json()["message"]
    files = {"photo": ("p.png", example_photo.read_bytes(), "image/png"), "audio": ("a.wav", audio.read_bytes())}
    r = api.client.post(
        "/v1/generations",
        data={"subject_id": subject["id"], "purpose": "api-test", "gaze_x": "5"},
        files=files,
        headers=api.bearer("generate"),
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_controls" and "gaze_x" in r.json()["message"]
    hour = long_silence_wav(api.tmp / "hour.wav", 3600)  # 28.8 MB > the 4 MiB limit of this app
    r = _submit(api, example_photo, hour, str(subject["id"]))
    assert r.status_code == 413
    r = api.client.post(
        "/v1/detections",
        files={"file": ("x.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\xff" * 4000)},
        headers=api.bearer("detect"),
    )
    assert r.status_code == 400 and r.json()["code"] in ("invalid_video", "unsupported_media"), r.text
    assert set(uploads.iterdir()) == before  # nothing left behind
    rejected = [e for e in api.audit() if e["action"] in ("request.rejected", "detection.failed")]
    codes = {json.loads(json.dumps(e["details"])).get("code") for e in rejected}  # type: ignore[union-attr]
    assert {"invalid_image", "invalid_audio", "payload_too_large"} <= codes


def test_audio_over_the_policy_limit_is_denied(api: Api, example_photo: Path, tmp_path: Path) -> None:
    subject = _enroll(api, example_photo, ["api-test"])
    three_min = long_silence_wav(tmp_path / "3min.wav", 180)  # 1.4 MB, longer than the 120 s policy limit
    r = _submit(api, example_photo, three_min, str(subject["id"]))
    assert r.status_code == 403 and r.json()["code"] == "audio_too_long", r.text


def test_jobs_whose_runner_is_gone_are_requeued_or_failed_visibly(api: Api, example_photo: Path) -> None:
    """Running rows without a live lease (here: none at all, as rows from before leases) are the reaper's: retried
    while attempts are left, then failed with `lease_expired` and a reason."""
    from service.jobs import Worker
    from service.reaper import reap_expired_leases

    limit = api.rt.settings.job_max_attempts
    with api.rt.session() as session:
        for gid, attempts in (("gen_interrupted1", 1), ("gen_interrupted2", limit)):
            session.add(
                Generation(
                    id=gid,
                    request_id="r",
                    subject_id="subj_x",
                    purpose="p",
                    client_id="c",
                    watermark_tag=hash(gid) & 0xFFFFFFF,
                    photo_path=str(example_photo),
                    audio_path="/nonexistent.wav",
                    status=JobStatus.running,
                    attempts=attempts,
                )
            )
        session.commit()
    worker = Worker(api.rt)
    assert set(reap_expired_leases(api.rt)) >= {"gen_interrupted1", "gen_interrupted2"}
    with api.rt.session() as session:
        assert session.get(Generation, "gen_interrupted1").status == JobStatus.queued  # type: ignore[union-attr]
        failed = session.get(Generation, "gen_interrupted2")
        assert failed.status == JobStatus.failed and failed.error_code == "lease_expired"  # type: ignore[union-attr]
        assert f"{limit} attempts" in str(failed.error_message)  # type: ignore[union-attr]
    worker.run_pending()  # the requeued job runs again and fails visibly (its audio is gone)
    with api.rt.session() as session:
        again = session.get(Generation, "gen_interrupted1")
        assert again.status == JobStatus.failed and again.error_code == "invalid_audio"  # type: ignore[union-attr]
        assert again.attempts == 2 and again.lease_owner is None  # type: ignore[union-attr]


def test_websocket_stream_is_authorised_policy_checked_watermarked_and_audited(
    api: Api, example_photo: Path, example_audio: Path
) -> None:
    import struct

    import cv2
    import numpy as np
    from starlette.websockets import WebSocketDisconnect

    from generation import load_audio
    from safeguards.watermark import WatermarkDetector

    subject = _enroll(api, example_photo, ["live"])
    # No token: an error message, then the socket is closed with 1008.
    with api.client.websocket_connect("/v1/stream") as ws:
        assert ws.receive_json()["code"] == "missing_token"
        with pytest.raises(WebSocketDisconnect):
            ws.receive_text()
    # Wrong scope.
    with api.client.websocket_connect(f"/v1/stream?access_token={api.token('detect')}") as ws:
        assert ws.receive_json()["code"] == "insufficient_scope"
    # A purpose the subject did not consent to is denied before any frame is made.
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({"subject_id": subject["id"], "purpose": "ads", "sample_rate": 16000}))
        ws.send_bytes(example_photo.read_bytes())
        assert ws.receive_json()["code"] == "consent_wrong_purpose"

    audio = load_audio(example_audio).head(2.0)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
    frames: list[np.ndarray] = []
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({"subject_id": subject["id"], "purpose": "live", "sample_rate": audio.sample_rate}))
        ws.send_bytes(example_photo.read_bytes())
        ready = ws.receive_json()
        assert ready["type"] == "ready" and ready["fps"] == 25
        step = 3200 * 2  # 200 ms of 16 kHz s16le
        for i in range(0, len(pcm), step):
            ws.send_bytes(pcm[i : i + step])
        ws.send_text(json.dumps({"type": "end"}))
        while True:
            msg = ws.receive()
            if msg.get("text"):
                done = json.loads(msg["text"])
                break
            index = struct.unpack(">I", msg["bytes"][:4])[0]
            assert index == len(frames)
            img = cv2.imdecode(np.frombuffer(msg["bytes"][4:], np.uint8), cv2.IMREAD_COLOR)
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    assert done["type"] == "done" and done["frames"] == len(frames) == 50  # 2.0 s at 25 fps, as offline
    mark = WatermarkDetector(api.rt.watermark_key).detect(frames)
    with api.rt.session() as session:
        gen = session.get(Generation, ready["generation_id"])
        assert gen is not None and gen.status == JobStatus.succeeded
        assert mark.found and mark.tag == gen.watermark_tag
    events = api.audit(subject=str(subject["id"]))
    assert any(e["action"] == "generation.completed" and e["details"]["live"] for e in events)  # type: ignore[index]
