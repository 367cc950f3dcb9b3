"""The generation policy as data (Cedar, versioned) and the one function that evaluates it."""

from policies.engine import (
    CONSENT_STATES,
    POLICY_ERROR,
    REVIEWABLE_CODES,
    PolicyDecision,
    default_policy,
    evaluate_generation,
    facts_to_context,
)
from policies.errors import InvalidFacts, PolicyError, PolicyLoadError
from policies.facts import ConsentState, GenerationFacts
from policies.loader import DEFAULT_POLICY, LoadedPolicy, Rule, load_policy, policy_hash

# Every reason code the shipped policy can give, in its priority order (plus policy_error, which the engine
# adds).
REASON_CODES: tuple[str, ...] = (
    "no_face",
    "multiple_faces",
    "blocked_identity",
    "possible_protected_identity",
    "unknown_subject",
    "subject_mismatch",
    "subject_uncertain",
    "no_consent",
    "consent_revoked",
    "consent_expired",
    "consent_wrong_purpose",
    "consent_wrong_client",
    "audio_too_long",
)

__all__ = [
    "CONSENT_STATES",
    "DEFAULT_POLICY",
    "POLICY_ERROR",
    "REASON_CODES",
    "REVIEWABLE_CODES",
    "ConsentState",
    "GenerationFacts",
    "InvalidFacts",
    "LoadedPolicy",
    "PolicyDecision",
    "PolicyError",
    "PolicyLoadError",
    "Rule",
    "default_policy",
    "evaluate_generation",
    "facts_to_context",
    "load_policy",
    "policy_hash",
]
