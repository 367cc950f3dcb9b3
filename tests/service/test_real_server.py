"""`provatar serve` as a real process on a loopback port, driven by real client libraries (httpx, websockets):
a whole clip streamed over the WebSocket, refusals with their close codes, and no token in the server's log."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from generation import load_audio
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

CHUNK_S = 0.2


@dataclass
class Server:
    base: str
    ws: str
    admin: tuple[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    def token(self, scope: str) -> str:
        r = httpx.post(
            f"{self.base}/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=self.admin
        )
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(data_dir: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # Unbuffered: the test reads the server's log while it runs.
    return {**os.environ, "PROVATAR_DATA_DIR": str(data_dir), "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@contextmanager
def running_server(tmp: Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`provatar init` then `provatar serve` on a free port, as an operator starts them; stopped on exit."""
    env = env or cli_env(tmp / "data")
    init = subprocess.run(
        [sys.executable, "-m", "service.cli", "init"], env=env, capture_output=True, text=True, timeout=300
    )
    assert init.returncode == 0, init.stderr
    fields = dict(line.split(":", 1) for line in init.stdout.splitlines() if line.strip().startswith("client_"))
    admin = (fields["  client_id"].strip(), fields["  client_secret"].strip())
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, stdout=fh, stderr=fh
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert proc.poll() is None, f"provatar serve exited with {proc.returncode}:\n{log.read_text()}"
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"provatar serve did not come up:\n{log.read_text()}"
            time.sleep(0.5)
        yield Server(base, f"ws://127.0.0.1:{port}", admin, log, proc)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("real-server")) as srv:
        yield srv


@pytest.fixture(scope="module")
def subject(server: Server, example_photo: Path) -> str:
    r = httpx.post(
        f"{server.base}/v1/subjects",
        data={"name": "Eileen", "purposes": ["live"]},
        files=[
            ("photos", (example_photo.name, example_photo.read_bytes(), "image/png")),
            ("evidence", ("consent.txt", b"signed consent", "text/plain")),
        ],
        headers={"Authorization": f"Bearer {server.token('consent:write')}"},
        timeout=120,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _stream(
    url: str, headers: dict[str, str], config: dict[str, object], photo: bytes, pcm: bytes, rate: int
) -> tuple[dict[str, object], list[tuple[int, bytes]], dict[str, object], int]:
    """Stream a clip in real time (one 200 ms chunk every 200 ms) while reading frames on the side.

    Returns the ready message, the (index, jpeg) frames, the done message, and how many frames arrived before
    the client said "end" (the proof that frames come out while audio is still going in)."""
    frames: list[tuple[int, bytes]] = []
    async with connect(url, additional_headers=headers, max_size=None, proxy=None, compression=None) as ws:
        await ws.send(json.dumps(config))
        await ws.send(photo)
        ready = json.loads(await asyncio.wait_for(ws.recv(), 120))
        assert ready.get("type") == "ready", ready

        async def read() -> dict[str, object]:
            async for message in ws:
                if isinstance(message, str):
                    return dict(json.loads(message))
                frames.append((struct.unpack(">I", message[:4])[0], message[4:]))
            raise AssertionError("the server closed the stream without a done message")

        reader = asyncio.create_task(read())
        step = int(CHUNK_S * rate) * 2  # s16le
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
            await asyncio.sleep(CHUNK_S)
        before_end = len(frames)
        await ws.send(json.dumps({"type": "end"}))
        done = await asyncio.wait_for(reader, 120)
        await ws.wait_closed()
        assert ws.close_code == 1000
    return ready, frames, done, before_end


def test_a_real_websocket_client_streams_a_whole_clip_through_provatar_serve(
    server: Server, subject: str, example_photo: Path, example_audio: Path
) -> None:
    audio = load_audio(example_audio).head(2.0)
    pcm = (np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes()
    token = server.token("generate")
    config = {"subject_id": subject, "purpose": "live", "sample_rate": audio.sample_rate, "encoding": "pcm_s16le"}
    ready, frames, done, before_end = asyncio.run(
        _stream(
            f"{server.ws}/v1/stream",
            {"Authorization": f"Bearer {token}"},
            config,
            example_photo.read_bytes(),
            pcm,
            audio.sample_rate,
        )
    )
    assert ready["fps"] == 25 and str(ready["generation_id"]).startswith("gen_")
    assert [i for i, _ in frames] == list(range(50))  # 2.0 s at 25 fps, in order, none missing or repeated
    assert done == {
        "type": "done",
        "generation_id": ready["generation_id"],
        "frames": 50,
        "duration_s": 2.0,
    }
    assert before_end > 0, "no frame arrived while audio was still streaming"
    for _, jpeg in frames[:: len(frames) // 5]:
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (ready["height"], ready["width"], 3)
    r = httpx.get(
        f"{server.base}/v1/generations/{ready['generation_id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text


def test_real_server_refuses_a_stream_with_a_message_and_close_code(server: Server, subject: str) -> None:
    async def refused(url: str) -> tuple[dict[str, object], int | None]:
        async with connect(url, proxy=None) as ws:
            message = json.loads(await ws.recv())
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            return dict(message), ws.close_code

    message, code = asyncio.run(refused(f"{server.ws}/v1/stream"))
    assert message["code"] == "missing_token" and code == 1008
    message, code = asyncio.run(refused(f"{server.ws}/v1/stream?access_token={server.token('detect')}"))
    assert message["code"] == "insufficient_scope" and code == 1008


def test_query_string_tokens_never_reach_the_server_log(server: Server) -> None:
    ws_token = server.token("generate")
    http_token = server.token("consent:read")

    async def open_and_leave() -> None:
        async with connect(f"{server.ws}/v1/stream?access_token={ws_token}", proxy=None) as ws:
            await ws.close()

    asyncio.run(open_and_leave())
    r = httpx.get(f"{server.base}/v1/subjects", params={"access_token": http_token, "limit": "1"})
    assert r.status_code == 401  # query tokens are for the WebSocket only; the request is still logged
    r = httpx.get(f"{server.base}/health?x=1&token=SECRET-IN-PARAM&api_key=ANOTHER-ONE")
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while "token=[REDACTED]&api_key=[REDACTED]" not in server.log_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = server.log_text()
    assert '"WebSocket /v1/stream?access_token=[REDACTED]"' in log  # the lines are there, the secrets are not
    assert "GET /v1/subjects?access_token=[REDACTED]" in log
    assert "/health?x=1&token=[REDACTED]&api_key=[REDACTED]" in log
    for secret in (ws_token, http_token, "SECRET-IN-PARAM", "ANOTHER-ONE", ws_token.split(".")[2]):
        assert secret not in log
