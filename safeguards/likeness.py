"""Likeness of a face to one person's reference embeddings, scored two ways (`IdentityScore`).

The distance to the nearest reference and the distance to the mean of the references: the block list takes the
smaller (either view close is reason to stop), the subject check the larger (a stranger must be far from neither).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlmodel import Session

from safeguards.errors import EmbeddingMismatch
from safeguards.subjects import list_references

__all__ = ["IdentityScore", "closest_reference_distance", "reference_score", "score_references"]


@dataclass(frozen=True)
class IdentityScore:
    """A face against one person's reference embeddings: nearest reference and distance to their mean."""

    nearest: float
    to_mean: float
    references: int

    @property
    def block_distance(self) -> float:
        """For the block list: the smaller view (either one close is reason enough to stop)."""
        return min(self.nearest, self.to_mean)

    @property
    def subject_distance(self) -> float:
        """For the subject: the larger view (a stranger close to one odd reference is still far from the mean)."""
        return max(self.nearest, self.to_mean)


def score_references(references: np.ndarray, embedding: np.ndarray) -> IdentityScore:
    """Score `embedding` against `references` (N, dim) of one person and one embedder."""
    refs = np.asarray(references, dtype=np.float64).reshape(-1, np.asarray(embedding).size)  # (N, dim)
    query = np.asarray(embedding, dtype=np.float64).ravel()
    nearest = float(np.min(np.linalg.norm(refs - query[None, :], axis=1)))
    to_mean = float(np.linalg.norm(refs.mean(axis=0) - query))
    return IdentityScore(nearest=nearest, to_mean=to_mean, references=int(refs.shape[0]))



def reference_score(
    *, session: Session, subject_id: str, embedding: np.ndarray, embedder: str
) -> IdentityScore | None:
    """`embedding` against the subject's references made by the same embedder; None if there are none."""
    refs = [r.embedding for r in list_references(session=session, subject_id=subject_id) if r.embedder == embedder]
    if not refs:
        return None
    matrix = np.asarray(refs, dtype=np.float64)  # (N, dim)
    if matrix.shape[1] != np.asarray(embedding).size:
        raise EmbeddingMismatch(
            f"subject {subject_id} has {matrix.shape[1]}-d references, the query has {np.asarray(embedding).size}"
        )
    return score_references(matrix, embedding)


def closest_reference_distance(
    *, session: Session, subject_id: str, embedding: np.ndarray, embedder: str
) -> float | None:
    """The subject distance (`IdentityScore.subject_distance`: the larger of nearest reference and distance to the
    references' mean) from `embedding` to the subject; None without references of this embedder."""
    score = reference_score(session=session, subject_id=subject_id, embedding=embedding, embedder=embedder)
    return None if score is None else score.subject_distance
