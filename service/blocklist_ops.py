"""Block-list operations shared by the CLI, the API and the console: each one commits and is audited."""

from __future__ import annotations

from collections.abc import Sequence

from safeguards.blocklist import add_block_references, block_identity, blocked_references, unblock_identity
from safeguards.consent import BlockedIdentity, BlockedIdentityCreate
from service.consent_ops import decode_photo
from service.runtime import Runtime
from service.validation import MAX_NAME_LENGTH, MAX_TEXT_LENGTH, check_text

__all__ = ["add_block_photos", "block", "unblock"]


def block(
    rt: Runtime,
    *,
    photos: Sequence[bytes],
    label: str,
    reason: str,
    actor: str,
    request_id: str | None = None,
) -> BlockedIdentity:
    """Put the likeness in `photos` (one or more photos of ONE person) on the block list; photos are not kept."""
    check_text(label, field="the label", max_length=MAX_NAME_LENGTH, code="invalid_input")
    check_text(reason, field="the reason", max_length=MAX_TEXT_LENGTH, code="invalid_input")
    decoded = [decode_photo(rt, p) for p in photos]
    with rt.session() as session:
        session.expire_on_commit = False
        entry = block_identity(
            session=session,
            blocked_in=BlockedIdentityCreate(label=label, reason=reason),
            photos=decoded,
            analyzer=rt.analyzer,
            created_by=actor,
        )
        session.commit()
    rt.audit.append(
        action="blocklist.added",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": entry.id, "label": label, "photo_sha256": [p.sha256 for p in decoded]},
    )
    return entry


def add_block_photos(
    rt: Runtime, *, blocked_id: str, photos: Sequence[bytes], actor: str, request_id: str | None = None
) -> int:
    """Add photos of the same person to a block-list entry; returns how many references it has now."""
    decoded = [decode_photo(rt, p) for p in photos]
    with rt.session() as session:
        add_block_references(session=session, blocked_id=blocked_id, photos=decoded, analyzer=rt.analyzer)
        total = len(blocked_references(session=session, blocked_ids=[blocked_id]))
        session.commit()
    rt.audit.append(
        action="blocklist.photos_added",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": blocked_id, "photo_sha256": [p.sha256 for p in decoded], "references": total},
    )
    return total


def unblock(rt: Runtime, *, blocked_id: str, actor: str, request_id: str | None = None) -> BlockedIdentity:
    check_text(blocked_id, field="block-list id", code="invalid_input")
    with rt.session() as session:
        session.expire_on_commit = False
        entry = unblock_identity(session=session, blocked_id=blocked_id, removed_by=actor)
        session.commit()
    rt.audit.append(
        action="blocklist.removed",
        actor=actor,
        outcome="ok",
        request_id=request_id,
        details={"blocked_id": blocked_id, "label": entry.label},
    )
    return entry
