"""Uploads are typed by their bytes (magic numbers), the file name only a hint: a photo or audio whose name lies is
used as what it really is (and its C2PA ingredient says so), and data of the wrong kind is refused with a clear
error before anything is rendered, on the CLI and the API alike."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import c2pa
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from generation import load_audio
from generation.media import sniff_media_type
from tests.service.conftest import Cli, write_wav

EXPECTED = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "tiff": "image/tiff",
    "bmp": "image/bmp",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "m4a": "audio/mp4",
}


def image_bytes(photo: Path, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.open(photo).convert("RGB").save(buf, format=fmt)
    return buf.getvalue()


def encoded_audio(track_path: Path, container: str, codec: str, seconds: float = 1.0) -> bytes:
    """The first `seconds` of a clip, encoded with PyAV into `container` / `codec` (no ffmpeg binary needed)."""
    track = load_audio(track_path, sample_rate=48000).head(seconds)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream(codec, rate=48000, layout="mono")
        for i in range(0, len(track.samples), 1024):
            chunk = track.samples[i : i + 1024]
            frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="flt", layout="mono")
            frame.sample_rate = 48000
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def wav_bytes(example_audio: Path, tmp: Path, seconds: float = 1.0) -> bytes:
    track = load_audio(example_audio).head(seconds)
    return write_wav(tmp / "short.wav", track.samples, track.sample_rate).read_bytes()


def ingredient_formats(video: Path) -> list[str]:
    with open(video, "rb") as fh, c2pa.Reader("video/mp4", fh) as reader:
        manifest = json.loads(reader.json())
    active = manifest["manifests"][manifest["active_manifest"]]
    return sorted(str(i.get("format")) for i in active.get("ingredients", []))


# ------------------------------------------------------------------------------------------------- the sniffer
def test_media_types_come_from_the_bytes_not_the_name(
    example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    samples = {
        "png": example_photo.read_bytes(),
        "jpeg": image_bytes(example_photo, "JPEG"),
        "webp": image_bytes(example_photo, "WEBP"),
        "gif": image_bytes(example_photo, "GIF"),
        "tiff": image_bytes(example_photo, "TIFF"),
        "bmp": image_bytes(example_photo, "BMP"),
        "wav": wav_bytes(example_audio, tmp_path),
        "flac": encoded_audio(example_audio, "flac", "flac"),
        "ogg": encoded_audio(example_audio, "ogg", "libopus"),
        "mp3": encoded_audio(example_audio, "mp3", "libmp3lame"),
        "m4a": encoded_audio(example_audio, "ipod", "aac"),
    }
    for name, data in samples.items():
        kind = sniff_media_type(data)
        assert kind is not None and kind.mime == EXPECTED[name], (name, kind)
        path = tmp_path / f"lying-name.{'wav' if kind.kind == 'image' else 'png'}"  # the name says otherwise
        path.write_bytes(data)
        assert sniff_media_type(path) == kind
    # An MP3 without an ID3 tag starts with a frame header (sync word, layer III, a valid bitrate index).
    assert sniff_media_type(b"\xff\xfb\x90\x64" + b"\x00" * 60).mime == "audio/mpeg"  # type: ignore[union-attr]
    assert sniff_media_type(b"\xff\xf1\x50\x80" + b"\x00" * 60).mime == "audio/aac"  # type: ignore[union-attr]
    mp4 = b"\x00\x00\x00\x18ftypisom" + b"\x00" * 16
    assert sniff_media_type(mp4).kind == "video"  # type: ignore[union-attr]
    for unknown in (b"", b"plain text, not media", b"%PDF-1.7\n", b"\x00" * 64, b"\xff\xd8"):
        assert sniff_media_type(unknown) is None, unknown
    assert sniff_media_type(tmp_path / "missing.png") is None


# ---------------------------------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def enrolled(cli: Cli, example_photo: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert cli("init").exit_code == 0
    evidence = tmp_path_factory.mktemp("types") / "consent.txt"
    evidence.write_text("signed consent form")
    r = cli("consent", "enroll", str(example_photo), "--name", "E", "--purpose", "types", "--evidence", str(evidence),
            "--json")
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["subject_id"])


def _audit(data_dir: Path) -> list[tuple[str, dict[str, object]]]:
    with sqlite3.connect(data_dir / "provatar.db") as db:
        rows = db.execute("SELECT action, details FROM audit_event ORDER BY seq").fetchall()
    return [(a, json.loads(d) if d else {}) for a, d in rows]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("photo_fmt", "photo_name", "audio_fmt", "audio_name", "ingredients"),
    [
        ("PNG", "photo.jpg", "wav", "speech.wav", ["image/png", "audio/wav"]),
        ("PNG", "photo.png", "ogg", "speech.wav", ["image/png", "audio/ogg"]),
        ("JPEG", "photo.png", "wav", "speech.wav", ["image/jpeg", "audio/wav"]),
    ],
)
def test_cli_generate_uses_the_real_type_of_a_misnamed_input(
    cli: Cli,
    data_dir: Path,
    enrolled: str,
    example_photo: Path,
    example_audio: Path,
    tmp_path: Path,
    photo_fmt: str,
    photo_name: str,
    audio_fmt: str,
    audio_name: str,
    ingredients: list[str],
) -> None:
    photo = tmp_path / photo_name
    photo.write_bytes(image_bytes(example_photo, photo_fmt))
    audio = tmp_path / audio_name
    data = wav_bytes(example_audio, tmp_path) if audio_fmt == "wav" else encoded_audio(example_audio, "ogg", "libopus")
    audio.write_bytes(data)
    video = tmp_path / "out.mp4"
    r = cli("generate", str(photo), str(audio), "-o", str(video), "--subject", enrolled, "--purpose", "types",
            "--json")
    assert r.exit_code == 0, r.output  # before the fix the JPEG-in-.png case failed at signing: signing_failed
    assert sorted(ingredient_formats(video)) == sorted(ingredients)
    gen_id = json.loads(r.stdout)["generation_id"]
    done = [d for a, d in _audit(data_dir) if a == "generation.completed" and d.get("generation_id") == gen_id]
    assert done and [done[0]["photo_type"], done[0]["audio_type"]] == ingredients


@pytest.mark.slow
def test_cli_refuses_data_of_the_wrong_kind_before_rendering(
    cli: Cli, data_dir: Path, enrolled: str, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    wav = wav_bytes(example_audio, tmp_path)
    cases = [
        (wav, example_photo.read_bytes(), "invalid_image", "audio/wav data"),  # audio where the photo goes
        (example_photo.read_bytes(), example_photo.read_bytes(), "invalid_audio", "image/png data"),
        (b"%PDF-1.7 not a photo", wav, "invalid_image", "not a known image format"),
    ]
    for photo_data, audio_data, code, said in cases:
        photo, audio, video = tmp_path / "photo.png", tmp_path / "speech.wav", tmp_path / "out.mp4"
        photo.write_bytes(photo_data)
        audio.write_bytes(audio_data)
        before = len(_audit(data_dir))
        r = cli("generate", str(photo), str(audio), "-o", str(video), "--subject", enrolled, "--purpose", "types")
        assert r.exit_code == 2, r.output
        assert f"error[{code}]" in r.output and said in r.output, r.output
        assert not video.exists()
        new = _audit(data_dir)[before:]
        assert not any(a == "policy.decision" for a, _ in new)  # refused before the policy, faces and rendering
        assert any(a == "generation.failed" and d.get("code") == code for a, d in new), new


# ---------------------------------------------------------------------------------------------------- the API
@dataclass
class Api:
    client: TestClient
    headers: dict[str, str]
    subject: str

    def submit(self, photo: tuple[str, bytes], audio: tuple[str, bytes]):  # type: ignore[no-untyped-def]
        files = {"photo": (*photo, "image/png"), "audio": (*audio, "audio/wav")}  # declared types lie too
        data = {"subject_id": self.subject, "purpose": "types"}
        return self.client.post("/v1/generations", data=data, files=files, headers=self.headers)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, example_photo: Path) -> Iterator[Api]:
    from service.api.main import create_app
    from service.runtime import Runtime, initialize
    from service.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("types-api") / "data")
    init = initialize(settings)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app) as client:
        r = client.post("/v1/token", data={"grant_type": "client_credentials"},
                        auth=(str(init.admin_client_id), str(init.admin_secret)))
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        r = client.post(
            "/v1/subjects",
            data={"name": "E", "purposes": ["types"]},
            files=[("photos", ("p.png", example_photo.read_bytes(), "image/png")),
                   ("evidence", ("c.txt", b"consent", "text/plain"))],
            headers=headers,
        )
        assert r.status_code == 201, r.text
        yield Api(client, headers, str(r.json()["id"]))
    rt.close()


@pytest.mark.slow
def test_api_jpeg_in_a_png_upload_is_signed_as_jpeg(
    api: Api, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    client, headers = api.client, api.headers
    speech = wav_bytes(example_audio, tmp_path)
    r = api.submit(("portrait.png", image_bytes(example_photo, "JPEG")), ("speech.wav", speech))
    assert r.status_code == 202, r.text
    assert client.app.state.worker.run_pending() == 1  # type: ignore[attr-defined]
    job = client.get(f"/v1/generations/{r.json()['id']}", headers=headers).json()
    assert job["status"] == "succeeded", job  # was failed / signing_failed
    video = client.get(f"/v1/generations/{job['id']}/video", headers=headers)
    out = tmp_path / "out.mp4"
    out.write_bytes(video.content)
    assert ingredient_formats(out) == ["audio/wav", "image/jpeg"]


@pytest.mark.slow
def test_api_refuses_data_of_the_wrong_kind_with_a_clear_400(
    api: Api, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    wav = wav_bytes(example_audio, tmp_path)
    for photo, audio, code, said in (
        (wav, wav, "invalid_image", "audio/wav data"),
        (example_photo.read_bytes(), example_photo.read_bytes(), "invalid_audio", "image/png data"),
        (example_photo.read_bytes(), np.zeros(64, np.uint8).tobytes(), "invalid_audio", "not a known audio format"),
    ):
        r = api.submit(("p.png", photo), ("a.wav", audio))
        assert r.status_code == 400 and r.json()["code"] == code and said in r.json()["message"], r.text
    params = {"action": "request.rejected", "limit": 100}
    events = api.client.get("/v1/audit/events", params=params, headers=api.headers)
    codes = [e["details"]["code"] for e in events.json()["items"]]
    assert codes.count("invalid_image") >= 1 and codes.count("invalid_audio") >= 2
