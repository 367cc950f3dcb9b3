"""The consent-gate scenario shared by the gate tests and the small-face tests: the example astronaut enrolled from
her photo, consenting to "education" for client_a for 30 days from T0, and requests assessed a day later."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sqlmodel import Session

from policies import GenerationFacts
from safeguards.consent import ConsentCreate, SubjectCreate
from safeguards.consent_records import grant_consent
from safeguards.enrollment import enroll_subject
from safeguards.gate import assess_generation_request
from safeguards.identity import DEFAULT_BLOCK_MATCH_THRESHOLD, FaceAnalyzer, IdentityThresholds
from safeguards.reference_photos import ReferencePhoto

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def reference_photo(image: np.ndarray) -> ReferencePhoto:
    """A reference photo whose stored bytes are the image as PNG (so two different images never share a fingerprint)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return ReferencePhoto(image_rgb=image, content=buf.getvalue())


def enroll_consenting_subject(session: Session, analyzer: FaceAnalyzer, photo: np.ndarray) -> str:
    """Enrol "Eileen Collins" from ``photo`` with consent to "education" for client_a for 30 days; commits."""
    subject = enroll_subject(
        session=session,
        subject_in=SubjectCreate(display_name="Eileen Collins"),
        photos=[reference_photo(photo)],
        analyzer=analyzer,
        created_by="admin:test",
        block_threshold=DEFAULT_BLOCK_MATCH_THRESHOLD,
        now=T0,
    )
    grant_consent(
        session=session,
        consent_in=ConsentCreate(
            subject_id=subject.id,
            purposes=["education"],
            allowed_clients=["client_a"],
            expires_at=T0 + timedelta(days=30),
            evidence_sha256=hashlib.sha256(b"form").hexdigest(),
        ),
        granted_by="admin:test",
        now=T0,
    )
    session.commit()
    return subject.id


def assess(session: Session, analyzer: FaceAnalyzer, photo: np.ndarray, subject_id: str, **kw: Any) -> GenerationFacts:
    """The gate's facts for client_a asking for "education" a day after T0 (keywords override)."""
    args: dict[str, Any] = {
        "client_id": "client_a",
        "purpose": "education",
        "audio_duration_s": 9.7,
        "max_audio_s": 120.0,
        "thresholds": IdentityThresholds(),
        "now": T0 + timedelta(days=1),
    }
    args.update(kw)
    return assess_generation_request(session=session, analyzer=analyzer, photo_rgb=photo, subject_id=subject_id, **args)
