"""Talking-face generation: media I/O, face analysis, audio features, motion, rendering, and the generator."""

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
