"""Webhooks after the Standard Webhooks specification: clients register callback URLs for events; each event is
POSTed as JSON with `webhook-id`, `webhook-timestamp` and `webhook-signature` (`v1,` + base64 HMAC-SHA256 of
`id.timestamp.body` under the endpoint's `whsec_` secret), retried with exponential backoff, and every attempt is
kept with its outcome (service_webhook_attempt).

Callback URLs are a server-side request forgery risk: the service would POST wherever a client says. The policy:
http(s) only; plain http only with PROVATAR_WEBHOOK_ALLOW_HTTP; every address the host resolves to must be a
public (globally routable) one unless it lies in PROVATAR_WEBHOOK_ALLOWED_NETWORKS (CIDRs, e.g. `["10.2.0.0/16"]`
for an internal receiver, `["127.0.0.1/32"]` in tests). The check runs at registration and again before every
attempt, and the request goes to the address that was checked (the connection is pinned to it, the Host header
and TLS server name stay the URL's), so a DNS answer that changes in between cannot redirect it. Redirects are
not followed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import update
from sqlmodel import col, select

from service.errors import InvalidInput, NotFound
from service.keys import derive_key
from service.models import (
    Generation,
    JobStatus,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookStatus,
)
from service.runtime import Runtime
from service.settings import Settings

log = logging.getLogger("provatar.webhooks")

EVENTS: dict[str, str] = {
    "generation.succeeded": "a generation finished; its signed video can be downloaded",
    "generation.failed": "a generation failed or was denied by the policy (status and error_code say which)",
    "generation.cancelled": "a generation was cancelled",
    "consent.revoked": "consent was revoked for a subject this client generated with or was allowed to use",
    "generation.withdrawn": "videos of this client are no longer served (their subject's consent was revoked or "
    "expired, or the subject was erased): `generation_ids`, and `reasons` by id",
    "webhook.ping": "sent on request (POST /v1/webhooks/{id}/ping) to test an endpoint",
}
_GENERATION_EVENTS = {
    JobStatus.succeeded: "generation.succeeded",
    JobStatus.failed: "generation.failed",
    JobStatus.denied: "generation.failed",
    JobStatus.cancelled: "generation.cancelled",
}
_USER_AGENT = "provatar-webhooks/1"


# ------------------------------------------------------------------------------------------------- URL policy
def check_url(url: str, settings: Settings) -> list[str]:
    """Refuse a callback URL the policy does not allow; returns the addresses its host resolves to."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InvalidInput("a webhook URL must be http(s)", code="invalid_webhook_url")
    if parts.scheme == "http" and not settings.webhook_allow_http:
        raise InvalidInput("a webhook URL must use https (PROVATAR_WEBHOOK_ALLOW_HTTP)", code="invalid_webhook_url")
    if not parts.hostname or parts.username or parts.password:
        raise InvalidInput("a webhook URL needs a host and no user:password", code="invalid_webhook_url")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"cannot resolve the webhook host {parts.hostname!r}: {exc}", code="invalid_webhook_url"
        ) from exc
    allowed = [ipaddress.ip_network(n, strict=False) for n in settings.webhook_allowed_networks]
    addresses = sorted({str(info[4][0]) for info in infos})
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%")[0])
        if not ip.is_global and not any(ip in net for net in allowed):
            raise InvalidInput(
                f"the webhook host resolves to {ip}, which is not a public address "
                "(allow internal networks with PROVATAR_WEBHOOK_ALLOWED_NETWORKS)",
                code="invalid_webhook_url",
            )
    return addresses


