"""An initialised provatar installation in a temp dir, and media helpers for end-to-end tests."""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
import uuid
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from generation import load_audio, load_image
from service.cli import app
from service.settings import get_settings


@dataclass
class Cli:
    runner: CliRunner
    env: dict[str, str]

    def __call__(self, *args: str):  # type: ignore[no-untyped-def]
        get_settings.cache_clear()
        result = self.runner.invoke(app, list(args), env=self.env, catch_exceptions=False)
        get_settings.cache_clear()
        return result


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("provatar-data")


@pytest.fixture(scope="module")
def cli(data_dir: Path) -> Iterator[Cli]:
    mp = pytest.MonkeyPatch()
    mp.setenv("PROVATAR_DATA_DIR", str(data_dir))
    get_settings.cache_clear()
    runner = CliRunner()
    yield Cli(runner, {"PROVATAR_DATA_DIR": str(data_dir)})
    mp.undo()
    get_settings.cache_clear()


@dataclass
class S3Server:
    """A real S3-compatible HTTP server (moto's server mode, its own process) on a loopback port."""

    endpoint: str

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="provatar-test",
            aws_secret_access_key="provatar-test-secret",
        )

    def new_bucket(self) -> str:
        name = f"provatar-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, prefix: str = "site-a") -> dict[str, Any]:
        """Settings fields that put a provatar installation's storage in `bucket`."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "s3_endpoint_url": self.endpoint,
            "s3_region": "us-east-1",
            "s3_access_key_id": "provatar-test",
            "s3_secret_access_key": "provatar-test-secret",
        }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto_server started as a subprocess (not moto's in-process mock): requests cross a real socket and HTTP."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("moto[server] (a dev dependency) is not installed")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"moto_server exited:\n{log.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, f"moto_server did not come up:\n{log.read_text()}"
                time.sleep(0.1)
        yield S3Server(f"http://127.0.0.1:{port}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def short_speech(example_audio: Path, dest: Path, seconds: float) -> Path:
    track = load_audio(example_audio).head(seconds)
    return write_wav(dest, track.samples, track.sample_rate)


def long_silence_wav(dest: Path, seconds: int) -> Path:
    """A real `seconds`-long 8 kHz 8-bit WAV, written cheaply (one hour is 28.8 MB)."""
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(1)
        w.setframerate(8000)
        chunk = b"\x80" * 8000 * 60
        for _ in range(seconds // 60):
            w.writeframes(chunk)
    return dest


def huge_png_header(dest: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height pixels (the pixel data is a stub): refusing it must not decode it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    dest.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    )
    return dest


def two_face_photo(example_photo: Path, dest: Path) -> Path:
    img = load_image(example_photo, max_pixels=10**8)
    both = np.concatenate([img, img[:, ::-1]], axis=1)
    from PIL import Image

    Image.fromarray(both).save(dest)
    return dest


def no_face_photo(dest: Path) -> Path:
    from PIL import Image

    yy, xx = np.mgrid[0:256, 0:256]
    img = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.uint8)
    Image.fromarray(img).save(dest)
    return dest


def reencode_x264(src: Path, dest: Path, *, crf: int = 28) -> Path:
    """What a platform does to an upload: decode, re-encode with x264 at `crf`; no metadata (C2PA) survives."""
    with av.open(str(src)) as inp, av.open(str(dest), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream("libx264", rate=vin.average_rate or 25)
        vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        vout.options = {"crf": str(crf), "preset": "medium"}
        for frame in inp.decode(vin):
            for packet in vout.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    return dest


def flip_byte_in_mdat(src: Path, dest: Path) -> Path:
    """Copy `src` with one byte flipped inside the video data (the mdat box), not in the manifest."""
    data = bytearray(src.read_bytes())
    pos = 0
    while pos + 8 <= len(data):
        size = struct.unpack(">I", data[pos : pos + 4])[0]
        kind = bytes(data[pos + 4 : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        if kind == b"mdat":
            target = pos + header + (size - header) // 2
            data[target] ^= 0x01
            dest.write_bytes(bytes(data))
            return dest
        if size < 8:
            break
        pos += size
    raise AssertionError("no mdat box found")
