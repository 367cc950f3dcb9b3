"""Watermark: payload format, round trips with negative controls, imwatermark compatibility, H.264."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from safeguards.errors import InvalidFrame, InvalidWatermarkPayload
from safeguards.watermark import (
    DEFAULT_STRENGTH,
    WatermarkDetector,
    Watermarker,
    WatermarkPayload,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


@pytest.fixture(scope="module")
def photo(example_photo: Path) -> np.ndarray:
    return np.asarray(Image.open(example_photo).convert("RGB"))


def _clip(photo: np.ndarray, n: int = 50, seed: int = 0) -> Iterator[np.ndarray]:
    """A 2 s, 25 fps 'video' of the photo with small motion, flicker and sensor noise per frame."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        dx, dy = round(3 * np.sin(i / 7)), round(2 * np.cos(i / 5))
        frame = np.roll(photo, (dy, dx), axis=(0, 1)).astype(np.float32) * (1 + 0.02 * np.sin(i / 4))
        frame += rng.normal(0, 1.5, frame.shape)
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _h264_roundtrip(frames: list[np.ndarray], *, crf: int) -> list[np.ndarray]:
    """Encode with libx264 (yuv420p) into an in-memory MP4 and decode it back to RGB frames."""
    buf = io.BytesIO()
    height, width = frames[0].shape[:2]
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255**2 / mse)


# --- payload --------------------------------------------------------------------------------------


def test_payload_bits_roundtrip_and_key_check() -> None:
    payload = WatermarkPayload.for_generation(KEY, 0xDEADBEEF)
    bits = payload.to_bits()
    assert bits.shape == (64,) and set(np.unique(bits)) <= {0, 1}
    assert payload.to_hex().startswith("deadbeef") and len(payload.to_hex()) == 16
    assert WatermarkPayload.from_hex(payload.to_hex()) == payload
    back = WatermarkPayload.from_bits(bits)
    assert back == payload
    assert back.is_valid(KEY)
    assert not back.is_valid(OTHER_KEY)
    # A single flipped check bit (or tag bit) breaks validity.
    for i in (0, 31, 32, 63):
        flipped = bits.copy()
        flipped[i] ^= 1
        assert not WatermarkPayload.from_bits(flipped).is_valid(KEY)


def test_payload_check_is_keyed_and_domain_separated() -> None:
    import hashlib
    import hmac

    expected = hmac.new(KEY, b"provatar-wm-v1" + (7).to_bytes(4, "big"), hashlib.sha256).digest()[:4]
    assert WatermarkPayload.for_generation(KEY, 7).check == expected


@pytest.mark.parametrize("tag", [-1, 2**32])
def test_payload_rejects_out_of_range_tag(tag: int) -> None:
    with pytest.raises(InvalidWatermarkPayload) as info:
        WatermarkPayload.for_generation(KEY, tag)
    assert info.value.code == "invalid_watermark_payload"


def test_payload_rejects_short_key_and_wrong_bit_count() -> None:
    with pytest.raises(InvalidWatermarkPayload):
        WatermarkPayload.for_generation(b"short", 1)
    with pytest.raises(InvalidWatermarkPayload):
        WatermarkPayload.from_bits(np.zeros(63, dtype=np.uint8))
    with pytest.raises(InvalidWatermarkPayload):
        WatermarkDetector(b"short")
    for text in ("zz", "00" * 7):
        with pytest.raises(InvalidWatermarkPayload):
            WatermarkPayload.from_hex(text)


def test_new_tag_is_random_32_bit() -> None:
    tags = {WatermarkPayload.new_tag() for _ in range(64)}
    assert len(tags) > 60 and all(0 <= t < 2**32 for t in tags)


# --- embed / detect -------------------------------------------------------------------------------


def test_embed_is_invisible_and_detected(photo: np.ndarray) -> None:
    payload = WatermarkPayload.for_generation(KEY, 123456789)
    marked = Watermarker(payload).embed(photo)
    assert marked.shape == photo.shape and marked.dtype == np.uint8
    assert not np.shares_memory(marked, photo)
    assert _psnr(photo, marked) > 35.0
    result = WatermarkDetector(KEY).detect([marked])
    assert result.found and result.tag == 123456789 and result.payload == payload
    assert result.frames_decoded == 1 and result.frames_agreeing == 1.0
    assert result.confidence > 0.9


