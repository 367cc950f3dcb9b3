"""Media I/O: decoding every audio format, refusing bad input, and MP4 output that plays everywhere."""

from __future__ import annotations

import io
import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from generation import (
    AudioTooLong,
    AudioTrack,
    EncodeFailed,
    ImageTooLarge,
    InvalidAudio,
    InvalidImage,
    InvalidVideo,
    encode_mp4,
    iter_video_frames,
    load_audio,
    load_frames_for_detection,
    load_image,
    probe_video,
)


def _tone(seconds: float, rate: int = 22050) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _write_audio(path: Path, fmt: str, codec: str, samples: np.ndarray, rate: int) -> None:
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.layout = "mono"
        sample_fmt = stream.codec_context.codec.audio_formats[0].name
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format=sample_fmt, layout="mono", rate=rate)
        pts = 0
        for chunk in resampler.resample(frame):
            chunk.pts = pts
            chunk.time_base = Fraction(1, rate)
            pts += chunk.samples
            out.mux(stream.encode(chunk))
        out.mux(stream.encode(None))


@pytest.mark.parametrize(
    ("suffix", "fmt", "codec"),
    [("wav", "wav", "pcm_s16le"), ("flac", "flac", "flac"), ("ogg", "ogg", "libopus"),
     ("mp3", "mp3", "libmp3lame"), ("m4a", "ipod", "aac")],
)  # fmt: skip
def test_load_audio_decodes_common_formats(tmp_path: Path, suffix: str, fmt: str, codec: str) -> None:
    rate = {"libmp3lame": 44100, "libopus": 48000}.get(codec, 22050)
    path = tmp_path / f"tone.{suffix}"
    _write_audio(path, fmt, codec, _tone(1.0, rate), rate)
    track = load_audio(path, sample_rate=16000)
    assert track.sample_rate == 16000
    assert track.samples.dtype == np.float32 and track.samples.ndim == 1
    assert abs(track.duration_s - 1.0) < 0.1  # encoder padding/priming only
    assert 0.15 < float(np.sqrt(np.mean(track.samples**2))) < 0.3  # the 0.3-amplitude tone survived
    assert np.all(np.abs(track.samples) <= 1.0)


def test_load_audio_refuses_zero_bytes_and_garbage() -> None:
    with pytest.raises(InvalidAudio) as err:
        load_audio(b"")
    assert err.value.code == "invalid_audio"
    with pytest.raises(InvalidAudio):
        load_audio(b"this is not audio at all" * 100)


def test_load_audio_refuses_video_without_audio(tmp_path: Path) -> None:
    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(InvalidAudio, match="no audio stream"):
        load_audio(path)


def _flac_claiming(seconds: float, tmp_path: Path) -> bytes:
    """A real 1 s FLAC whose STREAMINFO header declares ``seconds`` of audio (a lying header)."""
    path = tmp_path / "short.flac"
    _write_audio(path, "flac", "flac", _tone(1.0, 16000), 16000)
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    # STREAMINFO starts at byte 8; bytes 10..17 of it pack rate(20) channels(3) bits(5) total_samples(36).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | int(seconds * 16000)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def test_one_hour_audio_refused_from_header_before_decoding(tmp_path: Path) -> None:
    fake_hour = _flac_claiming(3600.0, tmp_path)
    with pytest.raises(AudioTooLong) as err:
        load_audio(fake_hour, max_seconds=60.0)
    assert err.value.code == "audio_too_long"
    assert err.value.duration_s >= 3599 and err.value.max_s == 60.0
    assert load_audio(fake_hour).duration_s < 1.5  # only the header lied: the check used it, not a decode


def test_audio_over_limit_refused(tmp_path: Path) -> None:
    path = tmp_path / "long.flac"
    _write_audio(path, "flac", "flac", _tone(3.0), 22050)
    with pytest.raises(AudioTooLong):
        load_audio(path, max_seconds=2.0)
    assert load_audio(path, max_seconds=4.0).duration_s == pytest.approx(3.0, abs=0.05)


