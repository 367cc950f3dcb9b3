"""Contact sheets that show the controls at work: one row per emotion, one row per gaze direction, one per head
distance; and a seed check (same seed -> identical video, other seed -> different motion).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/control_sheets.py [--photo P] [--out bench/out/controls]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from generation import GenerationConfig, TalkingFaceGenerator, load_audio, load_image  # noqa: E402
from generation.controls import Controls  # noqa: E402

ROWS: dict[str, list[tuple[str, dict[str, object]]]] = {
    "emotions": [
        (e, {"emotion": e, "emotion_intensity": 1.0}) for e in ("neutral", "happy", "sad", "angry", "surprised")
    ],
    "gaze": [
        ("camera", {}),
        ("left", {"gaze_x": -1.0}),
        ("right", {"gaze_x": 1.0}),
        ("up", {"gaze_y": -1.0}),
        ("down", {"gaze_y": 1.0}),
    ],
    "distance": [("close 0.7", {"head_distance": 0.7}), ("as photo 1.0", {}), ("far 1.6", {"head_distance": 1.6})],
}
TILE = 192
PICKS = (10, 25, 40, 55)  # frames of the 2.4 s clip shown per row


def render(photo: np.ndarray, audio, controls: dict[str, object]) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    gen = TalkingFaceGenerator(GenerationConfig(size=512, controls=Controls.from_mapping({"seed": 1, **controls})))
    return list(gen.frames(gen.prepare(photo), audio))


def sheet(rows: list[tuple[str, list[np.ndarray]]], path: Path) -> None:
    lines = []
    for label, frames in rows:
        tiles = [cv2.resize(frames[i], (TILE, TILE), interpolation=cv2.INTER_AREA) for i in PICKS]
        row = np.concatenate(tiles, axis=1)
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 3, cv2.LINE_AA)
        cv2.putText(row, label, (6, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (20, 20, 20), 1, cv2.LINE_AA)
        lines.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(lines, axis=0), cv2.COLOR_RGB2BGR))


def digest(frames: list[np.ndarray]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(f.tobytes())
    return h.hexdigest()[:16]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photo", type=Path, default=ROOT / "examples" / "astronaut_eileen_collins.png")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "controls")
    args = ap.parse_args()
    photo = load_image(args.photo, max_pixels=10**8)
    audio = load_audio(ROOT / "examples" / "ljspeech_LJ001-0001.wav").head(2.4)
    for name, variants in ROWS.items():
        rows = [(label, render(photo, audio, controls)) for label, controls in variants]
        sheet(rows, args.out / f"{name}.png")
        baseline = rows[0][1]
        diffs = ", ".join(
            f"{label}: {np.abs(f[0].astype(np.int16) - baseline[0].astype(np.int16)).mean():.2f}"
            for label, f in rows[1:]
        )
        print(f"{name}: {args.out / f'{name}.png'}  (mean |pixel difference| of frame 0 vs {rows[0][0]}: {diffs})")
    a, b, c = (digest(render(photo, audio, {"seed": s})) for s in (7, 7, 8))
    print(
        f"seed 7 twice: {a} / {b} ({'identical' if a == b else 'DIFFERENT'}); seed 8: {c} "
        f"({'differs' if c != a else 'SAME'})"
    )


if __name__ == "__main__":
    main()
