"""Every user-facing failure, mapped in one place to an HTTP status, a CLI exit status, a code and a hint.

The packages raise their own typed errors (each with a snake_case `code` and a `message`); this module is the only
place that knows how a code is shown to an API client or a terminal user.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from audit.errors import AuditError
from generation.errors import GenerationError
from policies import POLICY_ERROR, REASON_CODES
from policies.errors import PolicyError
from safeguards.errors import ConsentError, SafeguardError

# Only our own error families carry a trustworthy `code` (other libraries use the attribute for other things).
_OWN_ERRORS = (GenerationError, SafeguardError, AuditError, PolicyError)


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1
    INVALID_INPUT = 2
    DENIED = 3


class ServiceError(Exception):
    """Base for errors raised by the service layer itself."""

    code = "error"
    http_status = 500
    exit_status = ExitStatus.ERROR

    def __init__(self, message: str, *, code: str | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.details = details or {}


class InvalidInput(ServiceError):
    code = "invalid_input"
    http_status = 400
    exit_status = ExitStatus.INVALID_INPUT


class PayloadTooLarge(InvalidInput):
    code = "payload_too_large"
    http_status = 413


class NotFound(ServiceError):
    code = "not_found"
    http_status = 404
    exit_status = ExitStatus.INVALID_INPUT


class Conflict(ServiceError):
    code = "conflict"
    http_status = 409
    exit_status = ExitStatus.INVALID_INPUT


class NotInitialized(ServiceError):
    code = "not_initialized"
    http_status = 503
    exit_status = ExitStatus.INVALID_INPUT


class SchemaMismatch(ServiceError):
    """The database's schema is not one this release can upgrade (service/migrations)."""

    code = "database_schema_unknown"
    http_status = 503


class OutputNotWritable(ServiceError):
    """The output path cannot be written (a directory, a missing or read-only parent, a full disk). For the CLI the
    path is the user's `-o` (exit 2); for the API it is the server's outputs dir, so the job fails with this code."""

    code = "output_not_writable"
    http_status = 503
    exit_status = ExitStatus.INVALID_INPUT


class ObjectStorageUnavailable(ServiceError):
    """The object store (PROVATAR_STORAGE_URL, e.g. an S3 bucket) did not answer or refused us: our environment's
    fault, not the caller's, and usually temporary (a 503 with Retry-After; readiness reports it)."""

    code = "object_storage_unavailable"
    http_status = 503


class Unauthorized(ServiceError):
    code = "unauthorized"
    http_status = 401


class Forbidden(ServiceError):
    code = "insufficient_scope"
    http_status = 403
    exit_status = ExitStatus.DENIED


class CsrfRefused(Forbidden):
    """A console form came without the CSRF token of the signed-in session (or of the sign-in page)."""

    code = "csrf_refused"


class ConsoleSignInRequired(Unauthorized):
    """A console page was asked for without a valid session cookie (none, forged, expired, or its client gone)."""

    code = "console_sign_in_required"


class ConfirmationMismatch(InvalidInput):
    """A console action that needs a typed confirmation got another text."""

    code = "confirmation_mismatch"


class Gone(ServiceError):
    code = "gone"
    http_status = 410
    exit_status = ExitStatus.INVALID_INPUT


class SubjectErased(ServiceError):
    """The subject was erased (GDPR Art. 17): nothing more is recorded for them, and a photo of theirs enrolls again
    only as a new subject with a new consent."""

    code = "subject_erased"
    http_status = 409
    exit_status = ExitStatus.DENIED


class Cancelled(ServiceError):
    """A job was cancelled while it ran (a cancel request, or its subject's consent was revoked); nothing written."""

    code = "cancelled"
    http_status = 409
    exit_status = ExitStatus.DENIED


class StreamStopped(ServiceError):
    """A live stream was stopped while it ran: its subject's consent was revoked or expired (a policy refusal, 403,
    WebSocket close 1008), or a cancel was requested (409)."""

    code = "cancelled"
    http_status = 409
    exit_status = ExitStatus.DENIED

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)
        if code != "cancelled":
            self.http_status = 403


class TooManyRequests(ServiceError):
    """A rate limit was hit; `retry_after` (whole seconds) becomes the Retry-After header."""

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={"retry_after": retry_after, **(details or {})})
        self.retry_after = max(1, int(retry_after))


