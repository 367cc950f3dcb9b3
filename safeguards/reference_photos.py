"""A reference photo (decoded pixels plus the bytes they came from) and the one face it must show."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from safeguards.errors import MultipleFacesInPhoto, NoFaceInPhoto
from safeguards.identity import FaceAnalyzer

__all__ = ["ReferencePhoto", "single_face_embedding"]


@dataclass(frozen=True)
class ReferencePhoto:
    """A decoded reference photo plus the bytes it was decoded from (hashed, and stored only when allowed)."""

    image_rgb: np.ndarray
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def suffix(self) -> str:
        """File suffix from the content's magic bytes (for the stored copy)."""
        if self.content.startswith(b"\x89PNG"):
            return ".png"
        if self.content.startswith(b"\xff\xd8"):
            return ".jpg"
        if self.content[:4] == b"RIFF" and self.content[8:12] == b"WEBP":
            return ".webp"
        return ".img"


def single_face_embedding(analyzer: FaceAnalyzer, photo: ReferencePhoto) -> np.ndarray:
    """The embedding of the one face in a reference photo; a reference must show exactly one face."""
    faces = analyzer.faces(photo.image_rgb)
    smallest = analyzer.smallest_counted_face_px(*photo.image_rgb.shape[:2])
    if not faces:
        raise NoFaceInPhoto(
            f"no face {smallest} px wide or more was found in the reference photo; use a clear, frontal photo of "
            "the subject"
        )
    if len(faces) > 1:
        raise MultipleFacesInPhoto(len(faces), smallest)
    return faces[0].embedding
