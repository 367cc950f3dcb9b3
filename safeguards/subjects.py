"""Subject lookups: one subject, the list of them, and a subject's reference embeddings."""

from __future__ import annotations

from sqlmodel import Session, col, select

from safeguards.consent import Subject, SubjectReference
from safeguards.errors import SubjectNotFound

__all__ = ["get_subject", "list_references", "list_subjects"]


def get_subject(*, session: Session, subject_id: str) -> Subject:
    """The subject with this id. Raises SubjectNotFound."""
    subject = session.get(Subject, subject_id)
    if subject is None:
        raise SubjectNotFound(subject_id)
    return subject


def list_subjects(*, session: Session, offset: int = 0, limit: int = 100) -> list[Subject]:
    """Subjects, oldest first."""
    stmt = select(Subject).order_by(col(Subject.created_at), col(Subject.id)).offset(offset).limit(limit)
    return list(session.exec(stmt).all())


def list_references(*, session: Session, subject_id: str) -> list[SubjectReference]:
    """A subject's reference embeddings, oldest first (internal: they carry embeddings)."""
    stmt = select(SubjectReference).where(SubjectReference.subject_id == subject_id).order_by(col(SubjectReference.id))
    return list(session.exec(stmt).all())
