"""The detector's material: every clip with its label, its generator and the real footage or photo it comes from.

  real        ../shared/media/videos_real/*, videos/*                        generator "real"
  synthetic   ../shared/media/synthetic/* (generator = file-name prefix)    AniPortrait: right panel only
  ours        our renderer on shared portraits x speech (no watermark, no C2PA: pixels only)   generator "provatar"
  classic     manipulations of the real footage made here (generators "classic_swap", "classic_mouth",
              "classic_interp"): a still face warped onto another person's moving face; the mouth region
              replaced from another moment of the same clip; every other frame synthesised by optical-flow
              interpolation. Each names the real clip it was made from, so evaluation can hold that clip out.

Derived files are written once under bench/out/detector_corpus/ and reused. `variant="crf28"` gives each clip
re-encoded at x264 CRF 28 (the robustness row of the evaluation).

    .venv/bin/python bench/detector_corpus.py      # builds everything and lists it
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.interpolate import griddata

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generation.face import detect_landmarks  # noqa: E402
from generation.media import (  # noqa: E402
    AudioTrack,
    encode_mp4,
    iter_video_frames,
    load_audio,
    load_image,
    probe_video,
)

MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "bench" / "out" / "detector_corpus"
CLASSIC_SECONDS = 6.0

# Our renders: portraits the generator handles (open-mouth, occluded and turned stress cases included), one speech
# clip each, rotating through the speech set.
OURS_PORTRAITS = (
    "woman_smiling_happy.png", "woman_young_outdoor_stock-teen-8.jpg", "astronaut_eileen_collins.png",
    "painting_mona_lisa_s9.jpg", "anime_yongen.jpeg", "man_young_frontal_d19.jpg", "baby_ffhq_00000.png",
    "child_girl_darker_skin_ffhq_00007.png", "bw_elderly_man_white_beard_gpen_809000.png",
    "painting_dark_skin_woman_afro_art_14.png", "statue_marble_bust_hallo_5.jpg", "cartoon3d_girl_anitalker.png",
)  # fmt: skip
# Classic manipulations: (kind, target real clip, donor) -- donors are shared portraits or another real clip.
CLASSIC = (
    ("classic_swap", "videos/talkinghead_woman_d10.mp4", "portraits/woman_young_outdoor_stock-teen-8.jpg"),
    ("classic_swap", "videos_real/young_man_speaking_film_d20.mp4", "portraits/man_young_frontal_d19.jpg"),
    ("classic_swap", "videos_real/woman_red_hair_indoor_s18.mp4", "portraits/woman_smiling_happy.png"),
    ("classic_swap", "videos_real/interview_public_figure_hyperlips_video2.mp4",
     "portraits/bw_dark_skin_man_microphone_gpen_813000.png"),
    ("classic_mouth", "videos/talkinghead_man_suit_retalking1.mp4", None),
    ("classic_mouth", "videos_real/tv_interview_public_figure_hyperlips_video4.mp4", None),
    ("classic_mouth", "videos_real/woman_expressions_d3.mp4", None),
    ("classic_interp", "videos_real/woman_blazer_outdoor_s32.mp4", None),
    ("classic_interp", "videos_real/man_glasses_selfie_d13.mp4", None),
    ("classic_interp", "videos_real/woman_exaggerated_expressions_d6.mp4", None),
)  # fmt: skip


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int  # 1 synthetic, 0 real
    generator: str  # "real", "provatar", the other generator's name, or a classic manipulation
    source: str  # the real footage or photo it shows/derives from (for leave-one-source-out)

    @property
    def name(self) -> str:
        return self.path.stem


def _frames_and_audio(path: Path, seconds: float | None = None) -> tuple[list[np.ndarray], AudioTrack, float]:
    info = probe_video(path)
    fps = info.fps or 25.0
    n = None if seconds is None else int(seconds * fps)
    frames = list(iter_video_frames(path, max_frames=n))
    try:
        audio = load_audio(path)
    except Exception:  # noqa: BLE001  (no audio track: a silent one keeps encode_mp4's contract)
        audio = AudioTrack(np.zeros(int(16000 * len(frames) / fps), np.float32), 16000)
    return frames, audio, fps


def _encode(frames: list[np.ndarray], audio: AudioTrack, fps: float, out: Path, crf: int = 18) -> Path:
    """Encode at an integer rate, trimming or padding the audio so the frame count matches."""
    rate = max(1, int(round(fps)))
    frames = [f[: f.shape[0] // 2 * 2, : f.shape[1] // 2 * 2] for f in frames]
    need = len(frames) / rate
    samples = audio.samples[: int(need * audio.sample_rate)]
    samples = np.pad(samples, (0, max(0, int(np.ceil(need * audio.sample_rate)) - len(samples))))
    track = AudioTrack(samples[: int(round((len(frames) - 0.5) / rate * audio.sample_rate))], audio.sample_rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    return encode_mp4(iter(frames), track, out, fps=rate, crf=crf)


def _piecewise_map(src_pts: np.ndarray, dst_pts: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Inverse piecewise-affine map (for cv2.remap) taking dst landmark positions to src ones, over the hull."""
    h, w = shape
    x0, y0 = np.floor(dst_pts.min(0)).astype(int) - 2
    x1, y1 = np.ceil(dst_pts.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1)
    step = 4
    gy, gx = np.mgrid[y0 : y1 + 1 : step, x0 : x1 + 1 : step]
    mx = griddata(dst_pts, src_pts[:, 0], (gx, gy), method="linear")
    my = griddata(dst_pts, src_pts[:, 1], (gx, gy), method="linear")
    full_x = np.full((h, w), -1, np.float32)
    full_y = np.full((h, w), -1, np.float32)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    full_x[y0 : y1 + 1, x0 : x1 + 1] = cv2.resize(np.nan_to_num(mx, nan=-1).astype(np.float32), (bw, bh))
    full_y[y0 : y1 + 1, x0 : x1 + 1] = cv2.resize(np.nan_to_num(my, nan=-1).astype(np.float32), (bw, bh))
    return full_x, full_y


