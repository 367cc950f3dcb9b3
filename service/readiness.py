"""Readiness: can this process do its work right now? Each dependency is checked on its own, timed, and reported
with its own status, so an operator sees which one failed (GET /health/ready; service/api/routes/health.py).

Checks: the database answers `SELECT 1`; the audit chain head is readable; the audit witness file holds the
newest signed checkpoint (neither lagging nor ahead: audit.witness.check_witness); the storage is reachable and writable
(S3: the bucket answers; local: the data dir takes a file) and the data dir has PROVATAR_MIN_FREE_DISK_BYTES free;
the broker answers a ping when PROVATAR_BROKER_URL is set; the models can be loaded (packages and weight files
present; which ones this process has loaded already is shown, but loading is lazy and not required).
Nothing here loads a model or writes to the database.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from sqlalchemy import text

from service.errors import describe
from service.runtime import Runtime

# Seconds a broker ping may take before readiness calls it down (a probe must answer well within its own timeout).
BROKER_TIMEOUT_S = 2.0
# Packages the generation and detection paths import, and the model files they read (checked without importing).
_MODEL_PACKAGES = ("torch", "mediapipe", "dlib", "av", "c2pa", "face_recognition_models")
_PACKAGED_MODELS = ("synthetic_clip_v2.npz", "detector_fusion_v1.json")
_DLIB_FILES = (
    "shape_predictor_5_face_landmarks.dat",
    "shape_predictor_68_face_landmarks.dat",
    "dlib_face_recognition_resnet_model_v1.dat",
)
# Runtime attributes that hold a model once it is loaded (functools.cached_property stores it in __dict__).
_LOADED = ("generator", "analyzer", "classifier", "fusion")


class CheckFailed(Exception):
    """A check ran and found its dependency not usable; `code` says how (e.g. storage_low_on_space)."""

    def __init__(self, code: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.details = details or {}


@dataclass
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        return [name for name, c in self.checks.items() if not c["ok"]]

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> None:
        """Run one check; its exception becomes its own failure (with a code, never internals), not the probe's."""
        t0 = time.perf_counter()
        try:
            result = {"ok": True, **fn()}
        except CheckFailed as exc:
            result = {"ok": False, "code": exc.code, **exc.details}
        except Exception as exc:
            code = describe(exc).code
            result = {"ok": False, "code": f"{name}_unavailable" if code == "internal_error" else code}
        result["latency_ms"] = round((time.perf_counter() - t0) * 1000, 1)
        self.checks[name] = result


def check_readiness(rt: Runtime) -> Readiness:
    ready = Readiness()
    ready.run("database", lambda: _database(rt))
    ready.run("audit_log", lambda: _audit_log(rt))
    ready.run("audit_witness", lambda: _audit_witness(rt))
    ready.run("storage", lambda: _storage(rt))
    if rt.settings.broker_url:
        ready.run("broker", lambda: _broker(str(rt.settings.broker_url)))
    ready.run("models", lambda: _models(rt))
    return ready


def _database(rt: Runtime) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"dialect": rt.engine.dialect.name}


def _audit_log(rt: Runtime) -> dict[str, Any]:
    checkpoint = rt.audit.checkpoint()
    return {"entries": checkpoint.size if checkpoint else 0}


def _audit_witness(rt: Runtime) -> dict[str, Any]:
    """The witness file keeps up with the signed checkpoint (audit.witness.check_witness). An append in another
    process lands between reading the checkpoint and the witness now and then; a mismatch is read again before it
    counts, since a real one (failed witnessing, a rollback) stays."""
    from audit.witness import check_witness

    for attempt in range(3):
        health = check_witness(rt.audit.witness, rt.audit.checkpoint())
        if health.ok or health.code not in ("witness_lagging", "witness_ahead") or attempt == 2:
            break
        time.sleep(0.05)
    details = {"configured": health.configured, "checkpoint_size": health.checkpoint_size}
    if health.witnessed_size is not None:
        details["witnessed_size"] = health.witnessed_size
    if not health.ok:
        raise CheckFailed(str(health.code), {**details, "message": health.message})
    return details


def _storage(rt: Runtime) -> dict[str, Any]:
    found = rt.storage.check()
    # Renders are staged on this machine's disk whatever the store, so its free space matters either way.
    data_dir = rt.settings.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".health.", suffix=".part", dir=data_dir)
    os.close(fd)
    os.unlink(probe)
    free = shutil.disk_usage(data_dir).free
    details = {**found, "free_bytes": free, "min_free_bytes": rt.settings.min_free_disk_bytes}
    if free < rt.settings.min_free_disk_bytes:
        raise CheckFailed("storage_low_on_space", details)
    return details


def _broker(url: str) -> dict[str, Any]:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise CheckFailed("broker_scheme_unsupported")
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=BROKER_TIMEOUT_S, socket_timeout=BROKER_TIMEOUT_S)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CheckFailed("broker_unavailable", {"error": type(exc).__name__}) from exc
    finally:
        client.close()
    return {"kind": "redis"}


def _models(rt: Runtime) -> dict[str, Any]:
    missing = [p for p in _MODEL_PACKAGES if importlib.util.find_spec(p) is None]
    models = resources.files("safeguards") / "models"
    missing += [name for name in _PACKAGED_MODELS if not (models / name).is_file()]
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        dlib_dir = next(iter(spec.submodule_search_locations))
        missing += [name for name in _DLIB_FILES if not os.path.isfile(os.path.join(dlib_dir, "models", name))]
    weights = rt.settings.facenet_weights_path
    if rt.settings.face_embedder == "facenet" and (weights is None or not weights.is_file()):
        missing.append("facenet_weights")
    loaded = {name: name in vars(rt) for name in _LOADED}
    if missing:
        raise CheckFailed("models_missing", {"missing": missing, "loaded": loaded})
    return {"loadable": True, "loaded": loaded}
