"""Identity reviews in the service: queue a denied request's borderline likeness for a consent officer, record the
officer's decision, and count the approvals an allowed request relied on. Each change commits and is audited."""

from __future__ import annotations

from datetime import timedelta

from policies import POLICY_ERROR, REVIEWABLE_CODES, PolicyDecision
from policies.facts import GenerationFacts
from safeguards.reviews import IdentityReview, decide_review, queue_review, record_use
from service.fingerprints import keyed_fingerprint
from service.runtime import Runtime

__all__ = ["decide", "human_review_summary", "queue_identity_reviews", "record_review_use"]

# A denial with any of these is final: no human review can change it, so none is queued.
_FINAL_CODES = {"no_face", "multiple_faces", "blocked_identity", "unknown_subject", "subject_mismatch", POLICY_ERROR}


def queue_identity_reviews(
    rt: Runtime,
    *,
    facts: GenerationFacts,
    decision: PolicyDecision,
    actor: str,
    request_id: str | None,
    generation_id: str | None = None,
) -> list[IdentityReview]:
    """Queue the borderline likeness of a denied request for a consent officer; [] when nothing is reviewable.

    Only a denial whose identity reasons are all review codes is queued (a certain match, a missing subject or a
    bad face count cannot be approved), and only with the photo's hash to bind an approval to. A pending review of
    the same photo is reused. Each new review is audited.
    """
    codes = [c for c in decision.reasons if c in REVIEWABLE_CODES]
    if not codes or _FINAL_CODES.intersection(decision.reasons) or not facts.photo_sha256:
        return []
    queued: list[tuple[IdentityReview, bool]] = []
    with rt.session() as session:
        session.expire_on_commit = False
        for code in codes:
            block = code == "possible_protected_identity"
            distance = facts.blocked_distance if block else facts.subject_distance
            if distance is None:
                continue
            queued.append(
                queue_review(
                    session=session,
                    reason=code,
                    photo_sha256=facts.photo_sha256,
                    subject_id=facts.subject_id,
                    blocked_identity_id=facts.blocked_identity_id if block else None,
                    distance=distance,
                    match_threshold=facts.block_match_threshold if block else facts.subject_match_threshold,
                    review_threshold=float(
                        (facts.block_review_threshold if block else facts.subject_review_threshold) or distance
                    ),
                    quality_issues=facts.face_quality_issues,
                    client_id=facts.client_id,
                    requested_by=actor,
                    request_id=request_id,
                    generation_id=generation_id,
                    decision_id=decision.decision_id,
                )
            )
        session.commit()
    for review, created in queued:
        if created:
            rt.audit.append(
                action="identity_review.queued",
                actor=actor,
                subject=review.subject_id,
                outcome="ok",
                request_id=request_id,
                details=_review_details(rt, review),
            )
    return [review for review, _ in queued]


def decide(
    rt: Runtime,
    *,
    review_id: str,
    approve: bool,
    justification: str,
    actor: str,
    request_id: str | None = None,
) -> IdentityReview:
    """A consent officer approves or rejects a review with a justification (final, audited)."""
    with rt.session() as session:
        session.expire_on_commit = False
        review = decide_review(
            session=session,
            review_id=review_id,
            approve=approve,
            decided_by=actor,
            justification=justification,
            valid_for=timedelta(days=rt.settings.review_approval_days),
        )
        session.commit()
    rt.audit.append(
        action="identity_review.approved" if approve else "identity_review.rejected",
        actor=actor,
        subject=review.subject_id,
        outcome="ok",
        request_id=request_id,
        details={
            **_review_details(rt, review),
            "justification": review.justification,
            "expires_at": review.expires_at.isoformat() if review.expires_at else None,
        },
    )
    return review


def record_review_use(
    rt: Runtime, *, facts: GenerationFacts, actor: str, request_id: str | None, generation_id: str | None
) -> None:
    """Count and audit the approvals an allowed request relied on (who approved what, for which photo)."""
    if not facts.review_ids:
        return
    with rt.session() as session:
        record_use(session=session, review_ids=list(facts.review_ids))
        session.commit()
    rt.audit.append(
        action="identity_review.used",
        actor=actor,
        subject=facts.subject_id,
        outcome="ok",
        request_id=request_id,
        details={
            "generation_id": generation_id,
            "photo_fingerprint": keyed_fingerprint(rt, facts.photo_sha256) if facts.photo_sha256 else None,
            "reviews": human_review_summary(facts),
        },
    )


def human_review_summary(facts: GenerationFacts) -> list[dict[str, str]]:
    """Who approved which borderline match for this request (for the audit log and the C2PA manifest)."""
    return [
        {"review_id": rid, "reason": code, "approved_by": who}
        for rid, code, who in zip(facts.review_ids, facts.approved_reviews, facts.reviewed_by, strict=True)
    ]


def _review_details(rt: Runtime, review: IdentityReview) -> dict[str, object]:
    return {
        "review_id": review.id,
        "reason": review.reason,
        "status": review.status,
        "photo_fingerprint": keyed_fingerprint(rt, review.photo_sha256),
        "blocked_identity_id": review.blocked_identity_id,
        "distance": round(review.distance, 4),
        "band": [review.match_threshold, review.review_threshold],
        "quality_issues": list(review.quality_issues),
        "client_id": review.client_id,
        "generation_id": review.generation_id,
    }
