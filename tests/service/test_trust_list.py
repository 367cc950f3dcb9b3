"""The C2PA trust list the service reads manifests against: our anchor always, plus PROVATAR_EXTRA_TRUST_ANCHORS."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from pydantic import ValidationError

from safeguards.pki import create_dev_ca
from service.runtime import Runtime, initialize
from service.settings import Settings


def test_extra_anchors_are_added_to_ours(tmp_path: Path) -> None:
    other = create_dev_ca(tmp_path / "other", organization="Partner Newsroom")
    settings = Settings(data_dir=tmp_path / "data", extra_trust_anchors=other.root)
    initialize(settings)
    rt = Runtime(settings)
    try:
        bundle = rt.trust_anchors_pem()
    finally:
        rt.close()
    assert bundle is not None
    subjects = [c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(bundle.encode())]
    assert len(subjects) == 2
    assert "provatar dev root CA" in subjects[0] and "Partner Newsroom root CA" in subjects[1]


def test_missing_extra_anchor_file_is_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="EXTRA_TRUST_ANCHORS"):
        Settings(data_dir=tmp_path, extra_trust_anchors=tmp_path / "nope.pem")
