"""Shared fixtures for the generation tests: the example face prepared once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from generation import GenerationConfig, PreparedFace, TalkingFaceGenerator, load_image


@pytest.fixture(scope="session")
def generator() -> TalkingFaceGenerator:
    return TalkingFaceGenerator(GenerationConfig(size=512, fps=25, seed=0, device="cpu"))


@pytest.fixture(scope="session")
def prepared(generator: TalkingFaceGenerator, example_photo: Path) -> PreparedFace:
    return generator.prepare(load_image(example_photo, max_pixels=50_000_000))
