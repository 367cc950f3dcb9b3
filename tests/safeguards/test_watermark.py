"""Watermark: payload format, round trips with negative controls, imwatermark compatibility, H.264."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from safeguards import _dwtdctsvd, _ecc, _tile
from safeguards.errors import InvalidFrame, InvalidWatermarkPayload
from safeguards.watermark import (
    FALSE_POSITIVE_BOUND,
    SCHEME_V2,
    SCHEME_V3,
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


def _brightness(frames: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """Multiply R, G, B by `factor` (PIL ImageEnhance.Brightness), saturating."""
    return [np.clip(np.rint(f.astype(np.float32) * factor), 0, 255).astype(np.uint8) for f in frames]


def _half_and_back(frames: list[np.ndarray]) -> list[np.ndarray]:
    out = []
    for f in frames:
        h, w = f.shape[:2]
        small = Image.fromarray(f).resize((w // 2, h // 2), Image.Resampling.BILINEAR)
        out.append(np.asarray(small.resize((w, h), Image.Resampling.BILINEAR)))
    return out


def _crop(frames: list[np.ndarray], side: str, share: float = 0.10) -> list[np.ndarray]:
    h, w = frames[0].shape[:2]
    dy, dx = round(h * share), round(w * share)
    cut = {"top": (slice(dy, None), slice(None)), "bottom": (slice(None, h - dy), slice(None)),
           "left": (slice(None), slice(dx, None)), "right": (slice(None), slice(None, w - dx))}[side]  # fmt: skip
    return [np.ascontiguousarray(f[cut]) for f in frames]


def _rescale(frames: list[np.ndarray], factor: float) -> list[np.ndarray]:
    """Serve at `factor` x the size, not scaled back: FFmpeg's swscale, bicubic (its scale filter's default)."""
    h, w = frames[0].shape[:2]
    size = {"width": round(w * factor) // 2 * 2, "height": round(h * factor) // 2 * 2}
    return [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(**size, interpolation="BICUBIC").to_ndarray()
            for f in frames]  # fmt: skip


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


def test_codeword_corrects_eight_errors_and_rejects_random_words() -> None:
    payload = WatermarkPayload.for_generation(KEY, 0x0BADF00D)
    codeword = payload.codeword()
    assert codeword.shape == (_ecc.CODE_BITS,) and np.array_equal(codeword[:64], payload.to_bits())
    rng = np.random.default_rng(0)
    for n_errors in range(_ecc.T + 1):
        noisy = codeword.copy()
        noisy[rng.choice(_ecc.CODE_BITS, n_errors, replace=False)] ^= 1
        soft = np.where(noisy == 1, 0.3, -0.3)
        assert WatermarkPayload.decode_soft(soft, KEY) == payload
        assert WatermarkPayload.decode_soft(soft, OTHER_KEY) is None
    # 20 wrong bits is beyond the code: never a payload (and random words essentially never decode).
    noisy = codeword.copy()
    noisy[rng.choice(_ecc.CODE_BITS, 20, replace=False)] ^= 1
    assert WatermarkPayload.decode_soft(np.where(noisy == 1, 1.0, -1.0), KEY) is None
    bch = _ecc.Bch()
    assert sum(bch.decode(rng.integers(0, 2, _ecc.CODE_BITS)) is not None for _ in range(2000)) == 0
    assert FALSE_POSITIVE_BOUND < 1e-11


def test_tile_layout_round_trips_at_every_phase() -> None:
    codeword = WatermarkPayload.for_generation(KEY, 77).codeword()
    grid = _tile.grid_bits(_tile.tile_bits(codeword), 40, 50)  # (40, 50) block bits
    for py, px in [(0, 0), (3, 7), (9, 11), (5, 0)]:
        seen = grid[py:, px:]  # what a reader whose grid starts py, px blocks into the embedder's sees
        cells = np.bincount(_tile.cell_of_block(*seen.shape), weights=2.0 * seen.reshape(-1) - 1.0, minlength=120)
        assert np.array_equal(_tile.codeword_soft(cells, py, px) > 0, codeword == 1)
        at_once = _tile.codeword_soft_all_phases(cells)
        assert np.array_equal(at_once[_tile.PHASES.index((py, px))], _tile.codeword_soft(cells, py, px))


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
    assert _psnr(photo, marked) > 38.0
    result = WatermarkDetector(KEY).detect([marked])
    assert result.found and result.tag == 123456789 and result.payload == payload
    assert result.frames_decoded == 1 and result.frames_agreeing == 1.0
    assert result.confidence > 0.9 and result.grid_offset == (0, 0) and result.phase == (0, 0)


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


def test_soft_votes_add_up_across_frames(photo: np.ndarray) -> None:
    """Under heavy noise no frame decodes alone, yet the summed soft votes of 30 frames give the payload."""
    marked = Watermarker(WatermarkPayload.for_generation(KEY, 42)).embed(photo)
    rng = np.random.default_rng(0)
    # 16-pixel blocks average the noise over 256 pixels: sigma 48 is what keeps every single frame unreadable.
    noisy = [np.clip(marked + rng.normal(0, 48, marked.shape), 0, 255).astype(np.uint8) for _ in range(30)]
    detector = WatermarkDetector(KEY)
    assert not any(detector.detect([f]).found for f in noisy[:6])
    result = detector.detect(noisy)
    assert result.found and result.tag == 42
    assert result.frames_agreeing < 0.5 and 0.0 < result.confidence < 0.5
    unmarked = [np.clip(photo + rng.normal(0, 48, photo.shape), 0, 255).astype(np.uint8) for _ in range(30)]
    assert not detector.detect(unmarked).found


def test_detect_skips_unusable_frames_and_honours_max_frames(photo: np.ndarray) -> None:
    marked = Watermarker(WatermarkPayload.for_generation(KEY, 5)).embed(photo)
    tiny = np.zeros((100, 100, 3), dtype=np.uint8)
    result = WatermarkDetector(KEY).detect([tiny, marked, marked, marked], max_frames=3)
    assert result.found and result.frames_decoded == 2 and result.frames_skipped == 1
    empty = WatermarkDetector(KEY).detect([tiny])
    assert not empty.found and empty.frames_decoded == 0


def test_embed_rejects_bad_frames() -> None:
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 1))
    bad_frames = (np.zeros((128, 128, 3), np.uint8), np.zeros((40, 2000, 3), np.uint8), np.zeros((512, 512), np.uint8),
                  np.zeros((512, 512, 3)))  # fmt: skip
    for bad in bad_frames:
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


def test_transform_compatible_with_imwatermark_both_ways(photo: np.ndarray) -> None:
    """Block level: the packaged decoder reads blocks we write, and we read blocks the packaged encoder writes."""
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    strength = int(SCHEME_V2.strength)  # the package's 4x4 LL blocks are v2's geometry
    bits = WatermarkPayload.for_generation(KEY, 0xCAFE0001).to_bits()  # 64 bits in the package's layout
    bgr = np.ascontiguousarray(photo[:, :, ::-1])
    decoder = WatermarkDecoder("bits", 64)

    # ours -> packaged decoder
    ours = _dwtdctsvd.embed_block_bits(photo, _dwtdctsvd.packaged_block_bits(bits, 512, 512), scale=strength)
    decoded = decoder.decode(np.ascontiguousarray(ours[:, :, ::-1]), "dwtDctSvd", scales=[0, strength, 0])
    assert np.array_equal(np.asarray(decoded, dtype=np.uint8), bits)

    # packaged encoder -> our block reader (the package truncates instead of rounding, so a few saturated
    # blocks flip; its own decoder then only gets the payload by voting, as ours does)
    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", bits.tolist())
    theirs = encoder.encode(bgr, "dwtDctSvd", scales=[0, strength, 0])
    read = _dwtdctsvd.hard_bits(_dwtdctsvd.block_s0(_dwtdctsvd.u_plane(theirs[:, :, ::-1])), scale=strength)
    assert np.mean(read == _dwtdctsvd.packaged_block_bits(bits, 512, 512)) > 0.97

    # Our hard block reads equal the packaged decoder's on unmarked content too (its vote of those blocks).
    for image in (bgr, np.random.default_rng(3).integers(0, 256, (304, 408, 3), dtype=np.uint8)):
        packaged = np.asarray(decoder.decode(image, "dwtDctSvd", scales=[0, strength, 0]), dtype=np.float64)
        blocks = _dwtdctsvd.hard_bits(_dwtdctsvd.block_s0(_dwtdctsvd.u_plane(image[:, :, ::-1])), scale=strength)
        flat = blocks.reshape(-1).astype(np.float64)
        votes = np.bincount(np.arange(flat.size) % 64, weights=flat) / np.bincount(np.arange(flat.size) % 64)
        assert np.array_equal(packaged > 0, votes * 255 > 127)


def test_fast_block_reads_match_the_svd(photo: np.ndarray) -> None:
    u = _dwtdctsvd.u_plane(photo)
    blocks = _dwtdctsvd._to_blocks(_dwtdctsvd._ll(u, 0, 0, 64, 64), 64, 64).astype(np.float64)
    svd_s0 = np.linalg.svd(blocks, compute_uv=False)[:, 0].reshape(64, 64)
    assert np.max(np.abs(_dwtdctsvd.block_s0(u) - svd_s0)) < 0.05  # power iteration
    frob = _dwtdctsvd.block_s0(u, exact=False)
    assert np.all(frob >= svd_s0 - 1e-3) and np.median(frob - svd_s0) < 0.1
    every = _dwtdctsvd.frobenius_s0_all_offsets(u[3:, 5:])
    assert len(every) == 64
    for oy, ox in [(0, 0), (1, 6), (7, 7), (4, 3)]:
        np.testing.assert_allclose(every[(oy, ox)], _dwtdctsvd.block_s0(u[3:, 5:], oy=oy, ox=ox, exact=False))
    # v3's 8x8 LL blocks (16x16 pixels), and the 6x6 / 12x12 blocks a 0.75x / 1.5x rendition is read with.
    for block in (6, 8, 12):
        nby, nbx = _dwtdctsvd.grid_shape(512, 512, block=block)
        blocks = _dwtdctsvd._to_blocks(_dwtdctsvd._ll(u, 0, 0, nby, nbx, block), nby, nbx, block).astype(np.float64)
        svd_s0 = np.linalg.svd(blocks, compute_uv=False)[:, 0].reshape(nby, nbx)
        assert np.max(np.abs(_dwtdctsvd.block_s0(u, block=block) - svd_s0)) < 0.1
        every = _dwtdctsvd.frobenius_s0_all_offsets(u[3:, 5:], block=block)
        assert len(every) == (2 * block) ** 2
        for oy, ox in [(0, 0), (1, 2 * block - 1), (block, 3)]:
            np.testing.assert_allclose(
                every[(oy, ox)], _dwtdctsvd.block_s0(u[3:, 5:], oy=oy, ox=ox, exact=False, block=block), rtol=1e-5
            )


# --- robustness -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def marked_clip(photo: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(marked, unmarked) 2 s clips of the photo, tag 0xDEADBEEF."""
    source = list(_clip(photo, seed=5))
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 0xDEADBEEF))
    return [marker.embed(f) for f in source], source


