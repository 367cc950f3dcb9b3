"""Each detection cue on made input with a known answer, and its negative control.

Clips are built from the shipped example photo's real face mesh: the same face in every frame, with exactly the
property a cue measures switched on or off (a pulse in the skin, a mouth driven by the loudness, jitter, a pasted
smooth face). Real and synthetic shared clips are checked in test_detection_cues_media.py.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from generation import load_image
from generation.face import detect_landmarks
from generation.media import AudioTrack
from safeguards.cues import AudioVisualCue, PulseCue, SpatialCue, TemporalCue, measure_all
from safeguards.cues.audiovisual import best_lag_corr
from safeguards.cues.geometry import CHEEK_LEFT, CHEEK_RIGHT, FOREHEAD, OUTLINE, mouth_opening
from safeguards.cues.track import CROP, FaceTrack, Segment

FPS = 15.0


@pytest.fixture(scope="module")
def face(example_photo: Path) -> tuple[np.ndarray, np.ndarray]:
    """(crop (CROP, CROP, 3), landmarks (478, 3) in crop pixels) of the example photo."""
    img = load_image(example_photo, max_pixels=10**7)
    crop = cv2.resize(img, (CROP, CROP), interpolation=cv2.INTER_AREA)
    lm = detect_landmarks(crop)
    assert lm is not None
    return crop, lm


def _track(crops: np.ndarray, lms: np.ndarray, audio: AudioTrack | None = None, full: bool = False) -> FaceTrack:
    t = np.arange(len(crops)) / FPS
    seg = Segment(0.0, t, crops, lms.astype(np.float32), np.tile([0, 0, CROP], (len(crops), 1)).astype(float),
                  list(crops))  # fmt: skip
    frames = [crops[i] for i in range(0, len(crops), max(1, len(crops) // 4))] if full else []
    flms = [lms[i] for i in range(0, len(crops), max(1, len(crops) // 4))] if full else []
    return FaceTrack("video", CROP, CROP, FPS, len(crops) / FPS, [seg], frames, flms, audio, [])


def _region_mask(lm: np.ndarray, idx: tuple[int, ...]) -> np.ndarray:
    m = np.zeros((CROP, CROP), np.uint8)
    cv2.fillConvexPoly(m, cv2.convexHull(lm[list(idx), :2].astype(np.int32)), 1)
    return m.astype(bool)


def _pulse_clip(face: tuple[np.ndarray, np.ndarray], mode: str, seconds: float = 8.0) -> FaceTrack:
    """mode "pulse": one 72 bpm heartbeat in all skin patches; "independent": unrelated noise in each patch."""
    crop, lm = face
    rng = np.random.default_rng(1)
    n = int(seconds * FPS)
    t = np.arange(n) / FPS
    masks = [_region_mask(lm, r) for r in (FOREHEAD, CHEEK_LEFT, CHEEK_RIGHT)]
    crops = np.repeat(crop[None].astype(np.float32), n, 0)
    for k, m in enumerate(masks):
        if mode == "pulse":
            wave = np.sin(2 * np.pi * 1.2 * t) * 1.5  # 72 bpm
        else:
            wave = np.convolve(rng.normal(0, 1.5, n), np.ones(3) / 3, mode="same")
        for i in range(n):
            crops[i][m] += np.array([0.3, 1.0, 0.5]) * wave[i] * (1 + 0.1 * k)
    crops += rng.normal(0, 0.5, crops.shape)
    return _track(np.clip(crops, 0, 255).astype(np.uint8), np.repeat(lm[None], n, 0))


def test_pulse_cue_sees_one_heartbeat_and_not_independent_noise(face) -> None:  # type: ignore[no-untyped-def]
    live = PulseCue().measure(_pulse_clip(face, "pulse"))
    dead = PulseCue().measure(_pulse_clip(face, "independent"))
    assert live.applies and dead.applies
    assert live.features["coherence"] > 0.8 > dead.features["coherence"] + 0.3
    assert live.features["snr_db"] > dead.features["snr_db"]
    assert abs(live.evidence["estimated_bpm"][0] - 72) < 4


def test_pulse_cue_does_not_apply_to_short_clips(face) -> None:  # type: ignore[no-untyped-def]
    short = PulseCue().measure(_pulse_clip(face, "pulse", seconds=2.0))
    assert not short.applies and "4 s" in short.reason


def _talking_clip(face: tuple[np.ndarray, np.ndarray], coupled: bool) -> FaceTrack:
    """Mouth opening driven by the loudness (lag 0, as an audio-driven generator does) or unrelated to it."""
    crop, lm = face
    rng = np.random.default_rng(2)
    n = int(8 * FPS)
    rate = 16000
    syll = np.clip(np.sin(2 * np.pi * 2.5 * np.arange(n) / FPS + rng.normal(0, 0.3, n)), 0, None)
    syll[40:60] = 0  # a pause
    env = np.repeat(syll, rate // int(FPS))
    audio = AudioTrack((rng.normal(0, 1, len(env)) * env * 0.3).astype(np.float32), rate)
    drive = syll if coupled else np.clip(np.sin(2 * np.pi * 0.7 * np.arange(n) / FPS + 1.0), 0, None)
    lms = np.repeat(lm[None], n, 0).astype(np.float64)
    lower = [14, 87, 317, 178, 402, 88, 318, 17, 84, 314]
    lms[:, lower, 1] += 8.0 * drive[:, None]
    return _track(np.repeat(crop[None], n, 0), lms, audio)


def test_audio_visual_cue_separates_driven_from_unrelated_mouths(face) -> None:  # type: ignore[no-untyped-def]
    driven = AudioVisualCue().measure(_talking_clip(face, True))
    unrelated = AudioVisualCue().measure(_talking_clip(face, False))
    assert driven.applies and unrelated.applies
    assert driven.features["corr"] > 0.6 and unrelated.features["corr"] < driven.features["corr"] - 0.3
    assert driven.features["abs_lag_s"] < 0.1


def test_audio_visual_cue_needs_sound(face) -> None:  # type: ignore[no-untyped-def]
    clip = _talking_clip(face, True)
    assert not AudioVisualCue().measure(_track(clip.segments[0].crops, clip.segments[0].landmarks, None)).applies
    silent = AudioTrack(np.zeros(16000 * 8, np.float32), 16000)
    m = AudioVisualCue().measure(_track(clip.segments[0].crops, clip.segments[0].landmarks, silent))
    assert not m.applies and "silent" in m.reason


def test_best_lag_corr_finds_the_lag() -> None:
    rng = np.random.default_rng(0)
    a = np.convolve(rng.normal(size=200), np.ones(5) / 5, mode="same")
    corr, lag = best_lag_corr(a[:-3], a[3:], 5)
    assert lag == -3 and corr > 0.99
    assert mouth_opening(np.zeros((2, 478, 2))).shape == (2,)


def _moving_clip(face: tuple[np.ndarray, np.ndarray], jitter: float, inner_turn: float = 0.0) -> FaceTrack:
    crop, lm = face
    rng = np.random.default_rng(3)
    n = int(6 * FPS)
    t = np.arange(n) / FPS
    lms = np.repeat(lm[None], n, 0).astype(np.float64)
    centre = lm[:, :2].mean(0)
    for i in range(n):  # a smooth head sway: rotation about the face centre
        a = np.radians(4 * np.sin(2 * np.pi * 0.3 * t[i]))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        lms[i, :, :2] = (lm[:, :2] - centre) @ rot.T + centre
    lms[:, :, :2] += rng.normal(0, jitter, lms[:, :, :2].shape)
    if inner_turn:  # the inner face shifts sideways on its own, as a pasted face can
        inner = np.setdiff1d(np.arange(478), OUTLINE)
        lms[:, inner, 0] += inner_turn * np.sin(2 * np.pi * 0.8 * t)[:, None]
    return _track(np.repeat(crop[None], n, 0), lms)


def test_temporal_cue_measures_jitter_and_pose_disagreement(face) -> None:  # type: ignore[no-untyped-def]
    smooth = TemporalCue().measure(_moving_clip(face, 0.0))
    jittery = TemporalCue().measure(_moving_clip(face, 1.5))
    split = TemporalCue().measure(_moving_clip(face, 0.0, inner_turn=6.0))
    assert smooth.applies and jittery.applies and split.applies
    assert jittery.features["jitter"] > smooth.features["jitter"] + 2.0
    assert split.features["inner_slip"] > smooth.features["inner_slip"] + 2.0
    assert smooth.features["yaw_sd_deg"] < 2.0 and smooth.features["blinks_per_min"] == 0.0


def test_spatial_cue_sees_a_smooth_face_on_a_noisy_frame(face) -> None:  # type: ignore[no-untyped-def]
    crop, lm = face
    rng = np.random.default_rng(4)
    big = cv2.resize(crop, (2 * CROP, 2 * CROP), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    lm2 = lm * 2
    noisy = np.clip(big + rng.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
    head = np.zeros(big.shape[:2], np.uint8)
    cv2.fillConvexPoly(head, cv2.convexHull(lm2[list(OUTLINE), :2].astype(np.int32)), 1)
    pasted = noisy.copy()
    pasted[head > 0] = cv2.GaussianBlur(noisy, (0, 0), 2.0)[head > 0]  # a generated face is smoother

    def measure(img: np.ndarray):  # type: ignore[no-untyped-def]
        return SpatialCue().measure(FaceTrack("image", 2 * CROP, 2 * CROP, 0, 0, [], [img], [lm2], None, []))

    real, fake = measure(noisy), measure(pasted)
    assert real.applies and fake.applies
    assert abs(real.features["noise_ratio"]) < 0.5
    assert fake.features["noise_ratio"] < real.features["noise_ratio"] - 1.0


def test_no_face_means_no_cue_but_spatial_applies() -> None:
    blank = np.full((12, CROP, CROP, 3), 128, np.uint8)
    track = _track(blank, np.full((12, 478, 3), np.nan))
    measured = measure_all(track, [PulseCue(), AudioVisualCue(), TemporalCue(), SpatialCue()])
    assert not any(m.applies for m in measured.values())
    assert "no face" in measured["rppg"].reason


@pytest.mark.slow
def test_huge_frames_are_scaled_as_decoded_and_long_videos_refused_before_decoding(tmp_path: Path) -> None:
    import av

    from generation.errors import VideoTooLong
    from safeguards.cues.track import TrackConfig, track_video

    path = tmp_path / "huge.mp4"
    with av.open(str(path), "w") as c:  # 3 s of black 4096x4096: a few kB on disk, 50 MB a frame decoded
        st = c.add_stream("libx264", rate=10)
        st.width = st.height = 4096
        st.pix_fmt, st.options = "yuv420p", {"crf": "40", "preset": "ultrafast"}
        black = av.VideoFrame.from_ndarray(np.zeros((4096, 4096, 3), np.uint8), format="rgb24")
        for _ in range(20):
            for p in st.encode(black):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    cfg = TrackConfig()
    track = track_video(path, cfg)
    assert track.width * track.height <= cfg.max_frame_pixels
    assert track.sample_frames and all(f.shape[0] * f.shape[1] <= cfg.max_frame_pixels for f in track.sample_frames)
    assert track.face_fraction == 0.0
    with pytest.raises(VideoTooLong):
        track_video(path, cfg, max_seconds=1.5)


def test_too_long_video_maps_to_413_and_exit_2() -> None:
    from generation.errors import VideoTooLong
    from service.errors import describe

    problem = describe(VideoTooLong(3600.0, 600.0))
    assert problem.http_status == 413 and int(problem.exit_status) == 2 and problem.code == "video_too_long"
    assert "PROVATAR_MAX_DETECT_SECONDS" in (problem.hint or "")
