"""Contact sheets of the hard photos: open mouths, covered mouths, a microphone, a hat over the eyes, a turned head.

For each stress portrait in ../shared/media/portraits a short clip is rendered from one speech file and one PNG
grid is written to bench/out/stress/<portrait>.png:

- row 1: the face crop, the occluder mask the rig found (green), and six frames spread over the clip;
- row 2: mouth close-ups of the three most closed frames (to look for tongue or teeth between the lips), then of
  the three widest openings (to look for interior drawn over a hand or a microphone).

Every tile is labelled with its frame number and the mouth opening the motion asked for. The rig's warnings (what
it did not animate, and why) are printed per portrait.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/stress_contact_sheets.py [--seconds 2.5]
        [--portraits NAME ...] [--speech NAME] [--out bench/out/stress] [--no-occlusion]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from generation import GenerationConfig, TalkingFaceGenerator, load_audio, load_image  # noqa: E402
from generation.render import RenderConfig  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "bench" / "out" / "stress"
# The stress cases of issue 12 (file-name prefixes in ../shared/media/portraits), plus the yawn that passed before.
STRESS = (
    "laughing_wide_open_mouth_",
    "laughing_eyes_closed_",
    "occluded_hand_over_mouth_",
    "hand_on_chin_",
    "bw_dark_skin_man_microphone_",
    "hat_over_eyes_",
    "turned_head_",
    "man_young_frontal_d19",
)
TILE = 224


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _mouth(frame: np.ndarray, centre: np.ndarray, half: int) -> np.ndarray:
    x, y = int(centre[0]), int(centre[1])
    size = frame.shape[0]
    x0, y0 = np.clip([x - half, y - half], 0, size - 2 * half)
    return cv2.resize(frame[y0 : y0 + 2 * half, x0 : x0 + 2 * half], (TILE, TILE), interpolation=cv2.INTER_CUBIC)


def sheet(photo_path: Path, speech: Path, seconds: float, out: Path, occlusion: bool) -> list[str]:
    """Render one portrait's clip and write its sheet. Returns the rig's warnings."""
    generator = TalkingFaceGenerator(GenerationConfig(size=512, fps=25, seed=0),
                                     render=RenderConfig(occlusion=occlusion))  # fmt: skip
    prepared = generator.prepare(load_image(photo_path.read_bytes(), max_pixels=50_000_000))
    audio = load_audio(speech).head(seconds)
    motion = generator.motion(audio)
    frames = list(generator.render_motion(prepared, motion))
    rig = prepared.rig
    jaw = np.asarray(motion.jaw_open)
    face = prepared.face.image
    masked = face.copy()
    mask = rig.occlusion.mask
    masked[mask] = (0.5 * masked[mask] + np.array([0, 120, 0])).astype(np.uint8)
    spread = np.linspace(0, len(frames) - 1, 6).round().astype(int)
    top = [_label(cv2.resize(face, (TILE, TILE)), "photo"), _label(cv2.resize(masked, (TILE, TILE)), "occluder")]
    top += [_label(cv2.resize(frames[i], (TILE, TILE)), f"#{i} jaw {jaw[i]:.2f}") for i in spread]
    order = np.argsort(jaw, kind="stable")
    closed, widest = order[:3], order[::-1][:3]
    centre, half = rig.mouth_center, int(0.6 * rig.iod)
    bottom = [_label(_mouth(face, centre, half), "photo mouth")]
    bottom += [_label(_mouth(frames[i], centre, half), f"closed #{i} {jaw[i]:.2f}") for i in closed]
    bottom += [_label(_mouth(frames[i], centre, half), f"open #{i} {jaw[i]:.2f}") for i in widest]
    bottom.append(np.zeros_like(bottom[0]))
    grid = np.vstack([np.hstack(top), np.hstack(bottom)])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    return prepared.warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--portraits", nargs="*", help="portrait file names (default: the stress cases)")
    parser.add_argument("--speech", default="ljspeech_LJ001-0001.wav", help="speech file in media/speech")
    parser.add_argument("--seconds", type=float, default=2.5)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--no-occlusion", action="store_true", help="render without occlusion handling")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    if not (args.media / "portraits").is_dir():
        raise SystemExit(f"{args.media}/portraits is not there: the stress sheets need ../shared/media")
    portraits = sorted((args.media / "portraits").iterdir())
    if args.portraits:
        portraits = [p for p in portraits if p.name in args.portraits or p.stem in args.portraits]
    else:
        portraits = [p for p in portraits if p.name.startswith(STRESS)]
    speech = args.media / "speech" / args.speech
    for photo in portraits:
        t0 = time.perf_counter()
        out = args.out / f"{photo.stem}.png"
        warnings = sheet(photo, speech, args.seconds, out, occlusion=not args.no_occlusion)
        print(f"{out}  ({time.perf_counter() - t0:.1f} s)")
        for warning in warnings:
            print(f"    warning: {warning}")


if __name__ == "__main__":
    main()
