"""Key material kept in `data_dir/keys` (0600): the service secret (root of derived HMAC keys such as the
watermark key) and the JWT signing key. The audit checkpoint key and the C2PA signing chain live beside them."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SERVICE_SECRET = "service.secret"
JWT_KEY = "jwt_es256.pem"
AUDIT_KEY = "audit_ed25519.pem"


def write_private(path: Path, data: bytes) -> None:
    """Write a secret file with mode 0600 from the first byte (no window where it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def create_service_keys(keys_dir: Path) -> None:
    """Create the service secret and the JWT key if they do not exist (never overwrite)."""
    keys_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    if not (keys_dir / SERVICE_SECRET).exists():
        write_private(keys_dir / SERVICE_SECRET, secrets.token_bytes(32))
    if not (keys_dir / JWT_KEY).exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_private(keys_dir / JWT_KEY, pem)


def derive_key(keys_dir: Path, purpose: str) -> bytes:
    """A 32-byte key for one purpose, derived from the service secret (HMAC-SHA256 as a KDF)."""
    secret = (keys_dir / SERVICE_SECRET).read_bytes()
    return hmac.new(secret, b"provatar/" + purpose.encode(), hashlib.sha256).digest()
