"""Errors raised by the generation package.

Every error carries a machine-readable snake_case ``code`` (mapped to HTTP status / CLI exit code
in one place,
``service/errors.py``) and a human ``message`` that says what was wrong and what to do about it.
"""

from __future__ import annotations


class GenerationError(Exception):
    """Base class of every error the generation package raises on purpose."""

    code: str = "generation_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(GenerationError):
    """The photo is empty, not an image, or corrupt."""

    code = "invalid_image"


class ImageTooLarge(GenerationError):
    """The photo has more pixels than allowed (refused from the header, before decoding)."""

    code = "image_too_large"

    def __init__(self, pixels: int, max_pixels: int) -> None:
        self.pixels = pixels
        self.max_pixels = max_pixels
        super().__init__(
            f"the image has {pixels / 1e6:.1f} megapixels; the limit is {max_pixels / 1e6:.1f} megapixels "
            "- downscale it and try again"
        )


class InvalidAudio(GenerationError):
    """The audio is empty, undecodable, has no audio stream, or decodes to no samples."""

    code = "invalid_audio"


class AudioTooLong(GenerationError):
    """The audio is longer than the configured limit."""

    code = "audio_too_long"

    def __init__(self, duration_s: float, max_s: float) -> None:
        self.duration_s = duration_s
        self.max_s = max_s
        super().__init__(
            f"the audio lasts at least {duration_s:.1f} s; the limit is {max_s:.1f} s - trim it and try again"
        )


class InvalidVideo(GenerationError):
    """A video (e.g. one submitted for detection) is corrupt or cannot be decoded."""

    code = "invalid_video"


class VideoTooLong(GenerationError):
    """A video submitted for detection lasts longer than the configured limit (checked from its header)."""

    code = "video_too_long"

    def __init__(self, duration_s: float, max_s: float) -> None:
        self.duration_s = duration_s
        self.max_s = max_s
        super().__init__(f"the video lasts {duration_s:.1f} s; the limit is {max_s:.1f} s - cut it and try again")


class EncodeFailed(GenerationError):
    """Writing the MP4 failed; no partial output file is left behind."""

    code = "encode_failed"


class NoFaceFound(GenerationError):
    """The face mesh found no face in the photo."""

    code = "no_face"

    def __init__(
        self, message: str = "no face was found in the photo - use a clear, frontal photo of one face"
    ) -> None:
        super().__init__(message)
