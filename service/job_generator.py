"""The generator a job runs with: the runtime's, with the job's controls and framing."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from generation import TalkingFaceGenerator
from generation.controls import Controls
from generation.framing import Framing
from service.runtime import Runtime

__all__ = ["job_framing", "job_generator"]


def job_framing(rt: Runtime, params: dict[str, Any] | None) -> Framing:
    """A job's framing (stored as `{"mode", "size"}`; absent = the default crop at the configured output size).
    Raises InvalidControls for a bad value."""
    params = params or {}
    return Framing.from_values(params.get("mode"), params.get("size"), default_size=rt.settings.output_size)


def job_generator(rt: Runtime, controls: dict[str, Any], framing: Framing | None = None) -> TalkingFaceGenerator:
    """The runtime's generator with this job's controls (gaze, distance, emotion, intensity, seed, lip-sync) and
    framing (crop or full frame, crop size)."""
    config = replace(rt.generator.config, controls=Controls.from_mapping(controls))
    if framing is not None:
        config = replace(config, framing=framing.mode, size=framing.size)
    return TalkingFaceGenerator(config)