def _pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, plus the Host header and TLS name to keep."""
    parts = urlsplit(url)
    host = f"[{address}]" if ":" in address else address
    netloc = f"{host}:{parts.port}" if parts.port else host
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return urlunsplit(parts._replace(netloc=netloc)), {"Host": parts.netloc}, extensions


# ---------------------------------------------------------------------------------------------------- secrets
def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _aead(rt: Runtime) -> AESGCM:
    return AESGCM(derive_key(rt.settings.keys_dir, "webhooks/secret-encryption/v1"))


def _encrypt(rt: Runtime, secret: str, endpoint_id: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = _aead(rt).encrypt(nonce, secret.encode(), endpoint_id.encode())  # bound to its endpoint
    return base64.b64encode(nonce + sealed).decode()


def _decrypt(rt: Runtime, blob: str, endpoint_id: str) -> str:
    raw = base64.b64decode(blob)
    return _aead(rt).decrypt(raw[:12], raw[12:], endpoint_id.encode()).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# -------------------------------------------------------------------------------------------------- endpoints
def create_endpoint(
    rt: Runtime,
    *,
    client_id: str,
    url: str,
    events: Sequence[str],
    description: str | None,
    actor: str,
    request_id: str | None,
) -> tuple[WebhookEndpoint, str]:
    """Register a callback URL for `events`; returns it with its signing secret (shown once)."""
    unknown = sorted(set(events) - set(EVENTS))
    if unknown or not events:
        raise InvalidInput(
            f"unknown or no events: {', '.join(unknown) or '(none)'}; known: {', '.join(EVENTS)}",
            code="invalid_request",
        )
    check_url(url, rt.settings)
    endpoint_id = "wh_" + secrets.token_hex(8)
    secret = new_secret()
    endpoint = WebhookEndpoint(
        id=endpoint_id,
        client_id=client_id,
        url=url,
        events=sorted(set(events)),
        description=description,
        secret_encrypted=_encrypt(rt, secret, endpoint_id),
    )
    with rt.session() as session:
        session.expire_on_commit = False
        session.add(endpoint)
        session.commit()
    rt.audit.append(
        action="webhook.created",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"webhook_id": endpoint_id, "url": url, "events": endpoint.events},
    )
    return endpoint, secret


def get_endpoint(rt: Runtime, *, client_id: str, endpoint_id: str) -> WebhookEndpoint:
    with rt.session() as session:
        endpoint = session.get(WebhookEndpoint, endpoint_id)
    # Another client's endpoint is reported as not found, like other clients' generations.
    if endpoint is None or endpoint.client_id != client_id or endpoint.disabled:
        raise NotFound(f"no webhook {endpoint_id!r} for this client", code="webhook_not_found")
    return endpoint


def delete_endpoint(rt: Runtime, *, client_id: str, endpoint_id: str, actor: str, request_id: str | None) -> None:
    """Stop deliveries to an endpoint; it and its delivery log are kept (disabled) for the record."""
    endpoint = get_endpoint(rt, client_id=client_id, endpoint_id=endpoint_id)
    with rt.session() as session:
        endpoint.disabled = True
        session.add(endpoint)
        session.execute(
            update(WebhookDelivery)
            .where(
                col(WebhookDelivery.endpoint_id) == endpoint_id, col(WebhookDelivery.status) == WebhookStatus.pending
            )
            .values(status=WebhookStatus.failed)
        )
        session.commit()
    rt.audit.append(
        action="webhook.deleted", actor=actor, outcome="ok", request_id=request_id, details={"webhook_id": endpoint_id}
    )


# ----------------------------------------------------------------------------------------------------- events
def enqueue(rt: Runtime, *, event_type: str, data: dict[str, Any], client_ids: Sequence[str]) -> list[str]:
    """Queue one delivery of the event per enabled endpoint of these clients that subscribed to it."""
    if not client_ids:
        return []
    with rt.session() as session:
        endpoints = session.exec(
            select(WebhookEndpoint).where(
                col(WebhookEndpoint.client_id).in_(list(client_ids)), col(WebhookEndpoint.disabled).is_(False)
            )
        ).all()
    return _insert(rt, [e for e in endpoints if event_type in e.events], event_type, data)


def enqueue_to(rt: Runtime, *, endpoint: WebhookEndpoint, event_type: str, data: dict[str, Any]) -> str:
    """Queue one delivery to one endpoint whatever it subscribed to (the ping)."""
    return _insert(rt, [endpoint], event_type, data)[0]


def _insert(rt: Runtime, endpoints: Sequence[WebhookEndpoint], event_type: str, data: dict[str, Any]) -> list[str]:
    payload = {"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}
    ids: list[str] = []
    with rt.session() as session:
        for endpoint in endpoints:
            delivery = WebhookDelivery(
                id="msg_" + secrets.token_hex(12), endpoint_id=endpoint.id, event_type=event_type, payload=payload
            )
            session.add(delivery)
            ids.append(delivery.id)
        session.commit()
    return ids


def generation_finished(rt: Runtime, gen: Generation) -> None:
    """Called by job_state when a generation reaches a final status."""
    event_type = _GENERATION_EVENTS.get(gen.status)
    if event_type is None:
        return
    data = {
        "generation_id": gen.id,
        "status": gen.status.value,
        "subject_id": gen.subject_id,
        "purpose": gen.purpose,
        "error_code": gen.error_code,
        "url": f"/v1/generations/{gen.id}",
    }
    enqueue(rt, event_type=event_type, data=data, client_ids=[gen.client_id])


def consent_revoked(rt: Runtime, *, subject_id: str, consent_id: str, allowed_clients: Sequence[str]) -> None:
    """Tell the clients concerned: those named in the consent, and those that generated with the subject."""
    with rt.session() as session:
        generated = session.exec(
            select(Generation.client_id).where(Generation.subject_id == subject_id).distinct()
        ).all()
    clients = sorted({*generated, *(c for c in allowed_clients if c != "*")})
    data = {"subject_id": subject_id, "consent_id": consent_id, "revoked_at": datetime.now(UTC).isoformat()}
    enqueue(rt, event_type="consent.revoked", data=data, client_ids=clients)


# -------------------------------------------------------------------------------------------------- delivery
def _claim_due(rt: Runtime, limit: int, lease: timedelta) -> list[WebhookDelivery]:
    """Due deliveries, each leased by moving its next_attempt_at forward (another dispatcher skips it)."""
    now = datetime.now(UTC)
    claimed = []
    with rt.session() as session:
        session.expire_on_commit = False
        due = session.exec(
            select(WebhookDelivery)
            .where(col(WebhookDelivery.status) == WebhookStatus.pending, col(WebhookDelivery.next_attempt_at) <= now)
            .order_by(col(WebhookDelivery.next_attempt_at))
            .limit(limit)
        ).all()
        for d in due:
            result = session.execute(
                update(WebhookDelivery)
                .where(col(WebhookDelivery.id) == d.id, col(WebhookDelivery.next_attempt_at) == d.next_attempt_at)
                .values(next_attempt_at=now + lease)
            )
            session.commit()
            if result.rowcount == 1:  # type: ignore[attr-defined]
                claimed.append(d)
    return claimed


def attempt(rt: Runtime, delivery: WebhookDelivery, client: httpx.Client) -> WebhookAttempt:
    """One POST of a delivery; records the attempt and schedules the retry (or gives up)."""
    settings = rt.settings
    with rt.session() as session:
        endpoint = session.get(WebhookEndpoint, delivery.endpoint_id)
    number = delivery.attempts + 1
    record = WebhookAttempt(delivery_id=delivery.id, attempt=number, outcome="network_error")
    t0 = time.perf_counter()
    if endpoint is None or endpoint.disabled:
        record.outcome, record.error = "refused_url", "the endpoint was deleted"
    else:
        try:
            address = check_url(endpoint.url, settings)[0]
            body = json.dumps(delivery.payload, separators=(",", ":")).encode()
            timestamp = int(time.time())
            secret = _decrypt(rt, endpoint.secret_encrypted, endpoint.id)
            url, host, extensions = _pinned(endpoint.url, address)
            headers = {
                **host,
                "content-type": "application/json",
                "user-agent": _USER_AGENT,
                "webhook-id": delivery.id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(secret, delivery.id, timestamp, body),
            }
            response = client.post(url, content=body, headers=headers, extensions=extensions)
            record.status_code = response.status_code
            record.outcome = "ok" if 200 <= response.status_code < 300 else "http_error"
            if record.outcome != "ok":
                record.error = response.text[:200]
        except InvalidInput as exc:
            record.outcome, record.error = "refused_url", exc.message[:500]
        except httpx.HTTPError as exc:
            record.error = f"{type(exc).__name__}: {exc}"[:500]
    record.duration_ms = int((time.perf_counter() - t0) * 1000)
    _finish(rt, delivery, record, give_up=endpoint is None or endpoint.disabled)
    return record


def _finish(rt: Runtime, delivery: WebhookDelivery, record: WebhookAttempt, *, give_up: bool) -> None:
    settings = rt.settings
    now = datetime.now(UTC)
    values: dict[str, Any] = {"attempts": record.attempt, "last_status_code": record.status_code}
    if record.outcome == "ok":
        values.update(status=WebhookStatus.succeeded, delivered_at=now)
    elif give_up or record.attempt >= settings.webhook_max_attempts:
        values.update(status=WebhookStatus.failed)
    else:
        # Exponential backoff: base, 2 x base, 4 x base, ... from this attempt on.
        delay = settings.webhook_retry_base_seconds * 2 ** (record.attempt - 1)
        values.update(next_attempt_at=now + timedelta(seconds=delay))
    with rt.session() as session:
        session.add(record)
        session.execute(update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery.id).values(**values))
        session.commit()
    if values.get("status") == WebhookStatus.failed:
        log.warning(
            "webhook delivery %s to %s failed after %d attempts", delivery.id, delivery.endpoint_id, record.attempt
        )


class Dispatcher:
    """Sends due deliveries on a background thread (one per API process; leases keep processes apart)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="provatar-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(self.rt.settings.webhook_timeout_seconds + 5)

    def run_due(self, client: httpx.Client) -> int:
        lease = timedelta(seconds=self.rt.settings.webhook_timeout_seconds * 3)
        due = _claim_due(self.rt, 20, lease)
        for delivery in due:
            attempt(self.rt, delivery, client)
        return len(due)

    def _loop(self) -> None:
        timeout = httpx.Timeout(self.rt.settings.webhook_timeout_seconds)
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            while not self._stop.is_set():
                try:
                    if self.run_due(client):
                        continue
                except Exception:  # a database hiccup must not end deliveries for the process's life
                    log.exception("webhook dispatch failed")
                self._wake.wait(self.rt.settings.webhook_poll_seconds)
                self._wake.clear()
