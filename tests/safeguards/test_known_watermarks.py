"""Known open watermarks: marked with invisible-watermark's own encoder -> found by name; real media -> not found."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from imwatermark import WatermarkDecoder, WatermarkEncoder
from PIL import Image

from safeguards.known_watermarks import KNOWN_WATERMARKS, KnownWatermarkResult, check_known_watermarks

SDXL_BITS = [int(b) for b in bin(0b101100111110110010010000011110111011000110011110)[2:]]


@pytest.fixture(scope="module")
def photo(example_photo: Path) -> np.ndarray:
    return np.asarray(Image.open(example_photo).convert("RGB"))


def _reference_script_mark(rgb: np.ndarray, kind: str, content: object) -> np.ndarray:
    """As the SD reference scripts do: RGB -> BGR, encode dwtDct, back to RGB."""
    encoder = WatermarkEncoder()
    encoder.set_watermark(kind, content)
    bgr = encoder.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _by_name(frames: list[np.ndarray]) -> dict[str, KnownWatermarkResult]:
    return {r.name: r for r in check_known_watermarks(frames)}


def test_messages_are_the_published_constants() -> None:
    marks = {m.name: m for m in KNOWN_WATERMARKS}
    assert len(marks["stable-diffusion-v1"].bits) == 136
    assert np.packbits(marks["stable-diffusion-v1"].bits).tobytes() == b"StableDiffusionV1"
    assert np.packbits(marks["stable-diffusion-v2"].bits).tobytes() == b"SDV2"
    assert list(marks["sdxl"].bits) == SDXL_BITS and len(SDXL_BITS) == 48
    assert int("".join(map(str, SDXL_BITS)), 2) == 0xB3EC907BB19E


@pytest.mark.parametrize(
    ("name", "kind", "content"),
    [
        ("stable-diffusion-v1", "bytes", b"StableDiffusionV1"),
        ("stable-diffusion-v2", "bytes", b"SDV2"),
        ("sdxl", "bits", SDXL_BITS),
    ],  # fmt: skip
)
def test_each_mark_is_found_by_name_and_only_that_one(photo: np.ndarray, name: str, kind: str, content: object) -> None:
    marked = _reference_script_mark(photo, kind, content)
    # The package's own decoder agrees that the mark is there (so the fixture is what the scripts write).
    decoder = WatermarkDecoder(kind, len(content) * (8 if kind == "bytes" else 1))  # type: ignore[arg-type]
    decoded = decoder.decode(np.ascontiguousarray(marked[:, :, ::-1]), "dwtDct")
    assert (decoded == content) if kind == "bytes" else list(map(int, decoded)) == content
    results = _by_name([marked])
    hit = results[name]
    assert hit.found and hit.bit_agreement == 1.0 and hit.confidence > 0.999999
    assert hit.path == "reference-bgr-uint8" and hit.frames_checked == 1
    assert [n for n, r in results.items() if r.found] == [name]
    # Negative control: the same photo unmarked.
    assert not any(r.found for r in check_known_watermarks([photo]))


def test_diffusers_sdxl_path_rgb_floats(photo: np.ndarray) -> None:
    """diffusers hands RGB floats to the encoder: the mark lands elsewhere, and is still read."""
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", SDXL_BITS)
    marked = np.clip(np.rint(encoder.encode(photo.astype(np.float32), "dwtDct")), 0, 255).astype(np.uint8)
    hit = _by_name([marked])["sdxl"]
    assert hit.found and hit.path == "diffusers-rgb-float"


def test_video_votes_add_up_and_small_frames_are_skipped(photo: np.ndarray) -> None:
    marked = _reference_script_mark(photo, "bits", SDXL_BITS)
    rng = np.random.default_rng(0)
    noisy = [np.clip(marked + rng.normal(0, 3, marked.shape), 0, 255).astype(np.uint8) for _ in range(6)]
    assert _by_name(noisy)["sdxl"].found
    tiny = _by_name([np.zeros((100, 100, 3), np.uint8)])
    assert all(not r.found and r.frames_checked == 0 for r in tiny.values())


@pytest.mark.slow
@pytest.mark.shared_media
def test_real_media_carries_no_known_mark(shared_media: Path) -> None:
    """Every shared image, and 8 frames of every real video, read as no known mark."""
    images = sorted(p for p in shared_media.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    assert images
    for path in images:
        with Image.open(path) as image:
            found = [r.name for r in check_known_watermarks([np.asarray(image.convert("RGB"))]) if r.found]
        assert not found, (path.name, found)
    videos = sorted((shared_media / "videos_real").glob("*.mp4")) + sorted((shared_media / "videos").glob("*.mp4"))
    assert videos
    for path in videos:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(8), container.decode(video=0), strict=False)]
        found = [r.name for r in check_known_watermarks(frames) if r.found]
        assert not found, (path.name, found)
