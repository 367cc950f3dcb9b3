"""The human-review queue for borderline likeness: a photo in a review band waits here for a consent officer.

When the gate measures a face inside a review band (close to a blocked identity but not surely them:
`possible_protected_identity`; neither surely the subject nor surely someone else: `subject_uncertain`), the policy
denies the request and the service queues an `IdentityReview`. A consent officer approves or rejects it with a
written justification; both are final and audited by the caller.

What an approval covers (the binding), decided for issue 15:
- exactly one photo, by the SHA-256 of its bytes; a re-encoded, cropped or otherwise different file is a different
  photo and needs its own review;
- one subject, and one reason code; for `possible_protected_identity` also the one blocked identity that was
  nearest when the review was queued (if a later block-list entry comes closer, the approval does not cover it);
- it is reusable for that photo until it expires (default 30 days), not single-use: the officer judged the likeness
  in that photo, which does not change between requests, while consent, purpose, client and every other rule are
  still checked on each request. Each policy check that relied on it is counted (`uses`; an API request is
  checked when submitted and again when the worker runs it) and audited by the caller.
- the client (actor) that asked for the generation cannot decide its own review (four eyes).

An approval never lifts a strict match (`blocked_identity`, `subject_mismatch`): the policy only lets it lift the
two review codes. Data functions flush and never commit (the caller owns the transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import JSON
from sqlmodel import Field, Session, SQLModel, col, select

from safeguards.db_types import UTCDateTime, new_id, utc_now
from safeguards.errors import InvalidReviewDecision, ReviewNotFound, ReviewNotPending

__all__ = [
    "DEFAULT_APPROVAL_VALIDITY",
    "REVIEW_REASONS",
    "IdentityReview",
    "IdentityReviewPublic",
    "ReviewStatus",
    "approvals_for",
    "decide_review",
    "get_review",
    "list_reviews",
    "queue_review",
    "record_use",
]

REVIEW_REASONS = ("possible_protected_identity", "subject_uncertain")
DEFAULT_APPROVAL_VALIDITY = timedelta(days=30)
_MIN_JUSTIFICATION = 10  # characters: "ok" is not a justification


class ReviewStatus(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"


class IdentityReviewBase(SQLModel):
    reason: str = Field(max_length=64)  # the policy's review code
    photo_sha256: str = Field(max_length=64, index=True)
    subject_id: str = Field(foreign_key="consent_subject.id", index=True, max_length=40)
    blocked_identity_id: str | None = Field(default=None, foreign_key="consent_blocked_identity.id", max_length=40)
    # The measurement a human is asked to judge: the distance and the band it fell in (for this photo's quality).
    distance: float
    match_threshold: float
    review_threshold: float
    quality_issues: list[str] = Field(default_factory=list, sa_type=JSON)
    client_id: str = Field(max_length=255)
    requested_by: str = Field(max_length=255)
    request_id: str | None = Field(default=None, max_length=64)
    generation_id: str | None = Field(default=None, max_length=40)
    decision_id: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)
    status: str = Field(default=ReviewStatus.pending.value, max_length=16, index=True)
    decided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    decided_by: str | None = Field(default=None, max_length=255)
    justification: str | None = Field(default=None, max_length=2000)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    uses: int = 0
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class IdentityReview(IdentityReviewBase, table=True):
    __tablename__ = "consent_identity_review"

    id: str = Field(default_factory=lambda: new_id("rev"), primary_key=True, max_length=40)


class IdentityReviewPublic(IdentityReviewBase):
    """Everything in a review is fit for a consent officer's screen: it holds no embedding and no photo."""

    id: str


def queue_review(
    *,
    session: Session,
    reason: str,
    photo_sha256: str,
    subject_id: str,
    blocked_identity_id: str | None,
    distance: float,
    match_threshold: float,
    review_threshold: float,
    quality_issues: Sequence[str],
    client_id: str,
    requested_by: str,
    request_id: str | None = None,
    generation_id: str | None = None,
    decision_id: str | None = None,
    now: datetime | None = None,
) -> tuple[IdentityReview, bool]:
    """Queue a borderline photo for review; (review, created). A pending review with the same binding (reason,
    photo, subject, blocked identity) is returned instead of a duplicate, so retries do not flood the queue."""
    if reason not in REVIEW_REASONS:
        raise ValueError(f"reason must be one of {REVIEW_REASONS}, got {reason!r}")
    stmt = select(IdentityReview).where(
        IdentityReview.reason == reason,
        IdentityReview.photo_sha256 == photo_sha256,
        IdentityReview.subject_id == subject_id,
        IdentityReview.status == ReviewStatus.pending.value,
    )
    stmt = stmt.where(
        col(IdentityReview.blocked_identity_id).is_(None)
        if blocked_identity_id is None
        else IdentityReview.blocked_identity_id == blocked_identity_id
    )
    existing = session.exec(stmt.limit(1)).first()
    if existing is not None:
        return existing, False
    review = IdentityReview(
        reason=reason,
        photo_sha256=photo_sha256,
        subject_id=subject_id,
        blocked_identity_id=blocked_identity_id,
        distance=float(distance),
        match_threshold=float(match_threshold),
        review_threshold=float(review_threshold),
        quality_issues=list(quality_issues),
        client_id=client_id,
        requested_by=requested_by,
        request_id=request_id,
        generation_id=generation_id,
        decision_id=decision_id,
        created_at=utc_now(now),
    )
    session.add(review)
    session.flush()
    return review, True


