"""Service tables: API clients and generation jobs. Secrets and internal paths never reach a response model."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from safeguards.db_types import UTCDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


class ClientBase(SQLModel):
    name: str
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Client(ClientBase, table=True):
    __tablename__ = "service_client"

    client_id: str = Field(primary_key=True)
    secret_hash: str
    created_at: datetime = Field(default_factory=utcnow)
    disabled: bool = False


class ClientPublic(ClientBase):
    client_id: str
    created_at: datetime
    disabled: bool


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    denied = "denied"
    failed = "failed"
    cancelled = "cancelled"


FINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.denied, JobStatus.failed, JobStatus.cancelled})


class GenerationBase(SQLModel):
    subject_id: str
    purpose: str
    client_id: str
    status: JobStatus = JobStatus.queued
    progress: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    consent_record_id: str | None = None
    policy_decision_id: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    output_deleted_at: datetime | None = None
    # Why the video is gone: "deleted" (on request), "subject_erased", "retention_expired".
    output_deleted_reason: str | None = Field(default=None, max_length=40)


class Generation(GenerationBase, table=True):
    __tablename__ = "service_generation"

    id: str = Field(primary_key=True)
    request_id: str
    # 32-bit tag carried by the watermark; unique so a mark resolves to exactly one generation.
    watermark_tag: int = Field(sa_column=Column(BigInteger, unique=True, index=True, nullable=False))
    photo_path: str
    audio_path: str
    output_path: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    # The signed C2PA manifest (JSON) kept by watermark tag, so a stripped copy can find its provenance again.
    manifest_json: str | None = None
    audit_seq: int | None = None
    attempts: int = 0
    # When the owning client was told (webhook generation.withdrawn) that the video is no longer served because the
    # subject's consent was revoked or expired; cleared when consent is in force again.
    withdrawn_at: datetime | None = None
    # The lease of the runner that holds this job (service/leases.py): only the owner may renew it or move the job
    # on, and a job whose lease expired is requeued or failed by the reaper (service/reaper.py), never adopted
    # while its runner is alive. Internal: not in GenerationPublic (owners name hosts and process ids).
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime, index=True)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # When the job was last handed to the broker (None: at creation); the reaper re-sends queued jobs no runner
    # claimed for a while, so a submission whose enqueue failed is not lost.
    enqueued_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IdempotencyKey(SQLModel, table=True):
    """A submission's `Idempotency-Key`: the same key from the same client within the retention window returns
    the stored response instead of creating a second job. `response` is None while the first request runs."""

    __tablename__ = "service_idempotency_key"

    client_id: str = Field(primary_key=True, max_length=64)
    key: str = Field(primary_key=True, max_length=255)
    request_sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    generation_id: str | None = None
    response_status: int | None = None
    response: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class GenerationPublic(GenerationBase):
    id: str
    watermark_tag: int
    audit_seq: int | None
    download_url: str | None = None
    # Why a succeeded generation's video is not served (consent_revoked, consent_expired, subject_erased,
    # retention_expired, output_deleted); None while it is.
    output_withheld: str | None = None
    # What the generator could not animate as usual on this photo (e.g. a mouth covered by a hand); kept in
    # Generation.params["warnings"], so no schema change.
    warnings: list[str] = Field(default_factory=list)


class WebhookStatus(StrEnum):
    pending = "pending"
    succeeded = "succeeded"
    failed = "failed"


class WebhookEndpointBase(SQLModel):
    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    description: str | None = Field(default=None, max_length=500)


class WebhookEndpoint(WebhookEndpointBase, table=True):
    """A client's callback URL. The signing secret is kept encrypted (AES-GCM under a key derived from the
    service secret): it must be recoverable to sign, so it cannot be hashed like client secrets."""

    __tablename__ = "service_webhook_endpoint"

    id: str = Field(primary_key=True, max_length=40)
    client_id: str = Field(index=True, max_length=64)
    secret_encrypted: str
    created_at: datetime = Field(default_factory=utcnow)
    disabled: bool = False


class WebhookEndpointPublic(WebhookEndpointBase):
    id: str
    client_id: str
    created_at: datetime
    disabled: bool


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint. `id` is the Standard Webhooks `webhook-id`: the same on every retry, so a
    receiver can drop duplicates."""

    __tablename__ = "service_webhook_delivery"

    id: str = Field(primary_key=True, max_length=40)
    endpoint_id: str = Field(index=True, max_length=40)
    event_type: str = Field(max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: WebhookStatus = Field(default=WebhookStatus.pending, index=True)
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None
    last_status_code: int | None = None


class WebhookAttempt(SQLModel, table=True):
    """Each delivery attempt and its outcome (`ok`, `http_error`, `network_error`, `refused_url`)."""

    __tablename__ = "service_webhook_attempt"

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(index=True, max_length=40)
    attempt: int
    started_at: datetime = Field(default_factory=utcnow)
    duration_ms: int = 0
    status_code: int | None = None
    outcome: str = Field(max_length=20)
    error: str | None = Field(default=None, max_length=500)


class ConsoleSession(SQLModel, table=True):
    """A browser console session (service/console/session.py). The cookie holds a random 256-bit token; only its
    SHA-256 is stored, so a copy of this table cannot be replayed as cookies. Sign-out and an operator's revocation
    set `revoked_at`, which ends the session at once, wherever the cookie was copied to."""

    __tablename__ = "service_console_session"

    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the cookie's token
    principal: str = Field(max_length=300, index=True)  # "client:<id>" or "oidc:<sub>"
    name: str = Field(max_length=300)  # shown in the page header
    via: str = Field(max_length=16)  # "client" (id + secret) or "oidc"
    client_id: str | None = Field(default=None, max_length=64)  # client sessions: re-checked on every request
    secret_version: str | None = Field(default=None, max_length=32)  # the client's `sv` at sign-in
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    user_agent_sha256: str | None = Field(default=None, max_length=64)  # which browser, without storing it
    source: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    last_seen_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_by: str | None = Field(default=None, max_length=300)
    revoked_reason: str | None = Field(default=None, max_length=40)  # signed_out, revoked, client_changed