def test_unmarked_and_wrong_key_are_not_found(photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    noise = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(8)]
    flat = [np.full((480, 640, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    detector = WatermarkDetector(KEY)
    for frames in ([photo], noise, flat, list(_clip(photo, n=10))):
        result = detector.detect(frames)
        assert not result.found and result.tag is None and result.confidence == 0.0
    marked = Watermarker(WatermarkPayload.for_generation(KEY, 99)).embed(photo)
    assert not WatermarkDetector(OTHER_KEY).detect([marked]).found


def test_detect_skips_unusable_frames_and_honours_max_frames(photo: np.ndarray) -> None:
    marked = Watermarker(WatermarkPayload.for_generation(KEY, 5)).embed(photo)
    tiny = np.zeros((100, 100, 3), dtype=np.uint8)
    result = WatermarkDetector(KEY).detect([tiny, marked, marked, marked], max_frames=3)
    assert result.found and result.frames_decoded == 2 and result.frames_skipped == 1
    empty = WatermarkDetector(KEY).detect([tiny])
    assert not empty.found and empty.frames_decoded == 0


def test_embed_rejects_bad_frames() -> None:
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 1))
    for bad in (np.zeros((128, 128, 3), np.uint8), np.zeros((512, 512), np.uint8), np.zeros((512, 512, 3))):
        with pytest.raises(InvalidFrame) as info:
            marker.embed(bad)
        assert info.value.code == "invalid_frame"
    with pytest.raises(InvalidWatermarkPayload):
        Watermarker(WatermarkPayload.for_generation(KEY, 1), strength=1.0)


def test_embed_many_is_lazy(photo: np.ndarray) -> None:
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 2))
    consumed: list[int] = []

    def source() -> Iterator[np.ndarray]:
        for i in range(3):
            consumed.append(i)
            yield photo

    out = marker.embed_many(source())
    assert consumed == []
    first = next(out)
    assert consumed == [0] and first.shape == photo.shape


# --- compatibility with invisible-watermark's own transform ----------------------------------------


def test_compatible_with_imwatermark_both_ways(photo: np.ndarray) -> None:
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    strength = int(DEFAULT_STRENGTH)
    payload = WatermarkPayload.for_generation(KEY, 0xCAFE0001)
    bits = payload.to_bits()
    bgr = np.ascontiguousarray(photo[:, :, ::-1])

    # ours -> packaged decoder
    ours = Watermarker(payload).embed(photo)
    decoder = WatermarkDecoder("bits", 64)
    decoded = decoder.decode(np.ascontiguousarray(ours[:, :, ::-1]), "dwtDctSvd", scales=[0, strength, 0])
    assert np.array_equal(np.asarray(decoded, dtype=np.uint8), bits)

    # packaged encoder -> ours
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", bits.tolist())
    theirs = encoder.encode(bgr, "dwtDctSvd", scales=[0, strength, 0])
    result = WatermarkDetector(KEY).detect([np.ascontiguousarray(theirs[:, :, ::-1])])
    assert result.found and result.tag == 0xCAFE0001

    # Our per-frame hard bits equal the packaged decoder's on unmarked content too.
    detector = WatermarkDetector(KEY)
    for image in (bgr, np.random.default_rng(3).integers(0, 256, (300, 404, 3), dtype=np.uint8)):
        packaged = np.asarray(decoder.decode(image, "dwtDctSvd", scales=[0, strength, 0]), dtype=bool)
        ours_bits = detector.soft_bits(np.ascontiguousarray(image[:, :, ::-1])) * 255 > 127
        assert np.array_equal(packaged, ours_bits)


# --- robustness -----------------------------------------------------------------------------------


@pytest.mark.parametrize("tag", [1, 0xDEADBEEF])
def test_survives_h264_crf28(photo: np.ndarray, tag: int) -> None:
    payload = WatermarkPayload.for_generation(KEY, tag)
    marker = Watermarker(payload)
    source = list(_clip(photo, seed=tag % 97))
    decoded = _h264_roundtrip([marker.embed(f) for f in source], crf=28)
    assert len(decoded) == 50
    result = WatermarkDetector(KEY).detect(decoded)
    assert result.found and result.tag == tag
    assert result.frames_decoded == 50
    # Negative control: the same clip without the mark, through the same encoder.
    assert not WatermarkDetector(KEY).detect(_h264_roundtrip(source, crf=28)).found


@pytest.mark.shared_media
def test_real_videos_never_decode_to_a_valid_payload(shared_media: Path) -> None:
    videos = sorted((shared_media / "videos").glob("*.mp4"))
    assert videos
    detector = WatermarkDetector(KEY)
    for path in videos:
        with av.open(str(path)) as container:
            frames = [
                f.to_ndarray(format="rgb24")
                for _, f in zip(range(60), container.decode(video=0), strict=False)
            ]
        result = detector.detect(frames)
        assert not result.found, path.name
        assert result.frames_decoded + result.frames_skipped == len(frames)