class Denied(ServiceError):
    """The policy refused the request; `reasons` are the policy's reason codes."""

    code = "denied"
    http_status = 403
    exit_status = ExitStatus.DENIED

    def __init__(self, reasons: list[str], messages: dict[str, str], decision: dict[str, Any]) -> None:
        text = "; ".join(f"{r}: {messages.get(r, r)}" for r in reasons) or "denied by policy"
        super().__init__(text, code=reasons[0] if reasons else "denied", details={"decision": decision})
        self.reasons = reasons
        self.messages = messages


# What to do about it, by code. Shown under the message in the CLI and as `hint` in API problems.
HINTS: dict[str, str] = {
    "no_face": "use a photo that shows one face clearly, frontal, at least 80 pixels wide",
    "multiple_faces": "crop the photo so it shows only the consenting subject",
    "unknown_subject": "enroll the subject first: provatar consent enroll PHOTO --name NAME",
    "subject_mismatch": "the photo does not look like the enrolled subject; use a photo of that person",
    "no_consent": "record the subject's consent first: provatar consent enroll ... --purpose P",
    "consent_expired": "the subject's consent has expired; ask the subject to grant it again",
    "consent_revoked": "the subject revoked consent; ask the subject to grant it again",
    "consent_wrong_purpose": "the subject consented to other purposes; request one of those or ask again",
    "consent_wrong_client": "the subject's consent does not cover this API client",
    "blocked_identity": "the photo matches a protected identity on the block list; this cannot be generated",
    "possible_protected_identity": "a consent officer reviews borderline matches: provatar consent reviews, then "
    "provatar consent approve REVIEW --justification TEXT (API: POST /v1/reviews/{id}/approve); resend the same photo. "
    "Enrolling: an officer may pass --review-justification (API: review_justification)",
    "subject_uncertain": "a consent officer can confirm the subject: provatar consent approve REVIEW --justification "
    "TEXT, then resend the same photo; or use a clearer, frontal photo of the subject",
    "review_not_found": "list the queue with `provatar consent reviews` (API: GET /v1/reviews)",
    "review_already_decided": "review decisions are final; a new request with the photo queues a new review",
    "invalid_review_decision": "write what was compared and why (10+ characters); the requester cannot decide",
    "audio_too_long": "shorten the audio (limit: PROVATAR_MAX_AUDIO_SECONDS)",
    "invalid_image": "send a JPEG, PNG or WebP photo",
    "invalid_controls": "see `provatar generate --help` (API: the form fields of POST /v1/generations)",
    "image_too_large": "downscale the photo (limit: PROVATAR_MAX_IMAGE_PIXELS)",
    "invalid_audio": "send a non-empty wav, mp3, ogg, flac or m4a file",
    "invalid_video": "send an MP4/MOV/WebM video or an image",
    "video_too_long": "cut the video (limit: PROVATAR_MAX_DETECT_SECONDS)",
    "payload_too_large": "the upload exceeds PROVATAR_MAX_UPLOAD_BYTES",
    "output_not_writable": "name a file in an existing, writable directory (an existing file there is replaced "
    "only when the video is complete)",
    "not_initialized": "run `provatar init` first (or `provatar demo`)",
    "database_schema_unknown": "point PROVATAR_DATABASE_URL at a provatar database (or an empty one); "
    "`provatar db status` shows what differs",
    "database_newer_than_code": "a newer provatar upgraded this database: run that release (or newer) here",
    "unauthorized": "get a token from POST /v1/token with your client credentials",
    "missing_token": "send `Authorization: Bearer <token>`; get a token from POST /v1/token",
    "invalid_token": "the token is forged, expired or not for this service; get a new one from POST /v1/token",
    "invalid_client": "check the client id and secret (`provatar client create` makes new ones)",
    "insufficient_scope": "ask an admin for a client with the needed scope",
    "internal_error": "this is a bug or an environment problem; rerun the command with --debug for details",
    "policy_error": "the policy could not be evaluated; the request was refused (fail closed)",
    "invalid_request": "check the request against the OpenAPI description at /docs",
    "unsupported_grant_type": "use grant_type=client_credentials",
    "invalid_scope": "request only scopes this client was granted (`provatar client list` shows them)",
    "not_found": "check the URL and the id; ids of other clients' resources are reported as not found",
    "method_not_allowed": "see the Allow header for the methods this URL accepts",
    "rate_limited": "slow down: retry after the number of seconds in the Retry-After header",
    "idempotency_key_reused": "an Idempotency-Key names one request: send a new key for a different request",
    "idempotency_request_in_progress": "the first request with this Idempotency-Key is still running; retry shortly",
    "cancelled": "the job was cancelled (a cancel request, or the subject's consent was revoked); nothing was written",
    "not_cancellable": "only queued or running generations can be cancelled",
    "database_unavailable": "a temporary condition: retry after Retry-After seconds; operators: check the database "
    "server and the disk it writes to",
    "storage_full": "a temporary condition: retry after Retry-After seconds; operators: free space on the data dir",
    "storage_unavailable": "operators: the data dir is read-only; remount it read-write",
    "object_storage_unavailable": "a temporary condition: retry after Retry-After seconds; operators: check the "
    "bucket, PROVATAR_S3_ENDPOINT_URL and the credentials (GET /health/ready shows the storage check)",
    "service_unavailable": "GET /health lists the failed checks; retry after Retry-After seconds",
    "not_ready": "poll GET /v1/generations/{id} until its status is succeeded (see Retry-After)",
    "output_deleted": "the video was deleted on request; generate it again if you need it",
    "output_missing": "the video's file or object is gone from storage (removed outside provatar); generate it again",
    "retention_expired": "the video passed the output retention period (PROVATAR_OUTPUT_RETENTION_DAYS) and was "
    "purged; generate it again if the subject's consent still allows it",
    "subject_erased": "the subject was erased; to enroll the same person again, record a new consent with new "
    "evidence and confirm it (CLI --new-consent-after-erasure, API new_consent_after_erasure=true)",
    "stale_consent_evidence": "re-enrolling an erased person needs new consent evidence, not the evidence of the "
    "consent that was erased",
    "confirmation_required": "erasure cannot be undone: pass --yes to confirm",
    "client_not_found": "`provatar client list` shows the existing clients",
    "invalid_cursor": "pass the `after` value from a `next` link unchanged",
    "invalid_webhook_url": "use an https URL on a public host (see PROVATAR_WEBHOOK_* settings)",
    "webhook_not_found": "GET /v1/webhooks lists this client's endpoints",
    "bundle_invalid": "`provatar audit verify-export BUNDLE` lists every check; ask the service for a fresh bundle "
    "(`provatar audit export --bundle FILE`) and compare its key fingerprint with the one it publishes",
    "csrf_refused": "reload the console page and submit the form again (forms expire with the session)",
    "console_sign_in_required": "sign in to the console with your client id and secret",
    "confirmation_mismatch": "type exactly the text the confirmation page asks for",
    "broker_not_configured": "set PROVATAR_BROKER_URL to the broker the API enqueues to (see the README, Deployment)",
    "lease_expired": "the process running the job stopped (killed, crashed or cut off) too often, or it was a CLI "
    "or live job that cannot be resumed: submit it again; operators: check the workers' logs",
}

