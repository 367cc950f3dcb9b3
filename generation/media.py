"""Media I/O: photos in, audio in, MP4 out, video frames in (for detection). PyAV only, no ffmpeg binary.

Every reader refuses bad input with a typed error before spending memory on it: image size is checked from the
header, audio length from the container, and decoding stops at the limit anyway (headers can lie).
"""

from __future__ import annotations

import io
import math
import os
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from generation.errors import (
    AudioTooLong,
    EncodeFailed,
    ImageTooLarge,
    InvalidAudio,
    InvalidImage,
    InvalidVideo,
)

__all__ = [
    "AudioTrack",
    "VideoInfo",
    "load_image",
    "load_audio",
    "encode_mp4",
    "iter_video_frames",
    "probe_video",
    "load_frames_for_detection",
    "MediaType",
    "sniff_media_type",
]

AAC_SAMPLE_RATE = 48000


# ------------------------------------------------------------------------------------------------ media types
@dataclass(frozen=True)
class MediaType:
    """What a file's bytes are, by their magic number: MIME type, kind (image/audio/video), usual extension."""

    mime: str
    kind: str
    extension: str


# (offset, signature, type). Order matters only where one signature is a prefix of another (none here).
_SIGNATURES: tuple[tuple[int, bytes, MediaType], ...] = (
    (0, b"\x89PNG\r\n\x1a\n", MediaType("image/png", "image", ".png")),
    (0, b"\xff\xd8\xff", MediaType("image/jpeg", "image", ".jpg")),
    (0, b"GIF87a", MediaType("image/gif", "image", ".gif")),
    (0, b"GIF89a", MediaType("image/gif", "image", ".gif")),
    (0, b"II*\x00", MediaType("image/tiff", "image", ".tif")),
    (0, b"MM\x00*", MediaType("image/tiff", "image", ".tif")),
    (0, b"fLaC", MediaType("audio/flac", "audio", ".flac")),
    (0, b"OggS", MediaType("audio/ogg", "audio", ".ogg")),
    (0, b"ID3", MediaType("audio/mpeg", "audio", ".mp3")),
    (0, b"\x1aE\xdf\xa3", MediaType("video/webm", "video", ".webm")),  # EBML: WebM / Matroska (audio-only too)
)
_RIFF = {b"WAVE": MediaType("audio/wav", "audio", ".wav"), b"WEBP": MediaType("image/webp", "image", ".webp")}
_AIFF = MediaType("audio/aiff", "audio", ".aiff")
_M4A = MediaType("audio/mp4", "audio", ".m4a")
_MOV = MediaType("video/quicktime", "video", ".mov")
_MP4 = MediaType("video/mp4", "video", ".mp4")
_MP3 = MediaType("audio/mpeg", "audio", ".mp3")
_AAC = MediaType("audio/aac", "audio", ".aac")
_BMP = MediaType("image/bmp", "image", ".bmp")


def sniff_media_type(data: bytes | Path) -> MediaType | None:
    """The type of a file from its first bytes (magic numbers); None when no known signature matches.

    The file name is never consulted: an upload called `photo.png` that holds JPEG bytes is a JPEG. Covers the
    photo formats (PNG, JPEG, WebP, GIF, TIFF, BMP) and the audio containers (WAV, FLAC, Ogg, MP3, AAC, AIFF, M4A,
    MP4/MOV, WebM) that `load_image` / `load_audio` decode.
    """
    if isinstance(data, Path):
        try:
            with data.open("rb") as fh:
                head = fh.read(32)
        except OSError:
            return None
    else:
        head = bytes(data[:32])
    for offset, magic, kind in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            return kind
    if head[:4] == b"RIFF" and head[8:12] in _RIFF:
        return _RIFF[head[8:12]]
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return _AIFF
    if head[4:8] == b"ftyp":  # ISO base media: the major brand tells audio-only M4A from video containers
        brand = head[8:12]
        return _M4A if brand in (b"M4A ", b"M4B ", b"M4P ") else _MOV if brand == b"qt  " else _MP4
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # BITMAPFILEHEADER: reserved words are zero
        return _BMP
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync (11 bits)
        layer = (head[1] >> 1) & 0x3
        if layer == 0 and head[1] & 0xF6 == 0xF0:  # ADTS: MPEG-2/4 AAC, layer bits 00
            return _AAC
        if layer != 0 and (head[2] >> 4) not in (0x0, 0xF):  # a valid bitrate index: MP3 without an ID3 tag
            return _MP3
    return None


