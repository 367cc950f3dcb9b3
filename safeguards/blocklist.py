"""The block list: protected likenesses (e.g. public figures) that no photo may match, enrolled or not.

An entry keeps one face embedding per photo of the person (several photos, better recall); the photos themselves are
never stored. Data functions take keyword-only arguments and a `session`; none of them commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
from sqlmodel import Session, col, select

from safeguards.consent import BlockedIdentity, BlockedIdentityCreate, BlockedReference
from safeguards.db_types import utc_now
from safeguards.errors import BlockedIdentityNotFound, EmbeddingMismatch, MissingReferencePhoto
from safeguards.identity import FaceAnalyzer
from safeguards.likeness import IdentityScore, score_references
from safeguards.reference_photos import ReferencePhoto, single_face_embedding

__all__ = [
    "add_block_references",
    "block_identity",
    "blocked_references",
    "closest_blocked",
    "closest_blocked_score",
    "list_blocked",
    "unblock_identity",
]


def block_identity(
    *,
    session: Session,
    blocked_in: BlockedIdentityCreate,
    photos: Sequence[ReferencePhoto] = (),
    analyzer: FaceAnalyzer,
    created_by: str,
    now: datetime | None = None,
    photo: ReferencePhoto | None = None,
) -> BlockedIdentity:
    """Protect the likeness in one or more photos of ONE person (each with exactly one face): several photos give
    the matcher a nearest reference and a mean to compare against. The photos themselves are never stored.
    Flushes, no commit. (`photo` is the single-photo form kept for older callers.)

    Raises:
        MissingReferencePhoto, NoFaceInPhoto, MultipleFacesInPhoto.
    """
    all_photos = [*([photo] if photo is not None else []), *photos]
    if not all_photos:
        raise MissingReferencePhoto("blocking an identity needs at least one photo of their face")
    embeddings = [single_face_embedding(analyzer, p) for p in all_photos]
    at = utc_now(now)
    blocked = BlockedIdentity.model_validate(
        blocked_in,
        update={
            "embedding": [float(v) for v in embeddings[0]],
            "embedder": analyzer.embedder.name,
            "photo_sha256": all_photos[0].sha256,
            "created_at": at,
            "created_by": created_by,
        },
    )
    session.add(blocked)
    session.flush()
    _add_blocked_rows(session, blocked, all_photos, embeddings, analyzer.embedder.name, at)
    return blocked


def add_block_references(
    *,
    session: Session,
    blocked_id: str,
    photos: Sequence[ReferencePhoto],
    analyzer: FaceAnalyzer,
    now: datetime | None = None,
) -> list[BlockedReference]:
    """Add photos of the same person to an active block-list entry. Flushes, no commit.

    Raises:
        BlockedIdentityNotFound, MissingReferencePhoto, NoFaceInPhoto, MultipleFacesInPhoto.
    """
    blocked = session.get(BlockedIdentity, blocked_id)
    if blocked is None or blocked.removed_at is not None:
        raise BlockedIdentityNotFound(blocked_id)
    if not photos:
        raise MissingReferencePhoto("adding to a blocked identity needs at least one photo")
    embeddings = [single_face_embedding(analyzer, p) for p in photos]
    if not blocked_references(session=session, blocked_ids=[blocked.id]):
        # A row from before multi-photo blocking: its one embedding becomes its first reference row.
        session.add(
            BlockedReference(
                blocked_id=blocked.id,
                embedding=list(blocked.embedding),
                embedder=blocked.embedder,
                photo_sha256=blocked.photo_sha256,
                created_at=blocked.created_at,
            )
        )
    return _add_blocked_rows(session, blocked, list(photos), embeddings, analyzer.embedder.name, utc_now(now))


def _add_blocked_rows(
    session: Session,
    blocked: BlockedIdentity,
    photos: Sequence[ReferencePhoto],
    embeddings: Sequence[np.ndarray],
    embedder: str,
    at: datetime,
) -> list[BlockedReference]:
    rows = [
        BlockedReference(
            blocked_id=blocked.id,
            embedding=[float(v) for v in emb],
            embedder=embedder,
            photo_sha256=p.sha256,
            created_at=at,
        )
        for p, emb in zip(photos, embeddings, strict=True)
    ]
    session.add_all(rows)
    session.flush()
    return rows


def blocked_references(*, session: Session, blocked_ids: Sequence[str]) -> list[BlockedReference]:
    """The reference rows of these block-list entries, oldest first (internal: they carry embeddings)."""
    if not blocked_ids:
        return []
    stmt = (
        select(BlockedReference)
        .where(col(BlockedReference.blocked_id).in_(list(blocked_ids)))
        .order_by(col(BlockedReference.id))
    )
    return list(session.exec(stmt).all())


def list_blocked(*, session: Session, include_removed: bool = False) -> list[BlockedIdentity]:
    """Block-list entries, oldest first; unblocked ones only with `include_removed`."""
    stmt = select(BlockedIdentity).order_by(col(BlockedIdentity.created_at), col(BlockedIdentity.id))
    if not include_removed:
        stmt = stmt.where(col(BlockedIdentity.removed_at).is_(None))
    return list(session.exec(stmt).all())


def unblock_identity(
    *, session: Session, blocked_id: str, removed_by: str, now: datetime | None = None
) -> BlockedIdentity:
    """Lift a block (the row stays, marked removed). Flushes, no commit. Raises BlockedIdentityNotFound."""
    blocked = session.get(BlockedIdentity, blocked_id)
    if blocked is None or blocked.removed_at is not None:
        raise BlockedIdentityNotFound(blocked_id)
    blocked.removed_at = utc_now(now)
    blocked.removed_by = removed_by
    session.add(blocked)
    session.flush()
    return blocked


def closest_blocked_score(
    *, session: Session, embedding: np.ndarray, embedder: str
) -> tuple[BlockedIdentity, IdentityScore] | None:
    """The active block-list entry nearest to `embedding` by `IdentityScore.block_distance` (same embedder only);
    None if the list is empty.

    Linear scan over every reference: fine for thousands of entries; a vector index is the next step for more.
    """
    rows = [b for b in list_blocked(session=session) if b.embedder == embedder]
    if not rows:
        return None
    query = np.asarray(embedding, dtype=np.float64).ravel()
    by_id: dict[str, list[list[float]]] = {}
    for ref in blocked_references(session=session, blocked_ids=[b.id for b in rows]):
        if ref.embedder == embedder:
            by_id.setdefault(ref.blocked_id, []).append(ref.embedding)
    best: tuple[BlockedIdentity, IdentityScore] | None = None
    for row in rows:
        refs = np.asarray(by_id.get(row.id) or [row.embedding], dtype=np.float64)  # (N, dim)
        if refs.shape[1] != query.shape[0]:
            raise EmbeddingMismatch(
                f"block list holds {refs.shape[1]}-d {embedder} embeddings, the query has {query.shape[0]} values"
            )
        score = score_references(refs, query)
        if best is None or score.block_distance < best[1].block_distance:
            best = (row, score)
    return best


def closest_blocked(*, session: Session, embedding: np.ndarray, embedder: str) -> tuple[BlockedIdentity, float] | None:
    """The active block-list entry nearest to `embedding` and its block distance; None if the list is empty."""
    hit = closest_blocked_score(session=session, embedding=embedding, embedder=embedder)
    return None if hit is None else (hit[0], hit[1].block_distance)
