from __future__ import annotations

import pytest

from safeguards.identity import FaceAnalyzer


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    """MTCNN + dlib, loaded once per test module."""
    return FaceAnalyzer()
