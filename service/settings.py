"""One settings object for the whole service, read from `PROVATAR_*` environment variables (and `.env`).

Every command and the server resolve paths from `data_dir`, so pointing `PROVATAR_DATA_DIR` somewhere else gives a
fully separate installation (database, keys, signing CA, outputs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator, model_validator
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

    # --- limits (input validation happens before any expensive work) ---
    max_upload_bytes: int = 50 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_audio_seconds: float = 120.0
    max_detect_seconds: float = 600.0

    # --- identity gate: fused-dlib L2 distances in bands (match <= *_match, human review up to *_review), calibrated
    # person-disjoint by bench/calibrate_identity.py on ../shared/media (see bench/RESULTS.md) ---
    subject_match_threshold: float = DEFAULT_SUBJECT_MATCH_THRESHOLD
    subject_review_threshold: float = DEFAULT_SUBJECT_REVIEW_THRESHOLD
    block_match_threshold: float = DEFAULT_BLOCK_MATCH_THRESHOLD
    block_review_threshold: float = DEFAULT_BLOCK_REVIEW_THRESHOLD
    poor_photo_margin: float = Field(DEFAULT_POOR_PHOTO_MARGIN, description="band widening for poor photos")
    face_num_jitters: int = Field(1, ge=1, le=100, description="dlib jitters per view (cost: one pass each)")
    face_fuse_views: bool = Field(True, description="average 5-point, 68-point and mirrored dlib views")
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

    # --- provenance: a production chain + key overrides the dev CA made by `provatar init` ---
    signing_cert_chain: Path | None = None
    signing_key: Path | None = None
    trust_anchors: Path | None = None
    timestamp_authority_url: str | None = None

    # --- jobs ---
    worker_threads: int = 1

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
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

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
