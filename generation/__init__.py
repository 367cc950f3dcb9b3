"""Talking-face generation: media I/O, face analysis, audio features, motion, rendering, and the generator."""

# The names below are loaded on first use (PEP 562): `from generation.errors import ...` (the CLI, service/errors.py)
# must not pay for torch, OpenCV, mediapipe and PyAV, which the generator and media modules import.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# name -> module that defines it
_EXPORTS = {
    "AudioTooLong": "generation.errors",
    "EncodeFailed": "generation.errors",
    "GenerationError": "generation.errors",
    "ImageTooLarge": "generation.errors",
    "InvalidAudio": "generation.errors",
    "InvalidImage": "generation.errors",
    "InvalidVideo": "generation.errors",
    "NoFaceFound": "generation.errors",
    "GenerationConfig": "generation.generator",
    "PreparedFace": "generation.generator",
    "TalkingFaceGenerator": "generation.generator",
    "AudioTrack": "generation.media",
    "VideoInfo": "generation.media",
    "encode_mp4": "generation.media",
    "iter_video_frames": "generation.media",
    "load_audio": "generation.media",
    "load_frames_for_detection": "generation.media",
    "load_image": "generation.media",
    "probe_video": "generation.media",
    "MotionState": "generation.motion",
}

if TYPE_CHECKING:
    from generation.errors import (
        AudioTooLong,
        EncodeFailed,
        GenerationError,
        ImageTooLarge,
        InvalidAudio,
        InvalidImage,
        InvalidVideo,
        NoFaceFound,
    )
    from generation.generator import GenerationConfig, PreparedFace, TalkingFaceGenerator
    from generation.media import (
        AudioTrack,
        VideoInfo,
        encode_mp4,
        iter_video_frames,
        load_audio,
        load_frames_for_detection,
        load_image,
        probe_video,
    )
    from generation.motion import MotionState


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


__all__ = [
    "AudioTooLong",
    "AudioTrack",
    "EncodeFailed",
    "GenerationConfig",
    "GenerationError",
    "ImageTooLarge",
    "InvalidAudio",
    "InvalidImage",
    "InvalidVideo",
    "MotionState",
    "NoFaceFound",
    "PreparedFace",
    "TalkingFaceGenerator",
    "VideoInfo",
    "encode_mp4",
    "iter_video_frames",
    "load_audio",
    "load_frames_for_detection",
    "load_image",
    "probe_video",
]
