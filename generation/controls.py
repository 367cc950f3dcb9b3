"""User controls of the generated motion: gaze, head distance, emotion, motion intensity, seed, lip-sync path.

``Controls`` is what the CLI, the API and Python callers fill in; ``Controls.from_mapping`` validates plain strings
and numbers (form fields, JSON, CLI options) and raises ``InvalidControls`` (code ``invalid_controls``) naming the
field. ``emotion_offsets`` turns an emotion into constant offsets of MotionState fields.

Fields:
    gaze_x, gaze_y: where the eyes look, -1..1 of the iris travel (+x = image right, +y = down); 0, 0 = camera.
    head_distance: 0.5..2.0; 1 = as in the photo, 2 = twice as far (head drawn at half size), 0.5 = closer.
    emotion: "neutral", "happy", "sad", "angry" or "surprised"; emotion_intensity: 0..1.
    motion_intensity: 0..3 scale of head, brow and gaze motion (0 = still head, lips only); None = the
        GenerationConfig's value.
    seed: >= 0; None = the GenerationConfig's seed. The same seed gives the same motion.
    lipsync: "auto" (phones when the recogniser's output looks like speech, else acoustic), "phonemes"
        (English phone recognition) or "acoustic" (any language, singing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from generation.errors import GenerationError

__all__ = ["Controls", "Emotion", "EmotionOffsets", "InvalidControls", "LipSync", "emotion_offsets"]

Emotion = Literal["neutral", "happy", "sad", "angry", "surprised"]
LipSync = Literal["auto", "phonemes", "acoustic"]
_EMOTIONS: tuple[str, ...] = get_args(Emotion)
_LIPSYNC: tuple[str, ...] = get_args(LipSync)


class InvalidControls(GenerationError):
    """A control value is missing its type or out of range; ``field`` names it."""

    code = "invalid_controls"

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


_RANGES: dict[str, tuple[float, float]] = {
    "gaze_x": (-1.0, 1.0),
    "gaze_y": (-1.0, 1.0),
    "head_distance": (0.5, 2.0),
    "emotion_intensity": (0.0, 1.0),
    "motion_intensity": (0.0, 3.0),
}


@dataclass(frozen=True)
class Controls:
    """Validated motion controls (see the module docstring for each field). Invalid values raise InvalidControls."""

    gaze_x: float = 0.0
    gaze_y: float = 0.0
    head_distance: float = 1.0
    emotion: Emotion = "neutral"
    emotion_intensity: float = 1.0
    motion_intensity: float | None = None
    seed: int | None = None
    lipsync: LipSync = "auto"

    def __post_init__(self) -> None:
        for name, (lo, hi) in _RANGES.items():
            value = getattr(self, name)
            if value is None and name == "motion_intensity":
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidControls(name, f"expected a number, got {value!r}")
            if not lo <= value <= hi:
                raise InvalidControls(name, f"{value} is outside {lo}..{hi}")
        if self.emotion not in _EMOTIONS:
            raise InvalidControls("emotion", f"{self.emotion!r} is not one of {', '.join(_EMOTIONS)}")
        if self.lipsync not in _LIPSYNC:
            raise InvalidControls("lipsync", f"{self.lipsync!r} is not one of {', '.join(_LIPSYNC)}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0):
            raise InvalidControls("seed", f"expected a non-negative integer, got {self.seed!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Controls:
        """Build from plain strings/numbers (e.g. form fields); unknown keys and bad values raise InvalidControls.

        Empty strings and None mean "default". Numbers may be given as strings ("0.5"); the seed must be an integer.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidControls(unknown[0], f"unknown control (known: {', '.join(sorted(known))})")
        kwargs: dict[str, Any] = {}
        for name, raw in values.items():
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            if name in ("emotion", "lipsync"):
                if not isinstance(raw, str):
                    raise InvalidControls(name, f"expected a string, got {raw!r}")
                kwargs[name] = raw.strip().lower()
            elif name == "seed":
                kwargs[name] = _to_int(name, raw)
            else:
                kwargs[name] = _to_float(name, raw)
        return cls(**kwargs)


def _to_float(name: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise InvalidControls(name, f"expected a number, got {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise InvalidControls(name, f"expected a number, got {raw!r}") from None


def _to_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
        raise InvalidControls(name, f"expected an integer, got {raw!r}")
    try:
        return int(raw.strip()) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError):
        raise InvalidControls(name, f"expected an integer, got {raw!r}") from None


@dataclass(frozen=True)
class EmotionOffsets:
    """Constant offsets an emotion adds to MotionState fields (at the given intensity).

    smile < 0 turns the mouth corners down; brow < 0 lowers the brows; lids > 0 narrows the eyes (a partial
    blink), < 0 widens them; pitch_deg > 0 tips the chin down; gap_scale scales the speech opening and gap_add
    keeps the lips slightly parted; head_activity scales the head motion (sad is slower and smaller).
    """

    smile: float = 0.0
    brow: float = 0.0
    lids: float = 0.0
    upper_lip: float = 0.0
    pitch_deg: float = 0.0
    gaze_y: float = 0.0
    gap_scale: float = 1.0
    gap_add: float = 0.0
    head_activity: float = 1.0


# Offsets at full intensity, from FACS prototypes: happy AU6+12, sad AU1+4+15, angry AU4+5+7+23, surprised AU1+2+5+26.
_EMOTION_TABLE: dict[str, EmotionOffsets] = {
    "neutral": EmotionOffsets(),
    "happy": EmotionOffsets(smile=0.9, brow=0.15, lids=0.15, upper_lip=0.15, pitch_deg=-1.0, head_activity=1.15),
    "sad": EmotionOffsets(smile=-0.6, brow=0.3, lids=0.2, pitch_deg=4.0, gaze_y=0.25, gap_scale=0.8,
                          head_activity=0.6),
    "angry": EmotionOffsets(smile=-0.3, brow=-0.7, lids=0.25, upper_lip=0.35, pitch_deg=2.0, gap_scale=0.9,
                            head_activity=1.1),
    "surprised": EmotionOffsets(brow=1.0, lids=-0.3, pitch_deg=-2.0, gap_scale=1.15, gap_add=0.03),
}  # fmt: skip


def emotion_offsets(emotion: str, intensity: float) -> EmotionOffsets:
    """The emotion's offsets scaled by intensity (0 = neutral). Unknown emotions raise InvalidControls."""
    if emotion not in _EMOTION_TABLE:
        raise InvalidControls("emotion", f"{emotion!r} is not one of {', '.join(_EMOTIONS)}")
    full = _EMOTION_TABLE[emotion]
    k = float(intensity)
    return EmotionOffsets(
        smile=full.smile * k,
        brow=full.brow * k,
        lids=full.lids * k,
        upper_lip=full.upper_lip * k,
        pitch_deg=full.pitch_deg * k,
        gaze_y=full.gaze_y * k,
        gap_scale=1.0 + (full.gap_scale - 1.0) * k,
        gap_add=full.gap_add * k,
        head_activity=1.0 + (full.head_activity - 1.0) * k,
    )
