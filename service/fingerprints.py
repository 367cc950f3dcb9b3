"""Keyed one-way fingerprints of files (photos, audio tracks): what the audit log and erasure name files by."""

from __future__ import annotations

import hashlib
import hmac

from service.keys import derive_key
from service.runtime import Runtime

__all__ = ["keyed_fingerprint"]


def keyed_fingerprint(rt: Runtime, sha256_hex: str) -> str:
    """A keyed one-way fingerprint of a file's SHA-256 (a photo, an audio track): HMAC-SHA256 under a key derived
    from the service secret.

    The audit log names photos by this, never by their plain SHA-256: a plain hash lets anyone holding a photo
    confirm it was used, forever, even after the subject is erased; this one needs the service secret as well. An
    erasure keeps these fingerprints of the reference photos (consent_erased_fingerprint) to stop the same file from
    re-enrolling the person without a new consent. It identifies a file, not a face: a different photo of the same
    person does not match it (a likeness-level block list would itself be biometric data, which erasure must not
    keep)."""
    key = derive_key(rt.settings.keys_dir, "media-fingerprint/v1")
    return hmac.new(key, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()