# ---------------------------------------------------------------------------------------------------- images
def _read_bytes(data: bytes | Path, error: type[InvalidImage] | type[InvalidAudio]) -> bytes:
    if isinstance(data, Path):
        try:
            data = data.read_bytes()
        except OSError as exc:
            raise error(f"cannot read {data}: {exc.strerror}") from exc
    if not data:
        raise error("the file is empty (0 bytes)")
    return data


# Smallest side and most elongated shape of a portrait (`load_image(..., portrait=True)`): a 1x1 or 1x50000 "photo"
# is refused as invalid input before face analysis, which failed on such shapes with an unmapped error.
MIN_PORTRAIT_SIDE = 32
MAX_PORTRAIT_ASPECT = 8
# Shortest audio a video is made for (one video frame at 25 fps lasts 0.04 s; phone recognition needs a few frames).
MIN_AUDIO_SECONDS = 0.2


def load_image(data: bytes | Path, *, max_pixels: int, portrait: bool = False) -> np.ndarray:
    """Decode a photo to RGB, refusing oversized images from the header before any pixel is decoded.

    Args:
        data: encoded image bytes (PNG, JPEG, WebP, ...) or a path to them.
        max_pixels: largest accepted width*height.
        portrait: also refuse shapes no face photo has (a side under MIN_PORTRAIT_SIDE, more elongated than
            MAX_PORTRAIT_ASPECT:1), from the header.
    Returns:
        (H, W, 3) uint8 RGB, EXIF orientation applied, transparency flattened onto white.
    Raises:
        InvalidImage: empty, not an image, or corrupt. ImageTooLarge: more than max_pixels pixels.
    """
    raw = _read_bytes(data, InvalidImage)
    with warnings.catch_warnings():
        # We enforce our own (smaller) limit below; Pillow's bomb warning would otherwise become an error.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(raw))  # lazy: reads the header only
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(_bomb_pixels(exc), max_pixels) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage("the file is not a readable image (PNG, JPEG or WebP expected)") from exc
        width, height = img.size
        if width * height > max_pixels:
            raise ImageTooLarge(width * height, max_pixels)
        if width == 0 or height == 0:
            raise InvalidImage("the image has no pixels")
        if portrait and min(width, height) < MIN_PORTRAIT_SIDE:
            raise InvalidImage(
                f"the image is {width}x{height} pixels; a photo of a face needs at least {MIN_PORTRAIT_SIDE} pixels "
                "on each side"
            )
        if portrait and max(width, height) > MAX_PORTRAIT_ASPECT * min(width, height):
            raise InvalidImage(
                f"the image is {width}x{height} pixels; a portrait is at most {MAX_PORTRAIT_ASPECT}:1 (crop it)"
            )
        try:
            img.load()
            img = ImageOps.exif_transpose(img)
            rgb = _flatten_to_rgb(img)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(_bomb_pixels(exc), max_pixels) from exc
        except (OSError, SyntaxError, ValueError) as exc:
            raise InvalidImage(f"the image is corrupt or truncated: {exc}") from exc
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _bomb_pixels(exc: Exception) -> int:
    digits = [int(tok) for tok in str(exc).replace(",", " ").split() if tok.isdigit()]
    return digits[0] if digits else 0


def _flatten_to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