# Short titles of the problem types (RFC 9457 `title`: the same for every occurrence of a type).
TITLES: dict[str, str] = {
    "missing_token": "Authentication required",
    "invalid_token": "Invalid access token",
    "insufficient_scope": "Insufficient scope",
    "internal_error": "Internal error",
    "invalid_request": "Invalid request",
    "rate_limited": "Too many requests",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
}

# Bearer token errors (RFC 6750 §3.1) by our code; `None`: the request carried no credentials, so no error code.
_BEARER_ERRORS: dict[str, str | None] = {
    "missing_token": None,
    "invalid_token": "invalid_token",
    "insufficient_scope": "insufficient_scope",
}
REALM = "provatar"
# Failed authentication or authorisation (as opposed to a policy denial): audited in per-source summaries.
AUTH_FAILURE_CODES = frozenset(
    {"unauthorized", "missing_token", "invalid_token", "insufficient_scope", "invalid_client"}
)


def problem_title(code: str) -> str:
    return TITLES.get(code) or code.replace("_", " ").capitalize()


def _quoted(text: str) -> str:
    """An RFC 6750 quoted-string value: printable ASCII without `"` and `\\` (the grammar allows no escapes)."""
    return "".join(ch for ch in text if 0x20 <= ord(ch) <= 0x7E and ch not in '"\\')[:200]


