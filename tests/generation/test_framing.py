"""Full-frame output: sizes, validation, the composite (still outside the head window, seamless at the crop's
edge, no tearing as the head moves) and the window-only watermark being exactly the whole-frame one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from generation import GenerationConfig, TalkingFaceGenerator, load_audio, load_image
from generation.controls import InvalidControls
from generation.framing import Framing, FullFrameScene, full_frame_size, still_frame
from safeguards.watermark import Watermarker, WatermarkPayload


def widened(photo: np.ndarray, width: int, height: int) -> np.ndarray:
    """The example photo padded to width:height with its own edge colours (blurred: no second face) and resized."""
    h, w = photo.shape[:2]
    pad = max(0, int(round(h * width / height)) - w)
    left = pad // 2
    padded = cv2.copyMakeBorder(photo, 0, 0, left, pad - left, cv2.BORDER_REPLICATE)
    blurred = cv2.blur(padded, (61, 61))
    padded[:, :left] = blurred[:, :left]
    padded[:, left + w :] = blurred[:, left + w :]
    return cv2.resize(padded, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize(
    ("photo", "frame"),
    [
        ((1280, 853), (1280, 852)),  # fits: only the odd row goes
        ((4000, 3000), (1440, 1080)),  # landscape: the short side limits
        ((3000, 4000), (1080, 1440)),  # portrait: fits 1080x1920
        ((1920, 1080), (1920, 1080)),
        ((3840, 2160), (1920, 1080)),
        ((4000, 1000), (1920, 480)),  # panorama: the long side limits
        ((200, 150), (340, 256)),  # small: enlarged to a 256-pixel short side (the watermark's minimum)
        ((301, 2400), (240, 1920)),  # elongated and small: the long limit wins
    ],
)
def test_full_frame_size(photo: tuple[int, int], frame: tuple[int, int]) -> None:
    assert full_frame_size(*photo) == frame


def test_still_frame_keeps_pixels_when_it_fits() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (853, 1280, 3), dtype=np.uint8)
    still = still_frame(photo)
    assert still.shape == (852, 1280, 3) and np.array_equal(still, photo[:852])
    assert still_frame(rng.integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).shape == (1080, 1440, 3)


@pytest.mark.parametrize(
    ("mode", "size", "field"),
    [("wide", None, "framing"), (3, None, "framing"), (None, 513, "size"), (None, 126, "size"),
     (None, 1026, "size"), (None, "big", "size"), (None, 512.5, "size"), ("full", True, "size")],
)  # fmt: skip
def test_framing_refuses_bad_values_naming_the_field(mode: object, size: object, field: str) -> None:
    with pytest.raises(InvalidControls) as err:
        Framing.from_values(mode, size)
    assert err.value.field == field and err.value.code == "invalid_controls"


def test_framing_accepts_form_strings_and_defaults() -> None:
    assert Framing.from_values(None, None) == Framing("crop", 512)
    assert Framing.from_values(" FULL ", "768") == Framing("full", 768)
    assert Framing.from_values("", "", default_size=256) == Framing("crop", 256)
    assert Framing.from_values(**{"mode": "full", "size": 384}).to_params() == {"mode": "full", "size": 384}


def _scene(rng: np.random.Generator) -> FullFrameScene:
    still = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    return FullFrameScene(still, (701.3, 250.7, 610.2), 512)


def test_composite_changes_only_the_aligned_window_and_pastes_the_crop_inside() -> None:
    rng = np.random.default_rng(1)
    scene = _scene(rng)
    y0, y1, x0, x1 = scene.window
    assert y0 % 16 == 0 and x0 % 16 == 0 and y1 % 16 == 0 and x1 % 16 == 0
    assert y0 <= 250.7 and x0 <= 701.3 and y1 >= 250.7 + 610.2 and x1 >= 701.3 + 610.2
    crop = np.full((512, 512, 3), 77, np.uint8)
    frame = scene.compose(crop)
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], scene.still[outside])
    # Inside the feather band the crop is pasted as rendered; at the crop's edge the still shows through.
    assert np.all(frame[400:700, 850:1150] == 77)
    assert not np.all(frame[int(250.7) + 1, 850:1150] == 77)
    # A negative control: a crop of the wrong size is refused, not stretched.
    with pytest.raises(ValueError):
        scene.compose(np.zeros((256, 256, 3), np.uint8))


def test_the_blend_band_runs_along_every_crop_edge_inside_the_picture_only() -> None:
    still = np.zeros((480, 640, 3), np.uint8)
    crop = np.full((128, 128, 3), 200, np.uint8)
    # Left edge on the 16-pixel grid inside the picture: blended there (the still shows at the very edge).
    inside = FullFrameScene(still, (16.0, 32.0, 128.0), 128).compose(crop)
    assert inside[90, 16, 0] < 20 and inside[90, 80, 0] == 200 and inside[90, 143, 0] < 20
    # The same crop against the picture's left border: no band there (nothing beyond it to blend with).
    at_border = FullFrameScene(still, (0.0, 32.0, 128.0), 128).compose(crop)
    assert at_border[90, 0, 0] == 200 and at_border[90, 127, 0] < 20


def test_a_crop_reduced_at_the_paste_is_area_averaged_not_aliased() -> None:
    still = np.zeros((480, 640, 3), np.uint8)
    checker = (np.indices((128, 128)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel squares: pure Nyquist
    crop = np.repeat(checker[..., None], 3, axis=2)
    frame = FullFrameScene(still, (100.0, 100.0, 77.0), 128).compose(crop)  # reduced to 0.6
    inside = frame[115:160, 115:160, 0].astype(np.float32)
    assert abs(inside.mean() - 127.5) < 3 and inside.std() < 8  # a bilinear warp alone: std 38.6 (moire)


def test_window_watermark_equals_the_whole_frame_watermark() -> None:
    rng = np.random.default_rng(2)
    scene = _scene(rng)
    marker = Watermarker(WatermarkPayload.for_generation(b"k" * 32, 1234))
    crop = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    frame = scene.compose(crop)
    y0, y1, x0, x1 = scene.window
    by_window = marker.embed(scene.still)
    by_window[y0:y1, x0:x1] = marker.embed_window(frame[y0:y1, x0:x1], (y0, x0), frame.shape[:2])
    whole = marker.embed(frame)
    assert np.array_equal(by_window, whole)
    # Negative controls: the still's own mark is not the frame's (the window matters), and a window off the block
    # grid is refused rather than marked with the wrong bits.
    assert not np.array_equal(marker.embed(scene.still), whole)
    with pytest.raises(ValueError):
        marker.embed_window(frame[y0 + 8 : y1, x0:x1], (y0 + 8, x0), frame.shape[:2])


def test_window_watermark_at_the_frame_edge_matches_too() -> None:
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 255, (852, 1280, 3), dtype=np.uint8)
    marker = Watermarker(WatermarkPayload.for_generation(b"k" * 32, 99))
    whole = marker.embed(frame)
    y0, x0 = 848 - 16 * 20, 1280 - 16 * 30  # a window that ends at the frame's bottom and right edges
    window = marker.embed_window(frame[y0:, x0:], (y0, x0), frame.shape[:2])
    assert np.array_equal(window, whole[y0:, x0:])


@pytest.fixture(scope="module")
def full_clip(example_photo: Path, example_audio: Path) -> tuple[object, list[np.ndarray]]:
    photo = widened(load_image(example_photo, max_pixels=50_000_000), 1280, 853)
    gen = TalkingFaceGenerator(GenerationConfig(size=512, seed=3, framing="full", motion_intensity=2.0))
    prepared = gen.prepare(photo)
    audio = load_audio(example_audio).head(1.2)
    return prepared, list(gen.frames(prepared, audio))


def test_full_framing_renders_the_whole_photo_with_only_the_head_window_moving(
    full_clip: tuple[object, list[np.ndarray]],
) -> None:
    prepared, frames = full_clip
    scene = prepared.scene  # type: ignore[attr-defined]
    assert len(frames) == 30 and all(f.shape == (852, 1280, 3) for f in frames)
    assert prepared.output_size == (1280, 852)  # type: ignore[attr-defined]
    y0, y1, x0, x1 = scene.window
    outside = np.ones((852, 1280), bool)
    outside[y0:y1, x0:x1] = False
    assert all(np.array_equal(f[outside], scene.still[outside]) for f in frames)
    stack = np.stack(frames).astype(np.float32)
    motion = np.abs(np.diff(stack, axis=0)).mean(axis=(0, 3))  # (H, W) mean change between frames
    left, top, side = scene.crop_box
    head = motion[int(top + 0.25 * side) : int(top + 0.75 * side), int(left + 0.25 * side) : int(left + 0.75 * side)]
    assert head.mean() > 0.3  # the head moves (the test would pass on a still image otherwise)


def test_full_framing_has_no_seam_or_tear_at_the_crop_edge(full_clip: tuple[object, list[np.ndarray]]) -> None:
    """Across the crop's border the frame continues the still picture: in every frame the pixels just inside it equal
    the still's (the rig pins the crop's border and the crop is cut 1:1 from the picture), and the head's motion
    fades out towards it instead of stopping at a seam."""
    prepared, frames = full_clip
    scene = prepared.scene  # type: ignore[attr-defined]
    left, top, side = (int(v) for v in scene.crop_box)
    assert side == scene.crop_size  # a head this size is rendered at the picture's own resolution

    def band(inset: int, width: int) -> np.ndarray:
        ring = np.zeros((852, 1280), bool)
        ring[top + inset : top + side - inset, left + inset : left + side - inset] = True
        ring[top + inset + width : top + side - inset - width, left + inset + width : left + side - inset - width] = 0
        return ring

    still = scene.still.astype(np.float32)
    diffs = np.stack([np.abs(f.astype(np.float32) - still).mean(-1) for f in frames])  # (T, H, W)
    edge, inner = band(0, 8), band(int(0.25 * side), 8)
    assert diffs[:, edge].mean(axis=1).max() < 0.3
    assert diffs[:, inner].mean() > 4 * diffs[:, edge].mean() + 0.5  # the motion is there, inside
    # Negative control: a crop that does not match the picture at its border (shifted by 6 pixels) shows a seam.
    crop = prepared.face.image  # type: ignore[attr-defined]
    shifted = scene.compose(np.roll(crop, 6, axis=1))
    assert np.abs(shifted.astype(np.float32) - still).mean(-1)[edge].mean() > 1.0


def test_full_framing_scales_a_large_head_and_blends_its_edge(example_photo: Path) -> None:
    """A head larger than --size is rendered at that size and scaled up at the paste; the blend band keeps the
    resampled crop's edge on the still picture."""
    photo = widened(load_image(example_photo, max_pixels=50_000_000), 1280, 853)
    gen = TalkingFaceGenerator(GenerationConfig(size=256, framing="full"))
    prepared = gen.prepare(photo)
    scene = prepared.scene
    assert scene is not None and scene.crop_size == 256 and scene.crop_box[2] > 300
    frame = scene.compose(prepared.face.image)
    still = scene.still.astype(np.float32)
    left, top, side = scene.crop_box
    x0, y0 = int(np.ceil(left)), int(np.ceil(top))
    x1, y1 = int(left + side), int(top + side)
    diff = np.abs(frame.astype(np.float32) - still).mean(-1)
    assert diff[y0:y1, x0 : x0 + 2].mean() < 1.0 and diff[y0 : y0 + 2, x0:x1].mean() < 1.0