def get_review(*, session: Session, review_id: str) -> IdentityReview:
    """The review with this id. Raises ReviewNotFound."""
    review = session.get(IdentityReview, review_id)
    if review is None:
        raise ReviewNotFound(review_id)
    return review


def list_reviews(
    *, session: Session, status: ReviewStatus | None = None, offset: int = 0, limit: int = 100
) -> list[IdentityReview]:
    """Reviews, oldest first (the queue order); all statuses unless `status` is given."""
    stmt = select(IdentityReview).order_by(col(IdentityReview.created_at), col(IdentityReview.id))
    if status is not None:
        stmt = stmt.where(IdentityReview.status == ReviewStatus(status).value)
    return list(session.exec(stmt.offset(offset).limit(limit)).all())


def decide_review(
    *,
    session: Session,
    review_id: str,
    approve: bool,
    decided_by: str,
    justification: str,
    now: datetime | None = None,
    valid_for: timedelta = DEFAULT_APPROVAL_VALIDITY,
) -> IdentityReview:
    """Approve or reject a pending review with a recorded justification. Flushes, no commit.

    Raises:
        ReviewNotFound, ReviewNotPending (already decided), InvalidReviewDecision (no real justification, a
        non-positive validity, or the requester deciding their own review).
    """
    review = get_review(session=session, review_id=review_id)
    if review.status != ReviewStatus.pending.value:
        raise ReviewNotPending(review_id, review.status)
    text = (justification or "").strip()
    if len(text) < _MIN_JUSTIFICATION:
        raise InvalidReviewDecision(
            f"a review decision needs a justification of at least {_MIN_JUSTIFICATION} characters "
            "(what the officer compared and why they concluded)"
        )
    if decided_by == review.requested_by:
        raise InvalidReviewDecision(
            f"{decided_by} asked for this generation and cannot decide its own review; another officer must"
        )
    if approve and valid_for <= timedelta(0):
        raise InvalidReviewDecision("an approval must stay valid for a positive time")
    at = utc_now(now)
    review.status = (ReviewStatus.approved if approve else ReviewStatus.rejected).value
    review.decided_at = at
    review.decided_by = decided_by
    review.justification = text
    review.expires_at = at + valid_for if approve else None
    session.add(review)
    session.flush()
    return review


def approvals_for(
    *,
    session: Session,
    photo_sha256: str,
    subject_id: str,
    blocked_identity_id: str | None,
    at: datetime,
) -> list[IdentityReview]:
    """Unexpired approvals that cover this photo for this subject: `subject_uncertain` ones, and
    `possible_protected_identity` ones for exactly `blocked_identity_id` (none when it is None)."""
    when = utc_now(at)
    stmt = select(IdentityReview).where(
        IdentityReview.photo_sha256 == photo_sha256,
        IdentityReview.subject_id == subject_id,
        IdentityReview.status == ReviewStatus.approved.value,
    )
    out: list[IdentityReview] = []
    for review in session.exec(stmt.order_by(col(IdentityReview.decided_at))).all():
        if review.expires_at is None or review.expires_at <= when:
            continue
        if review.reason == "possible_protected_identity" and (
            blocked_identity_id is None or review.blocked_identity_id != blocked_identity_id
        ):
            continue
        out.append(review)
    return out


def record_use(*, session: Session, review_ids: Sequence[str], now: datetime | None = None) -> None:
    """Count one use of each approval (a generation allowed because of it). Flushes, no commit."""
    at = utc_now(now)
    for review_id in review_ids:
        review = get_review(session=session, review_id=review_id)
        review.uses += 1
        review.last_used_at = at
        session.add(review)
    session.flush()