def bearer_challenge(code: str, message: str, scope: str | None = None) -> str | None:
    """The `WWW-Authenticate: Bearer ...` value for an auth failure (RFC 6750 §3), or None for other codes."""
    if code not in _BEARER_ERRORS:
        return None
    error = _BEARER_ERRORS[code]
    parts = [f'realm="{REALM}"']
    if error:
        parts += [f'error="{error}"', f'error_description="{_quoted(message)}"']
    if scope:
        parts.append(f'scope="{_quoted(scope)}"')
    return "Bearer " + ", ".join(parts)


# Codes raised by the packages, by the kind of failure they are.
_INVALID_INPUT_CODES = {
    "invalid_image",
    "invalid_face_image",
    "invalid_audio",
    "invalid_video",
    "invalid_input",
    "invalid_consent",
    "invalid_controls",
    "invalid_scope",
    "reference_mismatch",
    "no_reference_photo",
    "unsupported_media",
    "photo_storage_not_configured",
    "invalid_review_decision",
    # an evidence bundle someone hands in does not verify: it is the input that is bad, not this service
    "bundle_invalid",
}
_NOT_FOUND_CODES = {"subject_not_found", "consent_not_found", "blocked_identity_not_found", "review_not_found"}
_CONFLICT_CODES = {"ca_exists", "review_already_decided"}
# Codes that are this service's fault or its environment's, not the caller's: a 5xx, exit 1. Listed (not left to a
# fallback) so that a new error class must be placed on purpose: tests/service/test_hardening_input.py walks every
# error class and fails on a code found in none of these sets.
_SERVER_ERROR_CODES: dict[str, int] = {
    # bases, raised only through a subclass
    "generation_failed": 500,
    "safeguard_error": 500,
    "watermark_error": 500,
    "provenance_error": 500,
    "identity_error": 500,
    "consent_error": 500,
    "audit_error": 500,
    # our own output or state is wrong
    "encode_failed": 500,
    "invalid_frame": 500,
    "invalid_watermark_payload": 500,
    "signing_failed": 500,
    "embedding_mismatch": 500,
    "not_canonical_json": 500,
    "invalid_audit_event": 500,
    "audit_verification_failed": 500,
    "chain_broken": 500,
    "missing_entry": 500,
    "checkpoint_mismatch": 500,
    "witness_mismatch": 500,
    "invalid_sequence": 500,
    # configuration or a missing component: the operator can fix it, a retry later may work
    "phonemes_unavailable": 503,
    "embedder_unavailable": 503,
    "signer_config_invalid": 503,
    "signing_key_error": 503,
    "witness_unavailable": 503,
    "unsupported_database": 503,
    "policy_invalid": 503,
    "policy_invalid_facts": 500,
}
_TOO_LARGE_CODES = {"image_too_large", "payload_too_large", "video_too_long"}
# The generation policy's reason codes: raised by a package directly (e.g. NoFaceFound), they are denials too.
_DENIAL_CODES = set(REASON_CODES) | {POLICY_ERROR}


