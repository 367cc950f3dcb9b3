"""Scale-out load and fault benchmark (issue 10 item 5): the API server, two Celery workers, PostgreSQL and Redis,
all real processes on this machine; one worker is killed with SIGKILL in the middle of a job.

    .venv/bin/python bench/bench_scaleout.py [--jobs 6] [--clients 3] [--seconds 2.5] [--workers 2]

What it does: creates a fresh PostgreSQL database (dropped at the end) and flushes Redis database 10, initialises an
installation on them, starts `provatar serve` and `--workers` x `provatar worker --concurrency 1`, submits `--jobs`
generations from `--clients` concurrent httpx clients, and as soon as some job has rendered 20 % of its frames it
SIGKILLs the worker process that runs it (the Celery main process; its prefork child dies with it, recording
nothing). The job's lease expires, the reaper in a surviving worker requeues it and sends it
again, and it completes there.

Prints jobs/minute and p50/p95 time from submission to completion, and checks: every job succeeded (or failed with
a reason), each has exactly one `generation.completed` audit entry, the killed job ran again (attempts 2) and
`provatar audit verify` passes. Exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import sqlalchemy  # noqa: E402
from sqlmodel import col, select  # noqa: E402

from generation import load_audio  # noqa: E402
from service import client_ops, consent_ops  # noqa: E402
from service.models import Generation, JobStatus  # noqa: E402
from service.runtime import Runtime, initialize  # noqa: E402
from service.settings import Settings  # noqa: E402

PHOTO = ROOT / "examples" / "astronaut_eileen_collins.png"
AUDIO = ROOT / "examples" / "ljspeech_LJ001-0001.wav"
PG_ADMIN_URL = os.environ.get("PROVATAR_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = "redis://127.0.0.1:6379/10"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def short_wav(dest: Path, seconds: float) -> Path:
    track = load_audio(AUDIO).head(seconds)
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(track.sample_rate)
        w.writeframes((np.clip(track.samples, -1, 1) * 32767).astype("<i2").tobytes())
    return dest


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def start_s3(tmp: Path) -> tuple[dict[str, str], subprocess.Popen[bytes]]:
    """moto_server (a real S3-compatible HTTP server) on a loopback port, with a fresh bucket."""
    import boto3

    port = free_port()
    with open(tmp / "moto.log", "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=fh, stderr=fh
        )
    endpoint = f"http://127.0.0.1:{port}"
    storage = {
        "storage_url": "s3://provatar-scaleout/site",
        "s3_endpoint_url": endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": "bench",
        "s3_secret_access_key": "bench-secret",
    }
    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="x"
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            client.create_bucket(Bucket="provatar-scaleout")
            return storage, proc
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit("moto_server did not start:\n" + (tmp / "moto.log").read_text()[-2000:]) from None
            time.sleep(0.2)


def worker_machine_env(env: dict[str, str], api: Settings, data: Path) -> dict[str, str]:
    """A worker as on another machine: its own empty data dir holding only a copy of the service keys; the signing
    certificate, the audit key and witness are configuration it is given (a deployment mounts or injects them)."""
    shutil.copytree(api.keys_dir, data / "keys")
    return {
        **env,
        "PROVATAR_DATA_DIR": str(data),
        "PROVATAR_SIGNING_CERT_CHAIN": str(api.cert_chain_path),
        "PROVATAR_SIGNING_KEY": str(api.signing_key_path),
        "PROVATAR_TRUST_ANCHORS": str(api.trust_anchors_path),
        "PROVATAR_AUDIT_SIGNING_KEY": str(api.audit_signing_key or api.keys_dir / "audit_ed25519.pem"),
        "PROVATAR_AUDIT_WITNESS_PATH": str(api.witness_path),
    }


def check_outputs_in_bucket(base: str, creds: tuple[str, str], rt: Runtime, rows: dict[str, Generation]) -> list[str]:
    """Each succeeded job's video is an object in the bucket whose SHA-256 is the audited one."""
    import hashlib

    audited = {
        e.details["generation_id"]: e.details["output_sha256"]
        for e in rt.audit.query(action="generation.completed", limit=10_000)
    }
    problems = []
    for gen_id, gen in rows.items():
        if gen.status != JobStatus.succeeded:
            continue
        key = rt.storage.key_of(str(gen.output_path))
        if key is None or not str(gen.output_path).startswith("s3://"):
            problems.append(f"{gen_id}: output {gen.output_path} is not in the bucket")
            continue
        digest = hashlib.sha256(b"".join(rt.storage.iter_bytes(key))).hexdigest()
        if digest != audited.get(gen_id):
            problems.append(f"{gen_id}: the stored video is not the audited one")
    staged = list(rt.storage.list_older("staging/", older_than=-60))  # type: ignore[attr-defined]
    if staged:
        problems.append(f"staged outputs left in the bucket: {staged}")
    print(f"outputs in the bucket: {sum(g.status == JobStatus.succeeded for g in rows.values())} checked by SHA-256")
    return problems


