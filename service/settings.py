"""One settings object for the whole service, read from `PROVATAR_*` environment variables (and `.env`).

Every command and the server resolve paths from `data_dir`, so pointing `PROVATAR_DATA_DIR` somewhere else gives a
fully separate installation (database, keys, signing CA, outputs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Plain constants (importing them does not load the face models).
from safeguards.identity import DEFAULT_BLOCK_MATCH_THRESHOLD, DEFAULT_SUBJECT_MATCH_THRESHOLD


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

    # --- identity gate: dlib ResNet L2 distances, calibrated by bench/calibrate_identity.py on ../shared/media
    # (same person <= 0.36 incl. augmented copies, different people >= 0.527; see bench/RESULTS.md) ---
    subject_match_threshold: float = DEFAULT_SUBJECT_MATCH_THRESHOLD
    block_match_threshold: float = DEFAULT_BLOCK_MATCH_THRESHOLD
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
    # Extra C2PA trust anchors (a PEM bundle: other signers' roots) added to ours when reading manifests.
    extra_trust_anchors: Path | None = None
    timestamp_authority_url: str | None = None

    # --- jobs ---
    worker_threads: int = 1

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("extra_trust_anchors", mode="after")
    @classmethod
    def _anchors_exist(cls, v: Path | None) -> Path | None:
        if v is not None and not v.expanduser().is_file():
            raise ValueError(f"PROVATAR_EXTRA_TRUST_ANCHORS: {v} is not a file (a PEM bundle of root certificates)")
        return v.expanduser() if v is not None else None

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
