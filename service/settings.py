"""One settings object for the whole service, read from `PROVATAR_*` environment variables (and `.env`).

Every command and the server resolve paths from `data_dir`, so pointing `PROVATAR_DATA_DIR` somewhere else gives a
fully separate installation (database, keys, signing CA, outputs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Plain constants (importing them does not load the face models).
from safeguards.identity import (
    DEFAULT_BLOCK_MATCH_THRESHOLD,
    DEFAULT_BLOCK_REVIEW_THRESHOLD,
    DEFAULT_POOR_PHOTO_MARGIN,
    DEFAULT_SUBJECT_MATCH_THRESHOLD,
    DEFAULT_SUBJECT_REVIEW_THRESHOLD,
)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PROVATAR_", env_file=".env", extra="ignore")

    environment: str = Field("development", description="development | production")
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".provatar")
    database_url: str | None = Field(None, description="Any SQLAlchemy URL; default SQLite in data_dir")
    audit_signing_key: Path | None = Field(
        None,
        description="Ed25519 PEM that signs audit checkpoints (default data_dir/keys/audit_ed25519.pem); keep it "
        "where the database's writers cannot read it, so they cannot re-sign a rewritten log",
    )
    audit_witness_path: Path | None = Field(
        None,
        description="append-only file that receives every signed audit checkpoint (default data_dir/witness/"
        "audit-checkpoints.jsonl); in production put it on another volume than the database, which its writers "
        "cannot reach, so a rolled-back or emptied audit log is detected by `provatar audit verify`",
    )

    # --- limits (input validation happens before any expensive work) ---
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 120.0
    max_detect_seconds: float = 600.0
    live_stop_check_s: float = Field(
        0.5,
        gt=0,
        le=10,
        description="how often a live stream re-reads its consent and cancel flag (also while no audio arrives): "
        "a revoked or expired consent stops the stream within this time plus one audio chunk's rendering",
    )

    # --- identity gate: fused-dlib L2 distances in bands (match <= *_match, human review up to *_review), calibrated
    # person-disjoint by bench/calibrate_identity.py on ../shared/media (see bench/RESULTS.md) ---
    subject_match_threshold: float = DEFAULT_SUBJECT_MATCH_THRESHOLD
    subject_review_threshold: float = DEFAULT_SUBJECT_REVIEW_THRESHOLD
    block_match_threshold: float = DEFAULT_BLOCK_MATCH_THRESHOLD
    block_review_threshold: float = DEFAULT_BLOCK_REVIEW_THRESHOLD
    poor_photo_margin: float = Field(DEFAULT_POOR_PHOTO_MARGIN, description="band widening for poor photos")
    face_num_jitters: int = Field(1, ge=1, le=100, description="dlib jitters per view (cost: one pass each)")
    face_fuse_views: bool = Field(True, description="average 5-point, 68-point and mirrored dlib views")
    face_detect_max_side: int = Field(
        1536,
        ge=512,
        le=8192,
        description="photos are downscaled to this long side to count faces; faces down to 20 px are counted up to "
        "this size, 20 * long side / this in larger photos (detection time grows with its square)",
    )
    review_approval_days: float = Field(30.0, gt=0, description="how long an identity-review approval stays valid")
    store_reference_photos: bool = False
    facenet_weights_path: Path | None = None
    face_embedder: str = Field("dlib", description="dlib | facenet (needs facenet_weights_path)")

    # --- generation ---
    output_size: int = 512
    fps: int = 25
    video_crf: int = 18
    device: str = "cpu"
    torch_threads: int | None = Field(1, description="torch intra-op threads on CPU (None: torch's default)")

    # --- auth ---
    token_issuer: str = "provatar"
    token_audience: str = "provatar-api"
    token_ttl_seconds: int = 3600
    external_issuer: str | None = None
    external_jwks_url: str | None = None
    external_audience: str | None = None
    public_url: str | None = Field(
        None, description="this service's external base URL (RFC 8414 metadata, Location headers); default: request's"
    )

    # --- provenance: a production chain + key overrides the dev CA made by `provatar init` ---
    signing_cert_chain: Path | None = None
    signing_key: Path | None = None
    trust_anchors: Path | None = None
    # Extra C2PA trust anchors (a PEM bundle: other signers' roots) added to ours when reading manifests.
    extra_trust_anchors: Path | None = None
    timestamp_authority_url: str | None = None

    # --- rate limits (`limits` notation: "N/second|minute|hour|day"); counters in Redis when redis_url is set ---
    redis_url: str | None = Field(None, description="e.g. redis://127.0.0.1:6379/0; default: in-process memory")
    redis_key_prefix: str = Field("provatar", description="namespace of our keys in a shared Redis database")
    rate_limits_enabled: bool = True
    rate_limit_token_per_ip: str = "120/minute"
    rate_limit_token_per_client: str = "60/minute"
    # Failed client authentications per address: past this, even correct credentials from it wait (brute force,
    # scrypt CPU). Not per client id, which would let anyone lock a client out.
    rate_limit_auth_failures_per_ip: str = "20/minute"
    rate_limit_submit_per_client: str = "60/minute"
    rate_limit_submit_per_ip: str = "120/minute"
    # Auth failures and 429s from one source: the first is audited in full, the rest of the window as one count.
    rejection_summary_seconds: float = 60.0

    # --- console (/console): sessions are rows named by a random cookie; see service/console/session.py ---
    console_session_seconds: int = Field(8 * 3600, gt=0, description="a console sign-in lasts at most this long")
    console_idle_seconds: int = Field(30 * 60, gt=0, description="a console session unused this long ends")
    # Sign-in through an OpenID Connect provider (authorization code + PKCE; service/console/oidc.py). On when a
    # client id is set and the provider is known: its discovery URL, else PROVATAR_EXTERNAL_ISSUER's
    # /.well-known/openid-configuration.
    console_oidc_client_id: str | None = Field(None, description="the console's client id at the OIDC provider")
    console_oidc_client_secret: SecretStr | None = Field(
        None, description="its secret (client_secret_basic at the token endpoint); unset: a public client (PKCE only)"
    )
    console_oidc_discovery_url: str | None = Field(
        None, description="the provider's /.well-known/openid-configuration; default from PROVATAR_EXTERNAL_ISSUER"
    )
    console_oidc_redirect_uri: str | None = Field(
        None, description="registered redirect URI; default: PROVATAR_PUBLIC_URL (or request) + /console/oidc/callback"
    )
    console_oidc_request_scopes: str = Field("openid profile", description="scopes asked of the provider")
    console_oidc_scopes_claim: str = Field(
        "roles", description="the id_token claim (a list or a space-separated string) whose values become scopes"
    )
    console_oidc_scope_map: dict[str, list[str]] = Field(
        default_factory=dict,
        description='claim value -> provatar scopes, e.g. {"compliance": ["audit:read", "consent:read"]}; a value '
        "that is itself a console scope (audit:read, consent:read, consent:write, detect) maps to itself",
    )

    # --- shared storage: finished videos and staged uploads (service/storage.py) ---
    storage_url: str | None = Field(
        None,
        description="s3://bucket/prefix puts outputs and uploads in an S3 bucket that API servers and workers on "
        "other machines share; default: data_dir on this machine",
    )
    s3_endpoint_url: str | None = Field(None, description="an S3-compatible server (MinIO, Ceph...); default AWS")
    s3_region: str | None = Field(None, description="the bucket's region; default from the AWS environment")
    # Credentials: the standard AWS chain (AWS_ACCESS_KEY_ID..., ~/.aws, an instance role) unless both are set here.
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None

    # --- operations ---
    log_format: Literal["text", "json"] = Field(
        "text", description="json: one JSON object per line with request_id and generation_id (log shippers)"
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, description="on SIGTERM, how long the in-process worker may finish its running job"
    )
    metrics_bearer_token: str | None = Field(
        None, description="when set, GET /metrics requires `Authorization: Bearer <token>` (Prometheus bearer_token)"
    )

    # --- browsers ---
    cors_origins: list[str] = Field(
        default_factory=list,
        description='origins allowed to call the API from a browser, e.g. ["https://app.example.com"]; none by default',
    )

    # --- webhooks (SSRF policy: see service/webhooks.py) ---
    webhook_allow_http: bool = Field(False, description="allow plain-http callback URLs (https only by default)")
    webhook_allowed_networks: list[str] = Field(
        default_factory=list, description='CIDRs a callback may target besides public addresses, e.g. ["10.2.0.0/16"]'
    )
    webhook_max_attempts: int = 8
    webhook_retry_base_seconds: float = Field(10.0, description="delay before retry n: base * 2^(n-1)")
    webhook_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 1.0

    # --- jobs ---
    worker_threads: int = 1
    broker_url: str | None = Field(
        None,
        description="Celery broker, e.g. redis://127.0.0.1:6379/1: the API enqueues jobs there and `provatar worker` "
        "processes run them (/health/ready pings it); unset: the API runs jobs on its in-process worker (no service "
        "needed)",
    )
    job_lease_seconds: float = Field(
        60.0, gt=0, description="a running job's lease; its runner renews it every third of this (service/leases.py)"
    )
    job_reaper_interval_seconds: float = Field(
        15.0, gt=0, description="how often every worker (and the API) looks for expired leases (service/reaper.py)"
    )
    job_max_attempts: int = Field(
        3, ge=1, description="runs a job gets before an expired lease or a transient failure fails it visibly"
    )
    job_resend_after_seconds: float = Field(
        300.0, gt=0, description="a queued job no worker claimed for this long is sent to the broker again"
    )
    job_retry_max: int = Field(5, ge=0, description="Celery retries of a task after transient failures")
    job_retry_backoff_seconds: float = Field(5.0, gt=0, description="first retry delay; doubles each retry (<=300 s)")
    worker_max_tasks_per_child: int | None = Field(
        None, ge=1, description="replace a Celery worker's child process after this many jobs (None: never)"
    )
    idempotency_ttl_hours: float = Field(24.0, description="how long an Idempotency-Key names its first request")
    stale_file_seconds: float = Field(
        3600.0, description="age after which a leftover *.part file or an unneeded upload dir is swept (sweep.py)"
    )
    sweep_interval_seconds: float = Field(600.0, description="how often the worker sweeps stale files")
    output_retention_days: float | None = Field(
        None,
        gt=0,
        description="delete generated videos this many days after they finished (the worker's sweep and `provatar "
        "purge`; a download after that is 410 retention_expired); default: kept until deleted or erased",
    )
    min_free_disk_bytes: int = Field(
        256 * 1024 * 1024, description="/health reports not ready when the data dir has less free space than this"
    )

    @model_validator(mode="after")
    def _bands_in_order(self) -> Settings:
        # A band whose loose end lies under its strict end would make every request a policy_error: refuse to start.
        for name in ("subject", "block"):
            match, review = getattr(self, f"{name}_match_threshold"), getattr(self, f"{name}_review_threshold")
            if not 0 <= match <= review:
                raise ValueError(
                    f"{name}_match_threshold ({match}) must be >= 0 and <= {name}_review_threshold ({review})"
                )
        return self

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("storage_url", mode="after")
    @classmethod
    def _storage_url(cls, v: str | None) -> str | None:
        # Refused at start, not at the first upload: a typo must not send outputs somewhere unexpected.
        if v is not None and not (v.startswith("s3://") and len(v) > len("s3://") and not v.startswith("s3:///")):
            raise ValueError(f"PROVATAR_STORAGE_URL: {v!r} is not s3://bucket[/prefix] (unset it for local files)")
        return v

    @field_validator("extra_trust_anchors", mode="after")
    @classmethod
    def _anchors_exist(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"PROVATAR_EXTRA_TRUST_ANCHORS: {v} is not a file (a PEM bundle of root certificates)")
        return v.expanduser() if v is not None else None

    @property
    def console_oidc_discovery(self) -> str | None:
        """Where the console's OIDC provider describes itself, or None when OIDC sign-in is not configured."""
        if not self.console_oidc_client_id:
            return None
        if self.console_oidc_discovery_url:
            return self.console_oidc_discovery_url
        if self.external_issuer:
            return self.external_issuer.rstrip("/") + "/.well-known/openid-configuration"  # OIDC Discovery §4
        return None

    @property
    def is_production(self) -> bool:
        return self.environment.lower() == "production"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'provatar.db'}"

    @property
    def pki_dir(self) -> Path:
        return self.data_dir / "pki"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def witness_path(self) -> Path:
        return self.audit_witness_path or self.data_dir / "witness" / "audit-checkpoints.jsonl"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def work_dir(self) -> Path:
        """Scratch space of runs whose output or inputs live in object storage (temp renders, fetched uploads)."""
        return self.data_dir / "work"

    @property
    def cert_chain_path(self) -> Path:
        return self.signing_cert_chain or self.pki_dir / "chain.pem"

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key or self.pki_dir / "signer.key"

    @property
    def trust_anchors_path(self) -> Path:
        return self.trust_anchors or self.pki_dir / "root.pem"


@lru_cache
def get_settings() -> Settings:
    return Settings()
