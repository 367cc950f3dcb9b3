"""Evaluate the generation policy over measured facts: one place, fail closed.

Cedar has no floats, so distances, thresholds and durations become Cedar `decimal`s with 4 fractional digits.
Rounding goes in the conservative direction for measured values (a subject distance and an audio duration
round up, a block-list distance rounds down) and to nearest for thresholds, so the comparison is exact
whenever a threshold has at most 4 decimals, and otherwise errs towards denying.

Any failure while evaluating (bad facts, a Cedar error, a rule that errored and so could not fire) denies with
reason `policy_error`: a broken policy must never allow.
"""

from __future__ import annotations

import math
import string
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from functools import lru_cache
from typing import Any

import cedarpy

from policies.errors import InvalidFacts
from policies.facts import GenerationFacts
from policies.loader import LoadedPolicy, load_policy

POLICY_ERROR = "policy_error"
# The reason codes a consent officer may lift for one photo; every other denial is final.
REVIEWABLE_CODES = ("possible_protected_identity", "subject_uncertain")
CONSENT_STATES = ("none", "active", "expired", "revoked")
_QUANTUM = Decimal("0.0001")
_POLICY_ERROR_MESSAGE = "The request could not be evaluated against the generation policy, so it is denied."


@dataclass(frozen=True)
class PolicyDecision:
    """The outcome of one evaluation, with everything needed to audit and replay it."""

    decision_id: str
    allowed: bool
    reasons: list[str]  # every matching reason code, most important first; empty when allowed
    messages: dict[str, str]  # reason code -> human message
    policy_version: str
    policy_hash: str
    evaluated_at: str  # UTC ISO-8601
    errors: list[str] = field(default_factory=list)  # diagnostics behind a policy_error

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (audit entry details, C2PA assertion, API responses)."""
        return {
            "decision_id": self.decision_id,
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "messages": dict(self.messages),
            "policy_version": self.policy_version,
            "policy_hash": self.policy_hash,
            "evaluated_at": self.evaluated_at,
            "errors": list(self.errors),
        }


@lru_cache(maxsize=1)
def default_policy() -> LoadedPolicy:
    """The shipped policy, loaded and validated once per process (raises PolicyLoadError if broken)."""
    return load_policy()


def evaluate_generation(facts: GenerationFacts, *, policy: LoadedPolicy | None = None) -> PolicyDecision:
    """Judge a generation request. Never raises for bad facts or evaluation errors: those deny
    (`policy_error`).

    Loading the default policy can raise PolicyLoadError; call `default_policy()` at startup to fail early.
    """
    policy = policy or default_policy()
    decision_id = str(uuid.uuid4())
    evaluated_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def deny_with_error(errors: list[str], reasons: list[str] | None = None) -> PolicyDecision:
        codes = [*(reasons or []), POLICY_ERROR]
        messages = _messages(policy, codes, facts)
        return PolicyDecision(
            decision_id, False, codes, messages, policy.version, policy.hash, evaluated_at, errors
        )

    try:
        context = facts_to_context(facts)
        request = {
            "principal": {"type": "Provatar::Client", "id": facts.client_id},
            "action": {"type": "Provatar::Action", "id": "generate"},
            "resource": {"type": "Provatar::Subject", "id": facts.subject_id},
            "context": context,
        }
        result = cedarpy.is_authorized(request, policy.policy_set, [], policy.schema)
    except InvalidFacts as exc:
        return deny_with_error([exc.message])
    except Exception as exc:  # noqa: BLE001 - fail closed on anything the engine throws
        return deny_with_error([f"{type(exc).__name__}: {exc}"])

    matched = [rule for rule in policy.rules if rule.policy_id in set(result.diagnostics.reasons)]
    codes = [rule.code for rule in matched]  # policy.rules is in priority order
    errors = [str(e) for e in result.diagnostics.errors]
    if errors:
        # A rule that errored did not fire; it might have been a forbid, so the request cannot be allowed.
        return deny_with_error(errors, codes)
    if result.allowed and not codes:
        return PolicyDecision(decision_id, True, [], {}, policy.version, policy.hash, evaluated_at)
    if not codes:
        return deny_with_error([f"no rule allowed or denied the request (decision {result.decision})"])
    return PolicyDecision(
        decision_id, False, codes, _messages(policy, codes, facts), policy.version, policy.hash, evaluated_at
    )


def facts_to_context(facts: GenerationFacts) -> dict[str, Any]:
    """The Cedar request context for `facts` (checked and rounded as the module docstring explains)."""
    if not isinstance(facts.face_count, int) or isinstance(facts.face_count, bool) or facts.face_count < 0:
        raise InvalidFacts(f"face_count must be a non-negative integer, got {facts.face_count!r}")
    if facts.consent_state not in CONSENT_STATES:
        raise InvalidFacts(f"consent_state must be one of {CONSENT_STATES}, got {facts.consent_state!r}")
    subject_review = _review_threshold(
        "subject_review_threshold", facts.subject_review_threshold, facts.subject_match_threshold
    )
    block_review = _review_threshold(
        "block_review_threshold", facts.block_review_threshold, facts.block_match_threshold
    )
    unknown = set(facts.approved_reviews) - set(REVIEWABLE_CODES)
    if unknown:
        raise InvalidFacts(f"approved_reviews may only hold {REVIEWABLE_CODES}, got {sorted(unknown)}")
    context: dict[str, Any] = {
        "client_id": facts.client_id,
        "purpose": facts.purpose,
        "subject_id": facts.subject_id,
        "subject_exists": bool(facts.subject_exists),
        "face_count": facts.face_count,
        "subject_match_threshold": _decimal("subject_match_threshold", facts.subject_match_threshold),
        "block_match_threshold": _decimal("block_match_threshold", facts.block_match_threshold),
        "subject_review_threshold": _decimal("subject_review_threshold", subject_review),
        "block_review_threshold": _decimal("block_review_threshold", block_review),
        "approved_reviews": sorted(set(facts.approved_reviews)),
        "consent_state": facts.consent_state,
        "consent_purposes": sorted(set(facts.consent_purposes)),
        "consent_clients": sorted(set(facts.consent_clients)),
        "audio_duration_s": _decimal("audio_duration_s", facts.audio_duration_s, ROUND_CEILING),
        "max_audio_s": _decimal("max_audio_s", facts.max_audio_s),
    }
    if facts.subject_distance is not None:
        context["subject_distance"] = _decimal("subject_distance", facts.subject_distance, ROUND_CEILING)
    if facts.blocked_identity_id is not None:
        context["blocked_identity_id"] = facts.blocked_identity_id
    if facts.blocked_distance is not None:
        context["blocked_distance"] = _decimal("blocked_distance", facts.blocked_distance, ROUND_FLOOR)
    if facts.consent_record_id is not None:
        context["consent_record_id"] = facts.consent_record_id
    return context


def _review_threshold(name: str, review: float | None, match: float) -> float:
    """The loose end of a band; None means no band. A loose end under the strict one is a misconfiguration."""
    if review is None:
        return match
    if isinstance(review, int | float) and isinstance(match, int | float) and review < match:
        raise InvalidFacts(f"{name} ({review!r}) must not be under the match threshold ({match!r})")
    return review


def _decimal(name: str, value: float, rounding: str = ROUND_HALF_EVEN) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidFacts(f"{name} must be a finite, non-negative number, got {value!r}")
    if value > 1e12:
        raise InvalidFacts(f"{name} is out of range ({value!r})")
    quantized = Decimal(repr(float(value))).quantize(_QUANTUM, rounding=rounding)
    return {"__extn": {"fn": "decimal", "arg": f"{quantized:.4f}"}}


def _messages(policy: LoadedPolicy, codes: list[str], facts: GenerationFacts) -> dict[str, str]:
    by_code = {rule.code: rule.message for rule in policy.rules}
    values = facts.to_dict()
    out: dict[str, str] = {}
    for code in codes:
        template = by_code.get(code, _POLICY_ERROR_MESSAGE if code == POLICY_ERROR else code)
        out[code] = _fill(template, values)
    return out


def _fill(template: str, values: dict[str, Any]) -> str:
    """Fill {field} placeholders from the facts; a template that cannot be filled (a field missing or None) is
    returned as written."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        if not names <= values.keys() or any(values[name] is None for name in names):
            return template
        return template.format_map(values)
    except (ValueError, TypeError, KeyError, IndexError):
        return template
