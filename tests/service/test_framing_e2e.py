"""Full-frame output end to end: the CLI flag, the API field and the stream config, each giving the photo's own frame
size (1280x853 -> 1280x852, 4000x3000 -> 1440x1080, 1920x1080 as is), a watermark that decodes at that size (also
after a platform's x264 re-encode), a trusted C2PA manifest; bad values refused as clean, audited 4xx / exit 2."""

from __future__ import annotations

import json
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from generation import load_audio, load_image, probe_video
from service.api.main import create_app
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.generation.test_framing import widened
from tests.service.conftest import Cli, short_speech

pytestmark = pytest.mark.slow


@dataclass
class Installed:
    data_dir: Path
    subject: str
    audio: Path
    work: Path


@pytest.fixture(scope="module")
def installed(
    cli: Cli, data_dir: Path, example_photo: Path, example_audio: Path, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    work = tmp_path_factory.mktemp("framing")
    assert cli("init").exit_code == 0
    evidence = work / "consent.txt"
    evidence.write_text("signed consent form")
    r = cli("consent", "enroll", str(example_photo), "--name", "Eileen", "--purpose", "test",
            "--evidence", str(evidence), "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    audio = short_speech(example_audio, work / "speech.wav", 1.2)
    return Installed(data_dir, json.loads(r.stdout)["subject_id"], audio, work)


def _photo(example_photo: Path, dest: Path, width: int, height: int) -> Path:
    img = widened(load_image(example_photo, max_pixels=50_000_000), width, height)
    Image.fromarray(img).save(dest, quality=92) if dest.suffix == ".jpg" else Image.fromarray(img).save(dest)
    return dest


def _generate(cli: Cli, installed: Installed, photo: Path, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return cli("generate", str(photo), str(installed.audio), "-o", str(out), "--subject", installed.subject,
               "--purpose", "test", "--json", *extra)  # fmt: skip


@pytest.mark.parametrize(
    ("name", "photo_size", "frame_size"),
    [("p1280.png", (1280, 853), (1280, 852)), ("p4000.jpg", (4000, 3000), (1440, 1080)),
     ("p1920.png", (1920, 1080), (1920, 1080))],
)  # fmt: skip
def test_cli_full_framing_keeps_the_photo_size_and_carries_watermark_and_c2pa(
    cli: Cli,
    installed: Installed,
    example_photo: Path,
    name: str,
    photo_size: tuple[int, int],
    frame_size: tuple[int, int],
) -> None:
    photo = _photo(example_photo, installed.work / name, *photo_size)
    out = installed.work / f"{name}.mp4"
    r = _generate(cli, installed, photo, out, "--framing", "full")
    assert r.exit_code == 0, r.output
    gen = json.loads(r.stdout)
    assert gen["framing"] == "full"
    info = probe_video(out)
    assert (info.width, info.height) == frame_size and info.pix_fmt == "yuv420p" and info.frames == 30
    r = cli("detect", str(out), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["c2pa"]["present"] and report["c2pa"]["state"] == "Trusted"
    assert report["watermark"]["found"] and report["watermark"]["generation_id"] == gen["generation_id"]
    if frame_size != (1920, 1080):
        return
    # What a platform does to an upload: served at 720p, re-encoded at CRF 28 (no C2PA left); the mark alone names
    # the generation (read at 0.667, the scale a 1080-pixel side suggests).
    stripped = rescale_x264(out, installed.work / f"{name}.720p.mp4", (1280, 720), crf=28)
    report = json.loads(cli("detect", str(stripped), "--json").stdout)
    assert not report["c2pa"]["present"]
    assert report["watermark"]["found"] and report["watermark"]["generation_id"] == gen["generation_id"]
    assert report["watermark"]["scale"] == pytest.approx(720 / 1080)


def rescale_x264(src: Path, dest: Path, size: tuple[int, int], *, crf: int) -> Path:
    """Decode, resize to ``size`` (width, height) and re-encode with x264: a platform's rendition of an upload."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = size[0], size[1], "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in inp.decode(vin):
            for packet in vout.encode(frame.reformat(width=size[0], height=size[1], format="yuv420p")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dest


def test_cli_refuses_bad_framing_and_size_with_exit_2_and_audits_them(
    cli: Cli, installed: Installed, example_photo: Path
) -> None:
    out = installed.work / "refused.mp4"
    for extra, field in ((("--framing", "wide"), "framing"), (("--size", "513"), "size"), (("--size", "64"), "size")):
        r = _generate(cli, installed, example_photo, out, *extra)
        assert r.exit_code == 2, r.output
        assert "error[invalid_controls]" in r.output and field in r.output and "Traceback" not in r.output
        assert not out.exists()
    with sqlite3.connect(installed.data_dir / "provatar.db") as db:
        rows = db.execute("SELECT details FROM audit_event WHERE action = 'request.rejected'").fetchall()
    assert sum(json.loads(d)["code"] == "invalid_controls" for (d,) in rows) >= 3


def test_crop_framing_takes_the_size(cli: Cli, installed: Installed, example_photo: Path) -> None:
    out = installed.work / "crop384.mp4"
    r = _generate(cli, installed, example_photo, out, "--size", "384")
    assert r.exit_code == 0, r.output
    info = probe_video(out)
    assert (info.width, info.height) == (384, 384)


# ----------------------------------------------------------------------------------------------------------- API
@dataclass
class Api:
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]
    tmp: Path
    subject: str = ""

    def bearer(self, scope: str) -> dict[str, str]:
        r = self.client.post("/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=self.admin)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, example_photo: Path) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("framing-api")
    settings = Settings(data_dir=tmp / "data", rate_limits_enabled=False)
    init = initialize(settings)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app) as client:
        api = Api(client, rt, (str(init.admin_client_id), str(init.admin_secret)), tmp)
        files = [("photos", (example_photo.name, example_photo.read_bytes(), "image/png")),
                 ("evidence", ("consent.txt", b"signed consent", "text/plain"))]  # fmt: skip
        r = client.post("/v1/subjects", data={"name": "Eileen", "purposes": ["framing"]}, files=files,
                        headers=api.bearer("consent:write"))  # fmt: skip
        assert r.status_code == 201, r.text
        api.subject = r.json()["id"]
        yield api
    rt.close()


def test_api_framing_field_is_validated_audited_and_honoured(
    api: Api, example_photo: Path, example_audio: Path
) -> None:
    subject = api.subject
    photo = _photo(example_photo, api.tmp / "wide.png", 1280, 853)
    audio = short_speech(example_audio, api.tmp / "speech.wav", 1.0)

    def submit(key: str | None = None, **fields: str):  # type: ignore[no-untyped-def]
        files = {"photo": ("p.png", photo.read_bytes(), "image/png"), "audio": ("a.wav", audio.read_bytes())}
        data = {"subject_id": subject, "purpose": "framing", **fields}
        headers = api.bearer("generate") | ({"Idempotency-Key": key} if key else {})
        return api.client.post("/v1/generations", data=data, files=files, headers=headers)

    for fields, status, code, field in (
        ({"framing": "panorama"}, 400, "invalid_controls", "framing"),
        ({"framing": "full", "size": "1000001"}, 400, "invalid_controls", "size"),
        ({"size": "514.5"}, 422, "invalid_request", "size"),
    ):
        r = submit(**fields)
        assert r.status_code == status, r.text
        body = r.json()
        assert r.headers["content-type"].startswith("application/problem+json") and body["code"] == code
        assert field in json.dumps(body) and "Traceback" not in r.text
    r = api.client.get("/v1/audit/events", params={"action": "request.rejected", "limit": 100},
                       headers=api.bearer("audit:read"))  # fmt: skip
    codes = [e["details"].get("code") for e in r.json()["items"]]
    assert codes.count("invalid_controls") >= 2 and "invalid_request" in codes

    r = submit("framing-key-1", framing="full")
    assert r.status_code == 202, r.text
    job = r.json()
    # The framing is part of the request: the same key with another framing is not a replay.
    r = submit("framing-key-1", framing="crop")
    assert r.status_code == 409 and r.json()["code"] == "idempotency_key_reused", r.text
    assert api.client.app.state.worker.run_pending() == 1  # type: ignore[attr-defined]
    video = api.client.get(f"/v1/generations/{job['id']}/video", headers=api.bearer("generate"))
    assert video.status_code == 200
    out = api.tmp / "api-full.mp4"
    out.write_bytes(video.content)
    info = probe_video(out)
    assert (info.width, info.height) == (1280, 852)


def test_stream_config_framing_full_sends_full_frames(api: Api, example_photo: Path, example_audio: Path) -> None:
    from safeguards.watermark import WatermarkDetector

    subject = api.subject
    photo = _photo(example_photo, api.tmp / "wide-live.png", 1280, 853)
    audio = load_audio(example_audio).head(1.0)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
    config = {"subject_id": subject, "purpose": "framing", "sample_rate": audio.sample_rate}
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({**config, "framing": "sideways"}))
        assert ws.receive_json()["code"] == "invalid_controls"
    frames: list[np.ndarray] = []
    with api.client.websocket_connect("/v1/stream", headers=api.bearer("generate")) as ws:
        ws.send_text(json.dumps({**config, "framing": "full"}))
        ws.send_bytes(photo.read_bytes())
        ready = ws.receive_json()
        assert ready["type"] == "ready" and (ready["width"], ready["height"]) == (1280, 852), ready
        ws.send_bytes(pcm)
        ws.send_text(json.dumps({"type": "end"}))
        while True:
            msg = ws.receive()
            if msg.get("text"):
                break
            assert struct.unpack(">I", msg["bytes"][:4])[0] == len(frames)
            img = cv2.imdecode(np.frombuffer(msg["bytes"][4:], np.uint8), cv2.IMREAD_COLOR)
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    assert len(frames) == 25 and all(f.shape == (852, 1280, 3) for f in frames)
    assert WatermarkDetector(api.rt.watermark_key).detect(frames).found
