"""WebSocket streaming: audio chunks in, watermarked JPEG frames out, after the same auth and policy checks.

Protocol (all on `/v1/stream`, token in `Authorization: Bearer` or `?access_token=`; scope `generate`):
1. client -> text  {"subject_id": ..., "purpose": ..., "sample_rate": 16000, "encoding": "pcm_s16le"|"pcm_f32le",
   "controls": {"gaze_x": 0.2, "emotion": "happy", "seed": 3, ...}, "framing": "crop"|"full", "size": 512}
   (controls, framing and size optional; lip sync is acoustic; "full" streams the whole photo, up to 1920x1080)
2. client -> binary  the photo (JPEG/PNG/WebP)
3. server -> text  {"type": "ready", "generation_id", "fps", "width", "height", "lookahead_ms"}  (or an error)
4. client -> binary  mono PCM chunks; server -> binary  4-byte big-endian frame index + JPEG, for each ready frame
5. client -> text  {"type": "end"}; server sends the remaining frames, then {"type": "done", "frames", ...}
Errors: server -> text {"type": "error", "code", "message"} and closes (1008 auth/policy, 1003 bad input); the
close reason is the error code.
Revocation: the stream re-reads its consent and cancel flag at every chunk and, while no chunk arrives, every
PROVATAR_LIVE_STOP_CHECK_S seconds; a revoked or expired consent ends it with {"type": "error", "code":
"consent_revoked" | "consent_expired"} and close code 1008 (a cancel request: "cancelled", 1008), audited as
generation.cancelled.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
import struct
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from generation.framing import Framing
from service.errors import Forbidden, InvalidInput, StreamStopped, Unauthorized, describe
from service.live import LiveStream, open_live_stream
from service.runtime import Runtime
from service.validation import check_text

router = APIRouter(tags=["streaming"])
MAX_CHUNK_BYTES = 1 << 20


async def _fail(ws: WebSocket, rt: Runtime, exc: BaseException, actor: str, rid: str) -> None:
    problem = describe(exc)
    # Policy denials are audited as decisions already, a stopped stream by its generation.cancelled entry.
    if "decision" not in problem.details and not isinstance(exc, StreamStopped):
        rt.audit.append(
            action="auth.failed" if problem.http_status in (401, 403) else "request.rejected",
            actor=actor,
            outcome="denied" if problem.http_status in (401, 403) else "rejected",
            request_id=rid,
            details={"path": "/v1/stream", "code": problem.code, "message": problem.message},
        )
    try:
        await ws.send_text(json.dumps({"type": "error", **problem.to_json()}))
        policy = problem.http_status in (401, 403) or isinstance(exc, StreamStopped)
        await ws.close(code=1008 if policy else 1003, reason=problem.code)
    except (RuntimeError, WebSocketDisconnect):  # the client is already gone
        pass


def _decode(data: bytes, encoding: str) -> np.ndarray:
    if encoding == "pcm_f32le":
        if len(data) % 4:
            raise InvalidInput("pcm_f32le chunks must be a whole number of 4-byte samples", code="invalid_audio")
        return np.frombuffer(data, dtype="<f4").astype(np.float32)
    if len(data) % 2:
        raise InvalidInput("pcm_s16le chunks must be a whole number of 2-byte samples", code="invalid_audio")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


async def _next_message(ws: WebSocket, live: LiveStream) -> Any:
    """The client's next message; while waiting for it, check every `live_stop_check_s` seconds that the stream may
    still run, so a revocation ends an idle stream too (StreamStopped). The pending receive is never cancelled:
    a message that arrives during a check is kept, not lost."""
    receive = asyncio.ensure_future(ws.receive())
    try:
        while True:
            done, _ = await asyncio.wait({receive}, timeout=live.rt.settings.live_stop_check_s)
            if done:
                return receive.result()
            await asyncio.to_thread(live.check_allowed, force=True)
    finally:
        if not receive.done():
            receive.cancel()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    rt: Runtime = ws.app.state.runtime
    rid = ws.headers.get("x-request-id") or secrets.token_hex(16)
    actor = f"anonymous@{ws.client.host if ws.client else '?'}"
    await ws.accept()
    staging = rt.settings.uploads_dir / f"live_{secrets.token_hex(8)}"
    live: LiveStream | None = None
    try:
        header = ws.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ws.query_params.get("access_token")
        if not token:
            raise Unauthorized("missing bearer token", code="missing_token")
        with rt.session() as session:
            principal = rt.tokens.verify(token, session=session)
        actor = principal.actor
        if "generate" not in principal.scopes:
            raise Forbidden("this token lacks the 'generate' scope", details={"required_scope": "generate"})
        try:
            config: dict[str, Any] = json.loads(await ws.receive_text())
            sample_rate = int(config.get("sample_rate", 16000))
            encoding = str(config.get("encoding", "pcm_s16le"))
            subject_id, purpose = str(config["subject_id"]), str(config["purpose"])
            controls = dict(config.get("controls") or {})
            framing = Framing.from_values(
                config.get("framing"), config.get("size"), default_size=rt.settings.output_size
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidInput(f"the first message must be the JSON stream config: {exc}") from exc
        if not 8000 <= sample_rate <= 96000 or encoding not in ("pcm_s16le", "pcm_f32le"):
            raise InvalidInput("sample_rate must be 8000..96000 and encoding pcm_s16le or pcm_f32le")
        check_text(subject_id, field="subject_id", max_length=64)  # NUL would be a database error on PostgreSQL
        check_text(purpose, field="purpose", max_length=64)
        photo = await ws.receive_bytes()
        if len(photo) > rt.settings.max_upload_bytes:
            raise InvalidInput("the photo exceeds the upload limit", code="payload_too_large")
        live = await asyncio.to_thread(
            open_live_stream,
            rt,
            photo=photo,
            subject_id=subject_id,
            purpose=purpose,
            client_id=principal.client_id,
            actor=actor,
            request_id=rid,
            sample_rate=sample_rate,
            staging=staging,
            controls=controls,
            framing=framing,
        )
        width, height = live.frame_size
        await ws.send_text(
            json.dumps(
                {
                    "type": "ready",
                    "generation_id": live.generation_id,
                    "fps": live.fps,
                    "width": width,
                    "height": height,
                    "lookahead_ms": round(live.session.config.lookahead_s * 1000),
                }
            )
        )
        index = 0
        while True:
            message = await _next_message(ws, live)
            if message.get("type") == "websocket.disconnect":
                raise WebSocketDisconnect(code=1001)
            if message.get("bytes") is not None:
                data = message["bytes"]
                if len(data) > MAX_CHUNK_BYTES:
                    raise InvalidInput("audio chunks must be at most 1 MiB", code="invalid_audio")
                frames = await asyncio.to_thread(live.push, _decode(data, encoding))
            elif json.loads(message.get("text") or "{}").get("type") == "end":
                frames = await asyncio.to_thread(live.finish)
            else:
                raise InvalidInput('expected audio bytes or {"type": "end"}')
            for jpeg in frames:
                await ws.send_bytes(struct.pack(">I", index) + jpeg)
                index += 1
            if live.closed:
                await ws.send_text(
                    json.dumps(
                        {
                            "type": "done",
                            "generation_id": live.generation_id,
                            "frames": index,
                            "duration_s": round(live.session.duration_s, 3),
                        }
                    )
                )
                await ws.close(code=1000)
                return
    except WebSocketDisconnect:
        if live is not None:
            live.close(ok=False, code="client_disconnected", message="the client left before the end of the stream")
    except Exception as exc:  # every refusal is answered, audited and closes the socket
        if live is not None:
            problem = describe(exc)
            live.close(ok=False, code=problem.code, message=problem.message)
        await _fail(ws, rt, exc, actor, rid)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