TRANSFORMS = {
    "h264_crf28": lambda fs: _h264_roundtrip(fs, crf=28),
    "crop_left": lambda fs: _crop(fs, "left"),
    "crop_top": lambda fs: _crop(fs, "top"),
    "crop_right": lambda fs: _crop(fs, "right"),
    "crop_bottom": lambda fs: _crop(fs, "bottom"),
    "brightness_-20": lambda fs: _brightness(fs, 0.8),
    "brightness_+20": lambda fs: _brightness(fs, 1.2),
    "half_and_back": _half_and_back,
    # Renditions served at another size (issue 9): the detector reads them as they are.
    "rescale_0.5": lambda fs: _rescale(fs, 0.5),
    "rescale_0.75": lambda fs: _rescale(fs, 0.75),
    "rescale_1.5": lambda fs: _rescale(fs, 1.5),
    "rescale_0.5_crf28_crop": lambda fs: _crop(_h264_roundtrip(_rescale(fs, 0.5), crf=28), "left"),
}


# A few kinds run in the quick suite; the rest are marked slow (the evaluation script runs all of them on 8 clips).
QUICK = {"h264_crf28", "crop_left", "brightness_+20", "rescale_0.5_crf28_crop", "rescale_1.5"}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in sorted(TRANSFORMS)]
)
def test_survives_each_transformation(marked_clip: tuple[list[np.ndarray], list[np.ndarray]], name: str) -> None:
    marked, source = marked_clip
    result = WatermarkDetector(KEY).detect(TRANSFORMS[name](marked))
    assert result.found and result.tag == 0xDEADBEEF, name
    assert result.frames_decoded == 50 and result.confidence > 0.1
    # Negative control: the same clip without the mark, through the same transformation.
    assert not WatermarkDetector(KEY).detect(TRANSFORMS[name](source)).found


