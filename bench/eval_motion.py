"""The motion stage alone, without rendering: how the mouth follows the audio and how much the head turns.

bench/eval_generation.py measures rendered video with dlib; this measures the MotionState the renderer is given, in
seconds instead of minutes, so the audio -> motion stage can be tuned on many clips (other languages, singing: any
audio or video file). The renderer reproduces the commanded opening closely (dlib's inner-lip gap on a render
against jaw_open: r 0.99 on woman_smiling_happy x emo__talk_mola_gt) and the commanded yaw about 1:1 (dlib yaw std
over commanded, least squares over 18 clips: 1.0-1.2), so these numbers predict the harness's.

Per clip and seed: lip r = correlation of jaw_open with the audio's 2-8 Hz envelope at the best lag within +-320 ms,
and that lag (negative = the lips lead), the same function as the harness; yaw std over the clip and the mean
head-rotation change per frame (degrees).

Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/eval_motion.py [AUDIO ...] [--seconds S] [--seeds N]
     [--lipsync auto|phonemes|acoustic]     (default audio: every clip in ../shared/media/speech)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.eval_generation import MEDIA, _av_sync  # noqa: E402
from generation import GenerationConfig, TalkingFaceGenerator, load_audio  # noqa: E402
from generation.controls import Controls  # noqa: E402


def measure(path: Path, seconds: float, seeds: int, lipsync: str) -> dict[str, float]:
    """Means over ``seeds`` seeds of lip r, lag (ms), yaw std and per-frame change (degrees) for one clip."""
    audio = load_audio(path).head(seconds)
    controls = Controls.from_mapping({"lipsync": lipsync})
    rs, lags, yaws, steps = [], [], [], []
    for seed in range(seeds):
        generator = TalkingFaceGenerator(GenerationConfig(seed=seed, controls=controls))
        motion = generator.motion(audio)
        grid = np.arange(len(motion)) / generator.config.fps
        _, lag, r = _av_sync(motion.jaw_open.astype(np.float64), audio, grid, float(generator.config.fps))
        angles = np.degrees(np.stack([motion.yaw, motion.pitch, motion.roll], axis=1).astype(np.float64))
        rs.append(r)
        lags.append(lag)
        yaws.append(float(angles[:, 0].std()))
        steps.append(float(np.linalg.norm(np.diff(angles, axis=0), axis=1).mean()))
    return {"lip_r": float(np.mean(rs)), "lag_ms": float(np.mean(lags)), "yaw_std": float(np.mean(yaws)),
            "deg_per_frame": float(np.mean(steps))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("audio", nargs="*", type=Path, help="audio or video files (default: media/speech)")
    parser.add_argument("--seconds", type=float, default=8.0, help="audio per clip (default 8 s)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per clip (default 3)")
    parser.add_argument("--lipsync", default="auto", choices=("auto", "phonemes", "acoustic"))
    args = parser.parse_args()
    paths = args.audio or sorted((MEDIA / "speech").iterdir())
    if not paths:
        raise SystemExit("no audio given and ../shared/media/speech is not there")
    rows = []
    print(f"{'clip':<40}{'lip r':>8}{'lag ms':>8}{'yaw std':>9}{'deg/fr':>8}")
    for path in paths:
        row = measure(path, args.seconds, args.seeds, args.lipsync)
        rows.append(row)
        print(f"{path.stem[:39]:<40}{row['lip_r']:>8.3f}{row['lag_ms']:>+8.0f}{row['yaw_std']:>9.2f}"
              f"{row['deg_per_frame']:>8.3f}")  # fmt: skip
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    print(f"{'median':<40}{med['lip_r']:>8.3f}{med['lag_ms']:>+8.0f}{med['yaw_std']:>9.2f}{med['deg_per_frame']:>8.3f}")


if __name__ == "__main__":
    main()
