"""One shape for every detection cue (after DeepfakeBench's detector registry): a cue measures a `FaceTrack` into a
few named features and says whether it applies; a per-cue logistic model (fitted by `bench/train_detector.py`)
turns the features into the cue's own score; `fusion` combines the cue scores into one calibrated probability."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from safeguards.cues.track import FaceTrack

__all__ = ["Cue", "CueMeasurement", "CueResult"]


@dataclass
class CueMeasurement:
    """What a cue measured. ``features`` are finite floats (the fusion's input); ``evidence`` is for people
    (short numbers and plots' data); ``applies`` False means the cue had nothing to look at (no face, no audio,
    too short) and its features must not be used."""

    applies: bool
    features: dict[str, float] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


@dataclass
class CueResult:
    """A cue's verdict in the report: its own probability of "synthetic" and its share of the fused logit."""

    name: str
    applies: bool
    score: float | None  # the cue's own calibrated probability, None when it does not apply
    contribution: float  # this cue's term in the fused logit (0 when it does not apply)
    features: dict[str, float]
    evidence: dict[str, Any]
    reason: str = ""


class Cue(Protocol):
    name: str
    description: str

    def measure(self, track: FaceTrack) -> CueMeasurement: ...