def _paste(frame: np.ndarray, donor: np.ndarray, donor_lm: np.ndarray, lm: np.ndarray, idx: list[int]) -> np.ndarray:
    """Warp the donor's region (hull of ``idx``) onto the frame's landmarks, match colour, blend with a soft seam."""
    mx, my = _piecewise_map(donor_lm[:, :2], lm[:, :2], frame.shape[:2])
    warped = cv2.remap(donor, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(lm[idx, :2].astype(np.int32)), 255)
    mask = cv2.erode(mask, np.ones((5, 5), np.uint8))
    if mask.sum() == 0:
        return frame
    m = mask > 0
    out = warped.astype(np.float32)
    for c in range(3):  # colour transfer: the donor's skin to the target's mean and spread
        a, b = out[..., c][m], frame[..., c][m].astype(np.float32)
        out[..., c] = (out[..., c] - a.mean()) / (a.std() + 1e-6) * b.std() + b.mean()
    soft = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), max(2.0, 0.01 * frame.shape[0]))[..., None]
    return np.clip(out * soft + frame.astype(np.float32) * (1 - soft), 0, 255).astype(np.uint8)


FACE_IDX = list(range(478))
MOUTH_IDX = [57, 186, 92, 165, 167, 164, 393, 391, 322, 410, 287, 273, 335, 406, 313, 18, 83, 182, 106, 43]


def make_swap(target: Path, donor_photo: Path, out: Path) -> Path:
    frames, audio, fps = _frames_and_audio(target, CLASSIC_SECONDS)
    donor = load_image(donor_photo, max_pixels=50_000_000)
    donor_lm = detect_landmarks(donor)
    assert donor_lm is not None, donor_photo
    from safeguards.cues.geometry import OUTLINE

    result = []
    for f in frames:
        lm = detect_landmarks(f)
        result.append(f if lm is None else _paste(f, donor, donor_lm, lm, list(OUTLINE)))
    return _encode(result, audio, fps, out)


def make_mouth(target: Path, out: Path) -> Path:
    """Lip-sync-style edit: each frame's mouth region comes from the frame 1.3 s later (another syllable)."""
    frames, audio, fps = _frames_and_audio(target, CLASSIC_SECONDS + 1.5)
    shift = int(1.3 * fps)
    lms = [detect_landmarks(f) for f in frames]
    n = len(frames) - shift
    result = []
    for i in range(n):
        d, lm = lms[i + shift], lms[i]
        result.append(frames[i] if d is None or lm is None else _paste(frames[i], frames[i + shift], d, lm, MOUTH_IDX))
    return _encode(result, audio, fps, out)