def _png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_load_image_rgb_and_exif_orientation() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    rgb = load_image(buf.getvalue(), max_pixels=10_000)
    assert rgb.shape == (40, 20, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].mean() > 200


def test_load_image_flattens_transparency_onto_white() -> None:
    rgb = load_image(_png((8, 8), "RGBA"), max_pixels=100)
    assert rgb.shape == (8, 8, 3) and int(rgb.min()) == 255


def test_load_image_refuses_garbage_and_empty() -> None:
    for bad in (b"", b"GIF89a-truncated", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50):
        with pytest.raises(InvalidImage) as err:
            load_image(bad, max_pixels=10_000)
        assert err.value.code == "invalid_image"


def test_hundred_megapixel_image_refused_from_header() -> None:
    huge = _png((10_000, 10_000), "1")  # 100 MP, but a small file: refused before decoding
    with pytest.raises(ImageTooLarge) as err:
        load_image(huge, max_pixels=40_000_000)
    assert err.value.code == "image_too_large" and err.value.pixels == 100_000_000


def _frames(n: int, size: int = 64) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def test_encode_mp4_h264_aac_duration_matches(tmp_path: Path) -> None:
    audio = AudioTrack(_tone(1.23, 16000), 16000)
    n = math.ceil(1.23 * 25)
    seen: list[int] = []
    out = encode_mp4(_frames(n), audio, tmp_path / "out.mp4", fps=25, on_frame=seen.append)
    info = probe_video(out)
    assert (info.video_codec, info.audio_codec, info.pix_fmt) == ("h264", "aac", "yuv420p")
    assert info.frames == n and seen == list(range(n))
    assert info.duration_s == pytest.approx(n / 25, abs=0.03)
    assert info.audio_duration_s == pytest.approx(n / 25, abs=0.03)
    assert out.read_bytes()[:64].find(b"ftyp") >= 0
    assert out.read_bytes().find(b"moov") < out.read_bytes().find(b"mdat")  # +faststart
    assert len(list(iter_video_frames(out, every=2))) == math.ceil(n / 2)
    assert [f.shape for f in load_frames_for_detection(out, 4)] == [(64, 64, 3)] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]


def test_encode_mp4_leaves_nothing_on_failure(tmp_path: Path) -> None:
    audio = AudioTrack(_tone(1.0, 16000), 16000)

    def broken() -> object:
        yield from _frames(5)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError):
        encode_mp4(broken(), audio, tmp_path / "out.mp4")  # type: ignore[arg-type]
    with pytest.raises(EncodeFailed, match="got 3 frames"):
        encode_mp4(_frames(3), audio, tmp_path / "out.mp4")
    with pytest.raises(EncodeFailed, match="even"):
        encode_mp4(_frames(25, size=63), audio, tmp_path / "out.mp4")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_video_is_invalid(tmp_path: Path) -> None:
    good = encode_mp4(_frames(25), AudioTrack(_tone(1.0, 16000), 16000), tmp_path / "good.mp4")
    data = bytearray(good.read_bytes())
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(data[: len(data) // 3]) + b"\x00" * 10)  # moov at the front, mdat cut
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video" * 1000)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path in (garbage, empty):
        with pytest.raises(InvalidVideo) as err:
            probe_video(path)
        assert err.value.code == "invalid_video"
        with pytest.raises(InvalidVideo):
            list(iter_video_frames(path))
    decoded = list(iter_video_frames(corrupt))  # truncated: decodes what is there, never crashes
    assert len(decoded) < 25


def test_still_image_accepted_for_detection(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    Image.new("RGB", (32, 24), (1, 2, 3)).save(path)
    frames = load_frames_for_detection(path, max_frames=10)
    assert len(frames) == 1 and frames[0].shape == (24, 32, 3)
