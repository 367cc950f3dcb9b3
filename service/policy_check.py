"""The policy step of a generation: measure the request, let the policy decide, audit the decision, and queue a
borderline likeness for a consent officer."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from policies import PolicyDecision, evaluate_generation
from policies.facts import GenerationFacts
from safeguards.gate import assess_generation_request
from safeguards.identity import Band, IdentityThresholds
from service import identity_reviews
from service.errors import Denied
from service.fingerprints import keyed_fingerprint
from service.media_inputs import ValidatedInputs
from service.runtime import Runtime
from service.settings import Settings

__all__ = ["check_generation_policy", "identity_thresholds"]


def identity_thresholds(settings: Settings) -> IdentityThresholds:
    """The subject and block-list bands from the settings (a band whose ends are swapped is a startup error)."""
    return IdentityThresholds(
        subject=Band(settings.subject_match_threshold, settings.subject_review_threshold),
        block=Band(settings.block_match_threshold, settings.block_review_threshold),
        poor_photo_margin=settings.poor_photo_margin,
    )



def check_generation_policy(
    rt: Runtime,
    *,
    inputs: ValidatedInputs,
    subject_id: str,
    client_id: str,
    purpose: str,
    actor: str,
    request_id: str,
    generation_id: str | None = None,
) -> tuple[PolicyDecision, GenerationFacts]:
    """Measure the request (faces, likeness, consent, limits), let the policy decide, audit the decision.

    Raises Denied when the policy refuses; the decision is audited either way. A borderline likeness is queued
    for a consent officer (its review id is in the denial); an allowed request that relied on an officer's
    approval counts and audits that use.
    """
    with rt.session() as session:
        facts = assess_generation_request(
            session=session,
            analyzer=rt.analyzer,
            photo_rgb=inputs.photo,
            subject_id=subject_id,
            client_id=client_id,
            purpose=purpose,
            audio_duration_s=inputs.audio_duration_s,
            max_audio_s=rt.settings.max_audio_seconds,
            thresholds=identity_thresholds(rt.settings),
            now=datetime.now(UTC),
            photo_sha256=inputs.photo_sha256,
        )
    decision = evaluate_generation(facts, policy=rt.policy)
    rt.audit.append(
        action="policy.decision",
        actor=actor,
        subject=subject_id,
        outcome="ok" if decision.allowed else "denied",
        request_id=request_id,
        details={"generation_id": generation_id, "decision": decision.to_dict(), "facts": _audited_facts(rt, facts)},
    )
    if not decision.allowed:
        reviews = identity_reviews.queue_identity_reviews(
            rt, facts=facts, decision=decision, actor=actor, request_id=request_id, generation_id=generation_id
        )
        shown = decision.to_dict() | ({"review_ids": [r.id for r in reviews]} if reviews else {})
        raise Denied(decision.reasons, decision.messages, shown)
    identity_reviews.record_review_use(rt, facts=facts, actor=actor, request_id=request_id, generation_id=generation_id)
    return decision, facts


def _audited_facts(rt: Runtime, facts: GenerationFacts) -> dict[str, Any]:
    """The facts for the audit log, the photo named by its keyed fingerprint: a plain SHA-256 in an append-only log
    would outlive the subject's erasure (service/fingerprints.py)."""
    audited = facts.to_dict()
    digest = audited.pop("photo_sha256", None)
    audited["photo_fingerprint"] = keyed_fingerprint(rt, digest) if digest else None
    return audited