def make_interp(target: Path, out: Path) -> Path:
    """Every odd frame replaced by optical-flow interpolation of its neighbours (DIS flow, half-way warps)."""
    frames, audio, fps = _frames_and_audio(target, CLASSIC_SECONDS)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    result = list(frames)
    h, w = frames[0].shape[:2]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(1, len(frames) - 1, 2):
        a, b = frames[i - 1], frames[i + 1]
        ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
        fab = dis.calc(ga, gb, None)
        fba = dis.calc(gb, ga, None)
        wa = cv2.remap(a, gx - 0.5 * fab[..., 0], gy - 0.5 * fab[..., 1], cv2.INTER_LINEAR)
        wb = cv2.remap(b, gx - 0.5 * fba[..., 0], gy - 0.5 * fba[..., 1], cv2.INTER_LINEAR)
        result[i] = ((wa.astype(np.uint16) + wb) // 2).astype(np.uint8)
    return _encode(result, audio, fps, out)


def make_ours(photo: Path, speech: Path, out: Path, seed: int) -> Path:
    from generation import GenerationConfig, TalkingFaceGenerator

    gen = TalkingFaceGenerator(GenerationConfig(size=512, seed=seed))
    audio = load_audio(speech).head(8.0)
    prepared = gen.prepare(load_image(photo, max_pixels=50_000_000))
    out.parent.mkdir(parents=True, exist_ok=True)
    return encode_mp4(gen.frames(prepared, audio), audio, out, crf=23)


def crop_right_panel(path: Path, out: Path, x0: int = 515) -> Path:
    frames, audio, fps = _frames_and_audio(path)
    return _encode([f[:, x0:] for f in frames], audio, fps, out)


def reencode_crf(path: Path, out: Path, crf: int = 28) -> Path:
    frames, audio, fps = _frames_and_audio(path)
    return _encode(frames, audio, fps, out, crf=crf)


def build(variant: str = "original") -> list[Clip]:
    """Every clip of the corpus (building derived files on first use). variant: "original" or "crf28"."""
    clips: list[Clip] = []
    for folder in ("videos_real", "videos"):
        for p in sorted((MEDIA / folder).glob("*.mp4")):
            clips.append(Clip(p, 0, "real", p.stem))
    for p in sorted((MEDIA / "synthetic").iterdir()):
        gen = p.name.split("__")[0]
        if gen == "aniportrait":
            out = OUT / "aniportrait" / f"{p.stem}.mp4"
            p = out if out.exists() else crop_right_panel(p, out)
        source = p.stem
        if gen == "hyperlips" and p.stem.endswith(("video2", "video4")):
            stem = "interview_public_figure_hyperlips_video2" if p.stem.endswith("2") else \
                "tv_interview_public_figure_hyperlips_video4"  # fmt: skip
            source = stem
        clips.append(Clip(p, 1, gen, source))
    speech = sorted((MEDIA / "speech").iterdir())
    for i, name in enumerate(OURS_PORTRAITS):
        photo = MEDIA / "portraits" / name
        out = OUT / "provatar" / f"{photo.stem}.mp4"
        if not out.exists():
            make_ours(photo, speech[i % len(speech)], out, seed=i)
        clips.append(Clip(out, 1, "provatar", photo.stem))
    for kind, target, donor in CLASSIC:
        t = MEDIA / target
        out = OUT / kind / f"{t.stem}.mp4"
        if not out.exists():
            if kind == "classic_swap":
                make_swap(t, MEDIA / str(donor), out)
            elif kind == "classic_mouth":
                make_mouth(t, out)
            else:
                make_interp(t, out)
        clips.append(Clip(out, 1, kind, t.stem))
    if variant == "crf28":
        re = []
        for c in clips:
            out = OUT / "crf28" / c.generator / f"{c.path.stem}.mp4"
            if not out.exists():
                reencode_crf(c.path, out)
            re.append(Clip(out, c.label, c.generator, c.source))
        clips = re
    return clips


if __name__ == "__main__":
    for variant in ("original", "crf28"):
        for c in build(variant):
            print(variant, c.label, c.generator, c.source, c.path.relative_to(ROOT.parent), sep="\t")
