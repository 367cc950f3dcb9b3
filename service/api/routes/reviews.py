"""Identity reviews: the borderline likeness a consent officer approves or rejects, with a justification.

A generation denied with `possible_protected_identity` or `subject_uncertain` is queued here (its review id is in the
403 body as `review_ids`). Reading the queue needs `consent:read`; deciding needs `consent:write` (the consent
officer's scope), and the client that asked for the generation cannot decide its own review. An approval covers
that photo only (its SHA-256, the subject, the blocked identity) until it expires; the client resends the same
photo and the policy lets that one review code pass (see safeguards/reviews.py for the binding).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field
from sqlmodel import col, select

from safeguards.reviews import IdentityReview, IdentityReviewPublic, ReviewStatus, get_review
from service import identity_reviews
from service.api.deps import RequestId, RequireScope, RuntimeDep, SessionDep
from service.api.paging import page_body
from service.auth import Principal
from service.pagination import keyset_page

router = APIRouter(prefix="/v1", tags=["reviews"])
Reader = Annotated[Principal, RequireScope("consent:read")]
Officer = Annotated[Principal, RequireScope("consent:write")]


class ReviewDecision(BaseModel):
    justification: str = Field(min_length=10, max_length=2000, description="What was compared and why (audited)")


def _public(review: object) -> IdentityReviewPublic:
    return IdentityReviewPublic.model_validate(review, from_attributes=True)


@router.get("/reviews")
def get_reviews(
    request: Request,
    response: Response,
    session: SessionDep,
    _: Reader,
    status: Annotated[ReviewStatus | None, Query(description="default: every status")] = None,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The review queue, oldest first; page with `after` (the `next` link), like every list."""
    stmt = select(IdentityReview)
    if status is not None:
        stmt = stmt.where(IdentityReview.status == ReviewStatus(status).value)
    page = keyset_page(
        session,
        stmt,
        keys=[("created_at", col(IdentityReview.created_at)), ("id", col(IdentityReview.id))],
        after=after,
        limit=limit,
        parse={"created_at": datetime.fromisoformat},
    )
    return page_body(request, response, page, [_public(r) for r in page.items])


@router.get("/reviews/{review_id}")
def get_review_detail(session: SessionDep, _: Reader, review_id: str) -> IdentityReviewPublic:
    return _public(get_review(session=session, review_id=review_id))


@router.post("/reviews/{review_id}/approve")
def approve_review(
    rt: RuntimeDep,
    principal: Officer,
    rid: RequestId,
    review_id: str,
    decision: Annotated[ReviewDecision, Body()],
) -> IdentityReviewPublic:
    """Approve the borderline match for that photo only; the same photo may then be generated (audited)."""
    return _decide(rt, principal, rid, review_id, decision, approve=True)


@router.post("/reviews/{review_id}/reject")
def reject_review(
    rt: RuntimeDep,
    principal: Officer,
    rid: RequestId,
    review_id: str,
    decision: Annotated[ReviewDecision, Body()],
) -> IdentityReviewPublic:
    """Reject the borderline match: the photo stays denied (final, audited)."""
    return _decide(rt, principal, rid, review_id, decision, approve=False)


def _decide(
    rt: RuntimeDep, principal: Principal, rid: str, review_id: str, decision: ReviewDecision, *, approve: bool
) -> IdentityReviewPublic:
    review = identity_reviews.decide(
        rt, review_id=review_id, approve=approve, justification=decision.justification, actor=principal.actor,
        request_id=rid,
    )  # fmt: skip
    return _public(review)