@pytest.mark.parametrize(("name", "scale"), [("rescale_0.5", 0.5), ("rescale_0.75", 0.75), ("rescale_1.5", 1.5)])
def test_reports_the_scale_it_read(
    marked_clip: tuple[list[np.ndarray], list[np.ndarray]], name: str, scale: float
) -> None:
    result = WatermarkDetector(KEY).detect(TRANSFORMS[name](marked_clip[0][:10]))
    assert result.found and result.tag == 0xDEADBEEF and result.scale == scale
    assert result.algorithm == SCHEME_V3.algorithm
    # Restricted to scale 1 (and not told our native size), a detector does not see the mark in a half-size rendition.
    if scale == 0.5:
        only_1 = WatermarkDetector(KEY, scales=(1.0,), native_sizes=())
        assert not only_1.detect(TRANSFORMS[name](marked_clip[0][:10])).found


def test_a_rendition_of_the_native_size_gets_its_own_scale(
    marked_clip: tuple[list[np.ndarray], list[np.ndarray]],
) -> None:
    """A 512-pixel output served at 360p (0.703, not one of the default scales) is read from the frame's size."""
    marked, source = marked_clip
    rendition = _h264_roundtrip(_rescale(marked[:25], 360 / 512), crf=23)
    assert rendition[0].shape[:2] == (360, 360)
    result = WatermarkDetector(KEY).detect(rendition)
    assert result.found and result.tag == 0xDEADBEEF and result.scale == pytest.approx(360 / 512)
    assert not WatermarkDetector(KEY, native_sizes=()).detect(rendition).found  # only the size found it
    assert not WatermarkDetector(KEY).detect(_h264_roundtrip(_rescale(source[:25], 360 / 512), crf=23)).found


