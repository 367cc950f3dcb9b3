"""Errors raised by the safeguards package.

One base class, `SafeguardError`, carries a machine `code` (snake_case, stable: the service maps it to an HTTP
status and a CLI exit code in one place) and a human `message`. Each failure the caller may want to handle
differently has its own subclass; append new subclasses below, grouped by module.
"""

from __future__ import annotations


class SafeguardError(Exception):
    """Base class of every safeguards error: `code` for machines, `message` for people."""

    code: str = "safeguard_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- watermark ------------------------------------------------------------------------------------------


class WatermarkError(SafeguardError):
    """A watermark could not be embedded or read."""

    code = "watermark_error"


class InvalidFrame(WatermarkError):
    """The frame is not an (H, W, 3) uint8 RGB image, or too small to carry the mark."""

    code = "invalid_frame"


class InvalidWatermarkPayload(WatermarkError):
    """A payload value is out of range or a bit vector has the wrong length."""

    code = "invalid_watermark_payload"


# --- provenance (C2PA, PKI) ------------------------------------------------------------------------------


class ProvenanceError(SafeguardError):
    """Signing or reading a C2PA manifest failed."""

    code = "provenance_error"


class CertificateAuthorityExists(ProvenanceError):
    """`create_dev_ca` was asked to write where a CA already exists (pass overwrite=True to replace it)."""

    code = "ca_exists"


class SignerConfigError(ProvenanceError):
    """The signing certificate chain or private key is missing, unreadable or does not match."""

    code = "signer_config_invalid"


class SigningFailed(ProvenanceError):
    """The C2PA SDK refused to sign the asset (bad manifest, unsupported file, signer failure)."""

    code = "signing_failed"


class UnsupportedMedia(ProvenanceError):
    """The file is not a media type C2PA can carry a manifest in, or it is corrupt."""

    code = "unsupported_media"


# --- identity (face detection and embeddings) ----------------------------------------------------------------


class IdentityError(SafeguardError):
    """Face detection or face embedding failed."""

    code = "identity_error"


class InvalidFaceImage(IdentityError):
    """The image handed to face analysis is not an (H, W, 3) uint8 RGB array."""

    code = "invalid_face_image"


class EmbedderUnavailable(IdentityError):
    """A face-embedding model file is missing, unreadable or does not fit the network."""

    code = "embedder_unavailable"


class EmbeddingMismatch(IdentityError):
    """Two embeddings cannot be compared: different shapes or made by different embedders."""

    code = "embedding_mismatch"


# --- consent registry ----------------------------------------------------------------------------------------


class ConsentError(SafeguardError):
    """A consent-registry operation was refused."""

    code = "consent_error"


class NoFaceInPhoto(ConsentError):
    """A reference photo shows no face, so it cannot identify anyone."""

    code = "no_face"


class MultipleFacesInPhoto(ConsentError):
    """A reference photo shows more than one face, so it is ambiguous whose likeness it is."""

    code = "multiple_faces"

    def __init__(self, count: int, smallest_face_px: int | None = None) -> None:
        counted = f" (faces {smallest_face_px} px wide or more are counted)" if smallest_face_px else ""
        super().__init__(
            f"the reference photo shows {count} faces{counted}; use a photo that shows only the subject's face"
        )
        self.count = count
        self.smallest_face_px = smallest_face_px


class BlockedIdentityMatch(ConsentError):
    """A reference photo matches a protected identity on the block list; nobody may enroll that likeness."""

    code = "blocked_identity"

    def __init__(self, blocked_id: str, distance: float) -> None:
        super().__init__(
            f"the photo matches blocked identity {blocked_id} (distance {distance:.3f}); "
            "this likeness is protected and cannot be enrolled"
        )
        self.blocked_id = blocked_id
        self.distance = distance


class ReferenceMismatch(ConsentError):
    """A new reference photo does not look like the subject's other references (probably another person)."""

    code = "reference_mismatch"

    def __init__(self, subject_id: str, distance: float, threshold: float) -> None:
        super().__init__(
            f"the photo does not match subject {subject_id}'s other reference photos "
            f"(distance {distance:.3f} > {threshold:.3f}); is it the same person?"
        )
        self.subject_id = subject_id
        self.distance = distance
        self.threshold = threshold


class SubjectNotFound(ConsentError):
    """No subject has the given id."""

    code = "subject_not_found"

    def __init__(self, subject_id: str) -> None:
        super().__init__(f"no subject with id {subject_id!r}; enroll the subject first")
        self.subject_id = subject_id


class ConsentNotFound(ConsentError):
    """There is no (unrevoked) consent record to act on."""

    code = "consent_not_found"


class BlockedIdentityNotFound(ConsentError):
    """No active block-list entry has the given id."""

    code = "blocked_identity_not_found"

    def __init__(self, blocked_id: str) -> None:
        super().__init__(f"no active block-list entry with id {blocked_id!r}")
        self.blocked_id = blocked_id


class InvalidConsentRequest(ConsentError):
    """The consent grant is malformed: no purpose, no client, an expiry not after the grant, a bad hash."""

    code = "invalid_consent"


class PhotoStorageNotConfigured(ConsentError):
    """The subject asked for reference photos to be stored, but no photo directory is configured."""

    code = "photo_storage_not_configured"


class MissingReferencePhoto(ConsentError):
    """An enrollment came without any reference photo."""

    code = "no_reference_photo"


class PossibleBlockedIdentityMatch(ConsentError):
    """A reference photo falls in the block list's review band: too close to a protected identity to enroll without
    a consent officer's recorded justification, not close enough to be sure."""

    code = "possible_protected_identity"

    def __init__(self, blocked_id: str, distance: float) -> None:
        super().__init__(
            f"the photo is close to blocked identity {blocked_id} (distance {distance:.3f}) but not a certain match; "
            "a consent officer must confirm it is someone else (give a review justification) to enroll it"
        )
        self.blocked_id = blocked_id
        self.distance = distance


# --- reviews -------------------------------------------------------------------------------------------------


class ReviewNotFound(ConsentError):
    """No identity review with this id."""

    code = "review_not_found"

    def __init__(self, review_id: str) -> None:
        super().__init__(f"identity review {review_id} does not exist")
        self.review_id = review_id


class ReviewNotPending(ConsentError):
    """The review was already decided (approved or rejected); decisions are final."""

    code = "review_already_decided"

    def __init__(self, review_id: str, status: str) -> None:
        super().__init__(f"identity review {review_id} is already {status}; a decided review cannot change")
        self.review_id = review_id
        self.status = status


class InvalidReviewDecision(ConsentError):
    """A review decision without a usable justification, or by the client who asked for the generation."""

    code = "invalid_review_decision"