async def one_client(
    base: str, creds: tuple[str, str], subject: str, photo: bytes, audio: bytes, jobs: int, submitted: dict[str, float]
) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=120, trust_env=False) as client:
        r = await client.post("/v1/token", data={"grant_type": "client_credentials"}, auth=creds)
        r.raise_for_status()
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        for _ in range(jobs):
            files = {"photo": ("p.png", photo, "image/png"), "audio": ("a.wav", audio, "audio/wav")}
            t0 = time.time()
            r = await client.post(
                "/v1/generations", data={"subject_id": subject, "purpose": "scaleout"}, files=files, headers=headers
            )
            if r.status_code != 202:
                raise SystemExit(f"submission refused: {r.status_code} {r.text}")
            submitted[r.json()["id"]] = t0


def main() -> None:  # noqa: C901 - one linear script: set up, run, kill, check, tear down
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.5, help="audio length of each job")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--lease", type=float, default=10.0, help="PROVATAR_JOB_LEASE_SECONDS for the run")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument(
        "--s3",
        action="store_true",
        help="outputs and uploads in an S3 bucket (moto_server on loopback); each worker gets its own data dir, as "
        "on another machine: only PostgreSQL, Redis, the bucket and the keys are shared",
    )
    args = ap.parse_args()

    import redis

    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    db_name = f"provatar_bench_celery_{uuid.uuid4().hex[:8]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{db_name}"'))
    db_url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{db_name}"

    tmp = Path(tempfile.mkdtemp(prefix="provatar-scaleout-"))
    procs: list[subprocess.Popen[bytes]] = []
    storage: dict[str, str] = {}
    if args.s3:
        storage, moto = start_s3(tmp)
        procs.append(moto)
    workers: dict[int, str] = {}  # pid (and process group) -> name
    failures: list[str] = []
    rt: Runtime | None = None
    try:
        settings = Settings(data_dir=tmp / "data", database_url=db_url, broker_url=REDIS_URL, **storage)
        initialize(settings)
        rt = Runtime(settings)
        subject, _ = consent_ops.enroll(
            rt,
            name="Eileen",
            photos=[PHOTO.read_bytes()],
            purposes=["scaleout"],
            clients=[],
            expires_days=1,
            evidence_sha256="e" * 64,
            actor="bench",
        )
        creds = []
        for i in range(args.clients):
            client, secret = client_ops.create(rt, name=f"scaleout-{i}", scopes=["generate"], actor="bench")
            creds.append((client.client_id, secret))
        audio = short_wav(tmp / "a.wav", args.seconds).read_bytes()

        env = {
            **os.environ,
            "PROVATAR_DATA_DIR": str(settings.data_dir),
            "PROVATAR_DATABASE_URL": db_url,
            "PROVATAR_BROKER_URL": REDIS_URL,
            "PROVATAR_JOB_LEASE_SECONDS": str(args.lease),
            "PROVATAR_JOB_REAPER_INTERVAL_SECONDS": "2",
            "PROVATAR_RATE_LIMITS_ENABLED": "false",
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            **{f"PROVATAR_{k.upper()}": v for k, v in storage.items()},
        }
        cli = [sys.executable, "-c", "from service.cli import main; main()"]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        logs = {"api": tmp / "api.log", **{f"worker{i}": tmp / f"worker{i}.log" for i in range(args.workers)}}
        with open(logs["api"], "wb") as fh:
            procs.append(subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=fh, stderr=fh))
        for i in range(args.workers):
            with open(logs[f"worker{i}"], "wb") as fh:
                proc = subprocess.Popen(
                    [*cli, "worker", "--concurrency", "1", "--loglevel", "info"],
                    env=worker_machine_env(env, settings, tmp / f"worker{i}-machine") if args.s3 else env,
                    stdout=fh,
                    stderr=fh,
                    start_new_session=True,
                )
            procs.append(proc)
            workers[proc.pid] = f"worker{i}"
        deadline = time.monotonic() + 180
        while not all(" ready." in logs[name].read_text(errors="replace") for name in workers.values()):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise SystemExit("a worker did not start:\n" + "\n".join(p.read_text()[-1500:] for p in logs.values()))
            time.sleep(0.5)
        while True:
            try:
                if httpx.get(f"{base}/v1/token", timeout=1, trust_env=False).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the API did not start:\n" + logs["api"].read_text()[-2000:])
            time.sleep(0.3)

        submitted: dict[str, float] = {}
        per_client = [args.jobs // args.clients + (i < args.jobs % args.clients) for i in range(args.clients)]
        t_start = time.time()

        async def submit_all() -> None:
            await asyncio.gather(
                *(
                    one_client(base, c, subject.id, PHOTO.read_bytes(), audio, n, submitted)
                    for c, n in zip(creds, per_client, strict=True)
                )
            )

        asyncio.run(submit_all())
        print(f"submitted {len(submitted)} jobs in {time.time() - t_start:.1f} s")

        killed: tuple[str, str, str] | None = None  # (generation, worker name, lease owner)
        finished_at: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while len(finished_at) < len(submitted):
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out; finished {len(finished_at)} of {len(submitted)}")
            with rt.session() as session:
                rows = {g.id: g for g in session.exec(select(Generation).where(col(Generation.id).in_(submitted)))}
            for gen_id, gen in rows.items():
                if gen.status not in (JobStatus.queued, JobStatus.running) and gen_id not in finished_at:
                    finished_at[gen_id] = time.time()
                    print(f"  {gen_id}: {gen.status} after {finished_at[gen_id] - submitted[gen_id]:.1f} s")
            if killed is None:
                busy = [g for g in rows.values() if g.status == JobStatus.running and g.progress >= 0.2]
                for gen in busy:
                    child = int(str(gen.lease_owner).split(":")[1])
                    main_pid = parent_pid(child)
                    if main_pid in workers:
                        os.kill(main_pid, signal.SIGKILL)
                        killed = (gen.id, workers[main_pid], str(gen.lease_owner))
                        print(
                            f"SIGKILL {workers[main_pid]} (pid {main_pid}) while it ran {gen.id} at "
                            f"{gen.progress:.0%}"
                        )
                        break
            time.sleep(0.25)
        wall = time.time() - t_start

        # Checks
        with rt.session() as session:
            rows = {g.id: g for g in session.exec(select(Generation).where(col(Generation.id).in_(submitted)))}
        completed = [e.details["generation_id"] for e in rt.audit.query(action="generation.completed", limit=10_000)]
        requeued = [e.details["generation_id"] for e in rt.audit.query(action="generation.requeued", limit=10_000)]
        for gen_id, gen in rows.items():
            if gen.status == JobStatus.succeeded:
                if completed.count(gen_id) != 1:
                    failures.append(f"{gen_id}: {completed.count(gen_id)} generation.completed entries")
            elif not gen.error_code or not gen.error_message:
                failures.append(f"{gen_id}: {gen.status} without a reason")
        if killed is None:
            failures.append("no worker was killed (no job reached 20 % while the check ran)")
        else:
            gen = rows[killed[0]]
            print(
                f"killed job {gen.id}: {gen.status}, attempts {gen.attempts}, requeued {requeued.count(gen.id)}x "
                f"(lease of {killed[2]} expired)"
            )
            if gen.attempts < 2 or requeued.count(gen.id) != 1:
                failures.append(f"the killed job {gen.id} was not retried once (attempts {gen.attempts})")
        if args.s3:  # every video is in the bucket, as audited; the API serves it though no worker ran on its disk
            failures += check_outputs_in_bucket(base, creds[0], rt, rows)
        verify = subprocess.run([*cli, "audit", "verify"], env=env, capture_output=True, text=True, timeout=300)
        print(f"provatar audit verify: exit {verify.returncode}: {verify.stdout.strip() or verify.stderr.strip()}")
        if verify.returncode != 0:
            failures.append("audit verify failed")

        times = sorted(finished_at[g] - submitted[g] for g in submitted)
        q = statistics.quantiles(times, n=20, method="inclusive")
        succeeded = sum(g.status == JobStatus.succeeded for g in rows.values())
        print(
            f"{len(submitted)} jobs of {args.seconds:.1f} s audio, {args.clients} clients, {args.workers} workers x "
            f"concurrency 1, PostgreSQL + Redis{' + S3 (moto_server)' if args.s3 else ''}, lease {args.lease:.0f} s; "
            f"{os.cpu_count()} CPUs"
        )
        print(
            f"succeeded {succeeded}/{len(submitted)}; wall {wall:.1f} s; {60 * len(submitted) / wall:.2f} jobs/minute"
        )
        print(f"time to completion: p50 {statistics.median(times):.1f} s, p95 {q[18]:.1f} s, max {times[-1]:.1f} s")
        print(f"generation.completed entries: {len(completed)} for {succeeded} succeeded jobs")
    finally:
        for proc in procs:  # workers: their whole group (the killed one's orphaned child too)
            try:
                os.killpg(proc.pid, signal.SIGTERM) if proc.pid in workers else proc.terminate()
            except ProcessLookupError:
                pass
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for pid in workers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if rt is not None:
            rt.close()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
        admin.dispose()
        broker.flushdb()
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures) + f"\nlogs and data kept in {tmp}")
        raise SystemExit(1)
    shutil.rmtree(tmp, ignore_errors=True)  # uploads and outputs of the run (a public-domain photo and voice)
    print("all checks passed")


if __name__ == "__main__":
    main()