def test_reads_v2_marks_made_before_the_scale_robust_scheme(photo: np.ndarray) -> None:
    """v2 (8x8-pixel blocks) is v3's geometry at half size: the 0.5 try reads old outputs at their own size."""
    marked = Watermarker(WatermarkPayload.for_generation(KEY, 0x0000BEEF), scheme=SCHEME_V2).embed(photo)
    assert _psnr(photo, marked) > 38.0
    result = WatermarkDetector(KEY).detect([marked])
    assert result.found and result.tag == 0x0000BEEF and result.scale == 0.5
    assert not WatermarkDetector(KEY).detect([photo]).found


@pytest.mark.slow
def test_survives_an_excerpt_cut_from_the_middle(photo: np.ndarray) -> None:
    """A 4 s output (CRF 18), of which seconds 1-3 are cut out and re-encoded at CRF 28."""
    marker = Watermarker(WatermarkPayload.for_generation(KEY, 0xE1C3))
    source = list(_clip(photo, n=100, seed=11))
    output = _h264_roundtrip([marker.embed(f) for f in source], crf=18)
    excerpt = _h264_roundtrip(output[25:75], crf=28)
    result = WatermarkDetector(KEY).detect(excerpt)
    assert result.found and result.tag == 0xE1C3 and result.frames_decoded == 50
    assert not WatermarkDetector(KEY).detect(_h264_roundtrip(source[25:75], crf=28)).found


@pytest.mark.slow
@pytest.mark.parametrize(
    "first,second",
    [("h264_crf28", "crop_left"), ("crop_bottom", "brightness_+20"), ("half_and_back", "brightness_-20"),
     ("h264_crf28", "half_and_back")],  # fmt: skip
)
def test_survives_two_transformations(
    marked_clip: tuple[list[np.ndarray], list[np.ndarray]], first: str, second: str
) -> None:
    result = WatermarkDetector(KEY).detect(TRANSFORMS[second](TRANSFORMS[first](marked_clip[0])))
    assert result.found and result.tag == 0xDEADBEEF


@pytest.mark.slow
def test_survives_h264_crf23_then_crf28(photo: np.ndarray) -> None:
    tag = 1
    marker = Watermarker(WatermarkPayload.for_generation(KEY, tag))
    source = list(_clip(photo, seed=tag % 97))
    decoded = _h264_roundtrip(_h264_roundtrip([marker.embed(f) for f in source], crf=23), crf=28)
    assert len(decoded) == 50
    result = WatermarkDetector(KEY).detect(decoded)
    assert result.found and result.tag == tag and result.frames_decoded == 50


@pytest.mark.slow
@pytest.mark.shared_media
def test_real_media_never_decodes_to_a_valid_payload(shared_media: Path) -> None:
    """Every shared photo (as a one-frame clip) and every 50-frame window of every shared video."""
    detector = WatermarkDetector(KEY)
    images = sorted(p for p in shared_media.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    assert images
    for path in images:
        with Image.open(path) as image:
            assert not detector.detect([np.asarray(image.convert("RGB"))]).found, path.name
    videos = sorted((shared_media / "videos").glob("*.mp4"))
    assert videos
    for path in videos:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        for start in range(0, len(frames), 50):
            result = detector.detect(frames[start : start + 50], max_frames=50)
            assert not result.found, (path.name, start)
            assert result.frames_decoded + result.frames_skipped == len(frames[start : start + 50])
