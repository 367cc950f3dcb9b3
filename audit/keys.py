"""The service's Ed25519 checkpoint-signing key: created once with owner-only permissions, then reused."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from audit.errors import SigningKeyError


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the PEM (PKCS#8) Ed25519 key at `path`, or create it there with mode 0600.

    Two processes starting at once end up with the same key, never two. A key file
    readable by group or others is refused: whoever reads it can forge checkpoints.
    """
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        # Write a complete temp file, then hard-link it into place: link() fails if the name exists, so a
        # concurrent creator never sees (or leaves) a half-written key.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fp:
                fp.write(pem)
                fp.flush()
                os.fsync(fp.fileno())
            os.chmod(tmp, 0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return _load(path)  # another process won the race; use its key
        finally:
            tmp.unlink(missing_ok=True)
        return key
    return _load(path)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A short, stable identifier of a public key: `ed25519:` + first 16 hex digits of SHA-256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def _load(path: Path) -> Ed25519PrivateKey:
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SigningKeyError(
            f"audit signing key {path} is accessible by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise SigningKeyError(
            f"audit signing key {path} is not a readable unencrypted PEM key: {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"audit signing key {path} is a {type(key).__name__}, not an Ed25519 key")
    return key
