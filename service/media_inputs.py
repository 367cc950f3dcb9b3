"""A generation's inputs, typed by their bytes and decoded under the configured limits before anything renders."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generation.errors import AudioTooLong, InvalidAudio, InvalidImage
from generation.media import AudioTrack, MediaType, load_audio, load_image, sniff_media_type
from service.runtime import Runtime

__all__ = ["ValidatedInputs", "audio_type", "photo_type", "sha256_file", "validate_inputs"]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ValidatedInputs:
    """Decoded, size-checked inputs. `audio` is None when it was refused for length (the policy then says so).
    The types are what the bytes are (magic numbers), whatever the file names say."""

    photo: np.ndarray
    audio: AudioTrack | None
    audio_duration_s: float
    photo_type: MediaType | None = None
    audio_type: MediaType | None = None
    photo_sha256: str | None = None  # of the photo file's bytes: a human-review approval is bound to it


_PHOTO_FORMATS = "PNG, JPEG or WebP"
_AUDIO_FORMATS = "WAV, MP3, Ogg, FLAC or M4A"


def photo_type(data: bytes | Path, *, name: str | None = None) -> MediaType:
    """The photo's real type from its bytes; the name is only a hint, used in the message when the bytes disagree.

    Raises InvalidImage when the bytes are not an image (audio, video, text, unknown) - before anything is decoded.
    """
    kind = sniff_media_type(data)
    if kind is None or kind.kind != "image":
        what = f"{kind.mime} data" if kind else "not a known image format"
        named = f" (named {name})" if name else ""
        raise InvalidImage(f"the photo{named} is {what}: a {_PHOTO_FORMATS} image is expected")
    return kind


def audio_type(data: bytes | Path, *, name: str | None = None) -> MediaType:
    """The audio's real type from its bytes (a video container counts: its audio track is used).

    Raises InvalidAudio when the bytes are an image or match no known audio container - before decoding.
    """
    kind = sniff_media_type(data)
    if kind is None or kind.kind not in ("audio", "video"):
        what = f"{kind.mime} data" if kind else "not a known audio format"
        named = f" (named {name})" if name else ""
        raise InvalidAudio(f"the audio{named} is {what}: {_AUDIO_FORMATS} is expected")
    return kind


def validate_inputs(rt: Runtime, photo_path: Path, audio_path: Path) -> ValidatedInputs:
    """Type both inputs by their bytes, then decode them under the configured limits; raises typed invalid-input
    errors. Runs before any rendering, so a mistyped upload costs nothing."""
    kinds = photo_type(photo_path, name=photo_path.name), audio_type(audio_path, name=audio_path.name)
    photo = load_image(photo_path, max_pixels=rt.settings.max_image_pixels, portrait=True)
    digest = sha256_file(photo_path)
    typed = {"photo_type": kinds[0], "audio_type": kinds[1], "photo_sha256": digest}
    try:
        audio = load_audio(audio_path, max_seconds=rt.settings.max_audio_seconds)
        return ValidatedInputs(photo, audio, audio.duration_s, **typed)
    except AudioTooLong as exc:
        # Too long is a policy denial (audited with the other reasons), not malformed input.
        return ValidatedInputs(photo, None, exc.duration_s, **typed)