@dataclass(frozen=True)
class Problem:
    """How an error is shown: RFC 9457-ish body for the API, message + hint + exit status for the CLI."""

    code: str
    message: str
    http_status: int
    exit_status: ExitStatus
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        if self.details:
            body.update(self.details)
        return body

    def to_problem(self, *, instance: str, request_id: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details. `type` is relative (resolved against the request URL) and dereferenceable:
        GET /problems/{code} describes it. `code`, `hint` and `message` stay as extension members for the clients
        written against them."""
        body: dict[str, Any] = {
            "type": f"/problems/{self.code}",
            "title": problem_title(self.code),
            "status": self.http_status,
            "detail": self.message,
            "instance": instance,
            **self.to_json(),
        }
        if request_id:
            body["request_id"] = request_id
        return body


_STORAGE_ERRNOS = {errno.ENOSPC: "storage_full", errno.EDQUOT: "storage_full", errno.EROFS: "storage_unavailable"}
_UNAVAILABLE_MESSAGES = {
    "database_unavailable": "the database cannot be used right now (unreachable, locked or full); retry later",
    "storage_full": "the service's disk is full; retry later",
    "storage_unavailable": "the service's storage is read-only; retry later",
}
RETRY_UNAVAILABLE_S = 30


def unavailable_code(exc: BaseException) -> str | None:
    """`database_unavailable` / `storage_full` / `storage_unavailable` when `exc` (or what caused it) is the
    environment failing rather than a bug or bad input: a 503 with Retry-After, and readiness reports it."""
    # Not imported here: the CLI's start must not load SQLAlchemy. An exception of its classes means it is loaded.
    sa_exc = sys.modules.get("sqlalchemy.exc")
    db_errors: tuple[type[BaseException], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError) if sa_exc else ()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if db_errors and isinstance(current, db_errors):
            return "database_unavailable"
        if isinstance(current, OSError) and current.errno in _STORAGE_ERRNOS:
            return _STORAGE_ERRNOS[current.errno]
        current = current.__cause__ or current.__context__
    return None


def describe(exc: BaseException) -> Problem:
    """Map any exception to a Problem. Unknown exceptions become a generic 500 without internals."""
    if not isinstance(exc, ServiceError) and (code := unavailable_code(exc)) is not None:
        return Problem(
            code,
            _UNAVAILABLE_MESSAGES[code],
            503,
            ExitStatus.ERROR,
            HINTS.get(code),
            {},
            {"Retry-After": str(RETRY_UNAVAILABLE_S)},
        )
    if isinstance(exc, Denied):
        return Problem(
            code=exc.code,
            message=exc.message,
            http_status=403,
            exit_status=ExitStatus.DENIED,
            hint=HINTS.get(exc.code),
            details={"reasons": exc.reasons, **exc.details},
        )
    if isinstance(exc, ServiceError):
        headers: dict[str, str] = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(exc, ObjectStorageUnavailable):
            headers["Retry-After"] = str(RETRY_UNAVAILABLE_S)
        challenge = bearer_challenge(exc.code, exc.message, exc.details.get("required_scope"))
        if challenge and exc.http_status in (401, 403):
            headers["WWW-Authenticate"] = challenge
        elif exc.http_status == 401:  # RFC 9110 §15.5.2: every 401 names a scheme to authenticate with
            headers["WWW-Authenticate"] = f'Bearer realm="{REALM}"'
        return Problem(
            exc.code, exc.message, exc.http_status, exc.exit_status, HINTS.get(exc.code), exc.details, headers
        )
    if not isinstance(exc, _OWN_ERRORS):
        return Problem("internal_error", "internal error; see the server log", 500, ExitStatus.ERROR)
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(exc, ConsentError) and code in ("no_face", "multiple_faces"):
        # A bad enrollment photo is invalid input; the same codes on a generation request are policy denials.
        return Problem(code, message, 400, ExitStatus.INVALID_INPUT, HINTS.get(code))
    if isinstance(code, str):
        if code in _NOT_FOUND_CODES:
            return Problem(code, message, 404, ExitStatus.INVALID_INPUT, HINTS.get(code))
        if code in _CONFLICT_CODES:
            return Problem(code, message, 409, ExitStatus.INVALID_INPUT, HINTS.get(code))
        if code in _TOO_LARGE_CODES:
            return Problem(code, message, 413, ExitStatus.INVALID_INPUT, HINTS.get(code))
        if code in _INVALID_INPUT_CODES:
            return Problem(code, message, 400, ExitStatus.INVALID_INPUT, HINTS.get(code))
        if code in _DENIAL_CODES:
            return Problem(code, message, 403, ExitStatus.DENIED, HINTS.get(code), {"reasons": [code]})
        if code in _CONFLICT_CODES:
            return Problem(code, message, 409, ExitStatus.INVALID_INPUT, HINTS.get(code))
        if code in _SERVER_ERROR_CODES:
            return Problem(code, message, _SERVER_ERROR_CODES[code], ExitStatus.ERROR, HINTS.get(code))
    return Problem(str(code), message, 500, ExitStatus.ERROR, HINTS.get(str(code)))


def is_mapped(code: str) -> bool:
    """Whether a package error code has an explicit place in this module (the hierarchy test asks)."""
    return any(
        code in codes
        for codes in (
            _INVALID_INPUT_CODES,
            _NOT_FOUND_CODES,
            _TOO_LARGE_CODES,
            _DENIAL_CODES,
            _CONFLICT_CODES,
            _SERVER_ERROR_CODES,
        )
    )
