"""A small, bounded API load test against the real server (`provatar serve` as a subprocess, loopback only).

N concurrent clients each get a token, submit generations (with an Idempotency-Key, one of them sent twice),
poll them until they finish, page through their generations and cancel one queued job. Prints p50/p95/max
latency per API call (the rendering runs in the server's worker meanwhile and is not what is measured) and the
number of 5xx answers, which must be 0.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/bench_api_load.py [--clients 4] [--jobs 3] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from generation import load_audio  # noqa: E402
from service import client_ops, consent_ops  # noqa: E402
from service.runtime import Runtime, initialize  # noqa: E402
from service.settings import Settings  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"
LATENCIES: dict[str, list[float]] = defaultdict(list)
STATUSES: dict[int, int] = defaultdict(int)


async def call(client: httpx.AsyncClient, name: str, method: str, url: str, **kwargs: object) -> httpx.Response:
    t0 = time.perf_counter()
    r = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
    LATENCIES[name].append((time.perf_counter() - t0) * 1000)
    STATUSES[r.status_code] += 1
    return r


async def one_client(base: str, creds: tuple[str, str], subject: str, photo: bytes, audio: bytes, jobs: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120, trust_env=False) as client:
        r = await call(
            client, "POST /v1/token", "POST", "/v1/token", data={"grant_type": "client_credentials"}, auth=creds
        )
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        files = {"photo": ("p.png", photo, "image/png"), "audio": ("a.wav", audio, "audio/wav")}
        data = {"subject_id": subject, "purpose": "load"}
        ids = []
        for i in range(jobs):
            key = {"Idempotency-Key": f"{creds[0]}-{i}"}
            r = await call(
                client, "POST /v1/generations", "POST", "/v1/generations", data=data, files=files, headers=headers | key
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        r = await call(
            client,
            "POST /v1/generations (replay)",
            "POST",
            "/v1/generations",
            data=data,
            files=files,
            headers=headers | {"Idempotency-Key": f"{creds[0]}-0"},
        )
        assert r.json()["id"] == ids[0]
        r = await call(client, "POST .../cancel", "POST", f"/v1/generations/{ids[-1]}/cancel", headers=headers)
        pending = set(ids)
        while pending:
            for gen_id in list(pending):
                r = await call(client, "GET /v1/generations/{id}", "GET", f"/v1/generations/{gen_id}", headers=headers)
                if r.json()["status"] not in ("queued", "running"):
                    pending.discard(gen_id)
            r = await call(client, "GET /v1/generations", "GET", "/v1/generations?limit=2", headers=headers)
            if r.json()["next"]:
                await call(client, "GET /v1/generations", "GET", r.json()["next"], headers=headers)
            await asyncio.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--jobs", type=int, default=3, help="submissions per client")
    ap.add_argument("--seconds", type=float, default=1.0, help="audio length of each job")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="provatar-load-"))
    settings = Settings(data_dir=tmp / "data")
    initialize(settings)
    rt = Runtime(settings)
    subject, _ = consent_ops.enroll(
        rt,
        name="Eileen",
        photos=[PHOTO.read_bytes()],
        purposes=["load"],
        clients=[],
        expires_days=1,
        evidence_sha256="e" * 64,
        actor="bench",
    )
    creds = []
    for i in range(args.clients):
        client, secret = client_ops.create(rt, name=f"load-{i}", scopes=["generate"], actor="bench")
        creds.append((client.client_id, secret))
    rt.close()
    track = load_audio(AUDIO).head(args.seconds)
    wav = tmp / "a.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(track.sample_rate)
        w.writeframes((np.clip(track.samples, -1, 1) * 32767).astype("<i2").tobytes())

    port = free_port()
    env = {**os.environ, "PROVATAR_DATA_DIR": str(settings.data_dir), "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen(
        [sys.executable, "-c", "from service.cli import main; main()", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the server did not start: " + server.communicate()[1].decode()[-2000:])
            time.sleep(0.2)
        t0 = time.perf_counter()
        photo, audio = PHOTO.read_bytes(), wav.read_bytes()

        async def run_all() -> None:
            await asyncio.gather(*(one_client(base, c, subject.id, photo, audio, args.jobs) for c in creds))

        asyncio.run(run_all())
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)

    print(
        f"{args.clients} clients x {args.jobs} jobs of {args.seconds:.1f} s audio, real server on loopback, "
        f"{wall:.1f} s wall; {os.cpu_count()} CPUs"
    )
    print(f"{'call':32s} {'n':>5s} {'p50 ms':>8s} {'p95 ms':>8s} {'max ms':>8s}")
    for name, values in sorted(LATENCIES.items()):
        q = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else values * 19
        print(f"{name:32s} {len(values):5d} {statistics.median(values):8.1f} {q[18]:8.1f} {max(values):8.1f}")
    five_xx = sum(n for s, n in STATUSES.items() if s >= 500)
    print(f"status codes: {dict(sorted(STATUSES.items()))}; 5xx: {five_xx}")
    if five_xx:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