# ------------------------------------------------------------------------------------------------------ audio
@dataclass(frozen=True)
class AudioTrack:
    """Mono audio in memory: float32 samples in [-1, 1] at ``sample_rate`` Hz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)

    def head(self, seconds: float) -> AudioTrack:
        """The first ``seconds`` of the track (for previews and tests)."""
        return AudioTrack(self.samples[: int(round(seconds * self.sample_rate))], self.sample_rate)


def _container_duration_s(container: av.container.InputContainer, stream: av.stream.Stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000.0
    return None


def load_audio(
    data: bytes | Path, *, sample_rate: int = 16000, max_seconds: float | None = None
) -> AudioTrack:
    """Decode any common audio file (wav/mp3/ogg/flac/m4a, or a video's audio) to mono float32.

    Args:
        data: encoded audio bytes or a path.
        sample_rate: output rate in Hz (resampled by FFmpeg's swresample).
        max_seconds: refuse longer audio; checked from the container header first, then while decoding.
    Raises:
        InvalidAudio: zero bytes, undecodable, no audio stream, or no samples. AudioTooLong: over max_seconds.
    """
    raw = _read_bytes(data, InvalidAudio)
    try:
        container = av.open(io.BytesIO(raw), mode="r")
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidAudio("the audio file cannot be decoded (wav, mp3, ogg, flac or m4a expected)") from exc
    with container:
        if not container.streams.audio:
            raise InvalidAudio("the file has no audio stream")
        stream = container.streams.audio[0]
        declared = _container_duration_s(container, stream)
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise AudioTooLong(declared, max_seconds)
        limit = None if max_seconds is None else int(math.ceil(max_seconds * sample_rate))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().reshape(-1)  # (1, n) packed mono -> (n,)
                    chunks.append(chunk)
                    total += len(chunk)
                if limit is not None and total > limit:
                    raise AudioTooLong(total / sample_rate, float(max_seconds or 0.0))
            for out in resampler.resample(None):
                chunk = out.to_ndarray().reshape(-1)
                chunks.append(chunk)
                total += len(chunk)
        except av.FFmpegError as exc:
            raise InvalidAudio(f"the audio stream is corrupt: {exc}") from exc
    if total == 0:
        raise InvalidAudio("the audio decodes to no samples")
    if limit is not None and total > limit:
        raise AudioTooLong(total / sample_rate, float(max_seconds or 0.0))
    samples = np.concatenate(chunks).astype(np.float32, copy=False)
    if not np.all(np.isfinite(samples)):  # before clipping: clip() would turn +-inf into a plausible +-1.0
        raise InvalidAudio("the audio contains invalid (NaN/inf) samples")
    if len(samples) < MIN_AUDIO_SECONDS * sample_rate:
        raise InvalidAudio(
            f"the audio lasts {len(samples) / sample_rate:.3f} s; at least {MIN_AUDIO_SECONDS} s of speech is needed"
        )
    samples = np.clip(samples, -1.0, 1.0)
    return AudioTrack(samples=samples, sample_rate=sample_rate)


# ------------------------------------------------------------------------------------------------------ video
def frame_count(duration_s: float, fps: int) -> int:
    """Frames needed to cover ``duration_s`` at ``fps``: ceil, with a tolerance for float noise."""
    return max(1, int(math.ceil(duration_s * fps - 1e-6)))


def encode_mp4(
    frames: Iterable[np.ndarray],
    audio: AudioTrack,
    out_path: Path,
    *,
    fps: int = 25,
    crf: int = 18,
    preset: str = "veryfast",
    on_frame: Callable[[int], None] | None = None,
) -> Path:
    """Encode frames + audio to an MP4 that plays everywhere: H.264 yuv420p + AAC 48 kHz, +faststart.

    Frames are consumed one at a time (bounded memory) and interleaved with the audio. The audio is padded
    with
    silence to exactly ``frame_count(audio.duration_s, fps) / fps`` so both streams last the same. The file is
    written beside ``out_path`` under a temporary name and renamed atomically; on any error the temporary file
    is removed, so a partial output never exists.

    Args:
        frames: (H, W, 3) uint8 RGB frames, H and W even; exactly frame_count(audio.duration_s, fps) of them.
        audio: the sound track.
        out_path: destination .mp4.
        fps: frame rate. crf: x264 quality (lower = better). preset: x264 speed preset.
        on_frame: called with the 0-based index after each frame is encoded (progress bars).
    Returns:
        out_path.
    Raises:
        EncodeFailed: wrong frame count/shape or an encoder error.
    """
    out_path = Path(out_path)
    n_frames = frame_count(audio.duration_s, fps)
    tmp_path = out_path.parent / f".{out_path.name}.{uuid.uuid4().hex[:8]}.part"
    try:
        _encode(
            frames, audio, tmp_path, n_frames=n_frames, fps=fps, crf=crf, preset=preset, on_frame=on_frame
        )
        os.replace(tmp_path, out_path)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if isinstance(exc, av.FFmpegError | OSError):
            raise EncodeFailed(f"writing the MP4 failed: {exc}") from exc
        raise
    return out_path


def _encode(
    frames: Iterable[np.ndarray],
    audio: AudioTrack,
    path: Path,
    *,
    n_frames: int,
    fps: int,
    crf: int,
    preset: str,
    on_frame: Callable[[int], None] | None,
) -> None:
    # Pad the audio to the video's exact length, then resample to the AAC rate once (tiny compared to video).
    pad = int(round(n_frames / fps * audio.sample_rate)) - len(audio.samples)
    samples = np.pad(audio.samples, (0, max(pad, 0)))[: int(round(n_frames / fps * audio.sample_rate))]
    pcm = _resample(samples.astype(np.float32), audio.sample_rate, AAC_SAMPLE_RATE)
    samples_per_frame = AAC_SAMPLE_RATE / fps

    frame_iter = iter(frames)
    first = next(frame_iter, None)
    if first is None:
        raise EncodeFailed("no frames to encode")
    height, width = _check_frame(first, None)

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        vstream = container.add_stream("libx264", rate=fps, options={"crf": str(crf), "preset": preset})
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        astream = container.add_stream("aac", rate=AAC_SAMPLE_RATE)
        astream.layout = "mono"
        astream.bit_rate = 128_000
        audio_pos = 0
        index = 0
        frame: np.ndarray | None = first
        while frame is not None:
            if index >= n_frames:
                raise EncodeFailed(f"more frames than the audio needs ({n_frames} expected)")
            _check_frame(frame, (height, width))
            # RGB -> yuv420p by OpenCV (BT.601, video range, as swscale's default): about 1 ms at 1920x1080 where
            # PyAV's swscale conversion takes 10, the single largest cost of a 1080p frame after x264 itself.
            i420 = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2YUV_I420)  # (H * 3 / 2, W)
            video_frame = av.VideoFrame.from_ndarray(i420, format="yuv420p")
            video_frame.pts = index
            video_frame.time_base = Fraction(1, fps)
            container.mux(vstream.encode(video_frame))
            # Interleave: write the audio that belongs up to the end of this frame.
            audio_end = min(len(pcm), int(round((index + 1) * samples_per_frame)))
            audio_pos = _mux_audio(container, astream, pcm, audio_pos, audio_end)
            if on_frame is not None:
                on_frame(index)
            index += 1
            frame = next(frame_iter, None)
        if index != n_frames:
            raise EncodeFailed(f"got {index} frames, the audio needs {n_frames}")
        _mux_audio(container, astream, pcm, audio_pos, len(pcm))
        container.mux(vstream.encode(None))
        container.mux(astream.encode(None))


def _mux_audio(
    container: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    pcm: np.ndarray,
    start: int,
    end: int,
) -> int:
    if end <= start:
        return start
    chunk = av.AudioFrame.from_ndarray(pcm[None, start:end], format="fltp", layout="mono")  # (1, n) planar
    chunk.sample_rate = AAC_SAMPLE_RATE
    chunk.pts = start
    chunk.time_base = Fraction(1, AAC_SAMPLE_RATE)
    container.mux(stream.encode(chunk))
    return end


def _resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    if rate_in == rate_out:
        return samples
    from scipy.signal import resample_poly

    g = math.gcd(rate_in, rate_out)
    return resample_poly(samples, rate_out // g, rate_in // g).astype(np.float32)


def _check_frame(frame: np.ndarray, shape: tuple[int, int] | None) -> tuple[int, int]:
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise EncodeFailed(f"frames must be (H, W, 3) uint8 RGB, got {frame.shape} {frame.dtype}")
    height, width = frame.shape[:2]
    if height % 2 or width % 2:
        raise EncodeFailed(f"yuv420p needs even frame sizes, got {width}x{height}")
    if shape is not None and (height, width) != shape:
        raise EncodeFailed(f"frame size changed from {shape[1]}x{shape[0]} to {width}x{height}")
    return height, width


@dataclass(frozen=True)
class VideoInfo:
    """What a video file declares: size, rate, length and codecs (audio fields None without audio)."""

    width: int
    height: int
    fps: float
    frames: int
    duration_s: float
    video_codec: str
    audio_codec: str | None
    audio_duration_s: float | None
    pix_fmt: str | None = None


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        if Path(path).stat().st_size == 0:
            raise InvalidVideo("the video file is empty (0 bytes)")
        container = av.open(str(path), mode="r")
    except OSError as exc:
        raise InvalidVideo(f"cannot read the video: {exc}") from exc
    except (av.FFmpegError, ValueError, UnicodeDecodeError) as exc:
        raise InvalidVideo("the file is not a decodable video") from exc
    if not container.streams.video:
        container.close()
        raise InvalidVideo("the file has no video stream")
    return container


def probe_video(path: Path) -> VideoInfo:
    """Read a video's header (no full decode). Raises InvalidVideo when it cannot be parsed."""
    with _open_video(path) as container:
        v = container.streams.video[0]
        fps = float(v.average_rate or v.guessed_rate or 0.0)
        duration = _container_duration_s(container, v) or 0.0
        frames = v.frames or int(round(duration * fps))
        audio_codec = audio_duration = None
        if container.streams.audio:
            a = container.streams.audio[0]
            audio_codec = a.codec_context.name
            audio_duration = _container_duration_s(container, a)
        return VideoInfo(
            width=v.codec_context.width,
            height=v.codec_context.height,
            fps=fps,
            frames=frames,
            duration_s=duration,
            video_codec=v.codec_context.name,
            audio_codec=audio_codec,
            audio_duration_s=audio_duration,
            pix_fmt=v.codec_context.pix_fmt,
        )


def iter_video_frames(path: Path, *, max_frames: int | None = None, every: int = 1) -> Iterator[np.ndarray]:
    """Yield decoded frames as (H, W, 3) uint8 RGB: every ``every``-th frame, at most ``max_frames`` of them.

    Raises InvalidVideo (at the first ``next``) for corrupt or undecodable input, or when no frame decodes.
    """
    if every < 1:
        raise ValueError("every must be >= 1")
    container = _open_video(path)
    yielded = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if max_frames is not None and yielded >= max_frames:
                break
            if index % every:
                continue
            yield frame.to_ndarray(format="rgb24")
            yielded += 1
    except av.FFmpegError as exc:
        raise InvalidVideo(f"the video is corrupt: {exc}") from exc
    finally:
        container.close()
    if yielded == 0 and max_frames != 0:
        raise InvalidVideo("no frame of the video could be decoded")


def load_frames_for_detection(
    path: Path, max_frames: int, *, max_pixels: int = 50_000_000
) -> list[np.ndarray]:
    """Frames to run detectors on: the image itself for a still photo, else up to ``max_frames`` video frames.

    Videos are sampled evenly over their length when the header says how many frames there are.
    Raises InvalidImage/ImageTooLarge for a bad still, InvalidVideo for a bad video.
    """
    path = Path(path)
    if is_still_image(path):
        return [load_image(path, max_pixels=max_pixels)]
    info = probe_video(path)
    every = max(1, info.frames // max_frames) if info.frames and max_frames > 0 else 1
    return list(iter_video_frames(path, max_frames=max_frames, every=every))


def is_still_image(path: Path) -> bool:
    """True when Pillow recognises the file as a still image (detection treats it as one frame)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return img.format is not None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
