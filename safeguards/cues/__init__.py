"""Detection cues for talking-head videos of any origin, one module each, fused into one calibrated probability.

    track = track_video(path)                      # the main face through a few segments, plus the audio
    measured = measure_all(track, default_cues(classifier))
    fused = FusionModel.load_default().fuse(measured)  # probability, threshold, per-cue score and contribution
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from safeguards.cues.any_generator import AnyGeneratorCue
from safeguards.cues.audiovisual import AudioVisualCue
from safeguards.cues.base import Cue, CueMeasurement, CueResult
from safeguards.cues.fusion import FusedScore, FusionModel
from safeguards.cues.learned import LearnedCue
from safeguards.cues.rppg import PulseCue
from safeguards.cues.spatial import SpatialCue
from safeguards.cues.temporal import TemporalCue
from safeguards.cues.track import FaceTrack, TrackConfig, track_image, track_video

__all__ = [
    "AnyGeneratorCue",
    "AudioVisualCue",
    "Cue",
    "CueMeasurement",
    "CueResult",
    "FaceTrack",
    "FusedScore",
    "FusionModel",
    "LearnedCue",
    "PulseCue",
    "SpatialCue",
    "TemporalCue",
    "TrackConfig",
    "default_cues",
    "measure_all",
    "track_image",
    "track_video",
]


def default_cues(classifier: object | None = None, any_generator: object | None = None) -> list[Cue]:
    """Every cue, in report order. The learned cues need their CNNs (`SyntheticClipClassifier`s): ``classifier``
    knows our renderer, ``any_generator`` was trained against many generators (`safeguards.learned_model`)."""
    cues: list[Cue] = [PulseCue(), AudioVisualCue(), TemporalCue(), SpatialCue()]
    if any_generator is not None:
        cues.append(AnyGeneratorCue(any_generator))  # type: ignore[arg-type]
    if classifier is not None:
        cues.append(LearnedCue(classifier))  # type: ignore[arg-type]
    return cues


def measure_all(track: FaceTrack, cues: Sequence[Cue]) -> dict[str, CueMeasurement]:
    """Each cue's measurement of the track, by cue name. A cue that fails on odd input does not apply (and says
    why) rather than failing the whole detection."""
    out: dict[str, CueMeasurement] = {}
    for cue in cues:
        if track.face_fraction == 0.0 and cue.name != "spatial":
            out[cue.name] = CueMeasurement(False, reason="no face was found in the analysed frames")
            continue
        try:
            m = cue.measure(track)
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            m = CueMeasurement(False, reason=f"could not be measured: {exc}")
        bad = [k for k, v in m.features.items() if not np.isfinite(v)]
        if m.applies and bad:  # a degenerate signal (constant, empty): say so rather than feed NaN to the fusion
            m = CueMeasurement(False, evidence=m.evidence, reason=f"degenerate measurement of {', '.join(bad)}")
        out[cue.name] = m
    return out
