"""Occluded faces at +-20 degrees of yaw: contact sheets and a seam measure, occluder kept still vs moved with the head.

For each portrait one PNG is written to <out>/<portrait>.png with two rows, the occluder kept where the photo has
it (``RenderConfig(occluder_follows_head=False)``, the old rule) and moved with the head pose (the new one):

    photo with the occluder mask (green) | yaw +20 | 0 | -20 | close-ups of the occluder at +20, at -20, and at
    +20 with the jaw open (0.15 IOD)

Seam measure, over a 25-frame commanded sinusoid (yaw 20 sin, pitch 5 cos, jaw 0.12 |sin|): along a band of
0.05 IOD just outside the occluder (where it is in that frame), how far apart in the photo the two layers read,
i.e. the jump in picture content across the occluder's edge. The face layer reads its warp (or the still photo
where the background composite keeps it); the occluder layer reads the photo unmoved (still) or through the
head-pose warp (moved); band pixels where the composite shows the still background are left out (an object
passing in front of the background is no seam). Printed per portrait, once with the jaw still ("head only") and
once talking: the mean jump in px, the share of band pixels that jump more than 2 px ("seam px"), and how many
pixels per frame the face layer shows of what it read from the occluder's place in the photo (the fill under
it, uncovered), "exposed". At rest all three are 0; a nose sliding over kept fingertips is a jump of many
pixels. Talking, the jaw moving behind a hand is a jump too, and a real one; so is the parallax between a hand
and the cheek behind it.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/occluder_turns.py [--portraits NAME ...] [--out /tmp/seam]
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
import torch  # noqa: E402

from generation import GenerationConfig, TalkingFaceGenerator, load_image  # noqa: E402
from generation.motion import MotionState  # noqa: E402
from generation.render import FaceRig, RenderConfig, Renderer, build_rig  # noqa: E402

MEDIA = ROOT.parent / "shared" / "media"
# The occlusion stress cases of issue 12 and two clear faces (the no-regression check).
DEFAULT = (
    "occluded_hand_over_mouth_",
    "hand_on_chin_",
    "bw_dark_skin_man_microphone_",
    "hat_over_eyes_",
    "woman_young_outdoor_",
    "astronaut_",
)
TILE = 256
DEG = np.pi / 180


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    out = tile.copy()
    cv2.rectangle(out, (0, 0), (out.shape[1], 18), (0, 0, 0), -1)
    cv2.putText(out, text, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def turns(rig: FaceRig) -> MotionState:
    """Five commanded frames: yaw +20, 0, -20 at the base's own opening, then +20 and -20 with the jaw open."""
    motion = MotionState.neutral(5)
    motion.yaw[:] = np.array([20, 0, -20, 20, -20]) * DEG
    motion.jaw_open[:] = rig.rest_gap
    motion.jaw_open[3:] = 0.15
    return motion


def sinusoid(rig: FaceRig, talking: bool, n: int = 25) -> MotionState:
    """A full +-20 degree yaw period with a small nod; the jaw at the base's opening, or talking."""
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    motion = MotionState.neutral(n)
    motion.yaw[:] = 20 * DEG * np.sin(2 * np.pi * t)
    motion.pitch[:] = 5 * DEG * np.cos(2 * np.pi * t)
    motion.jaw_open[:] = 0.12 * np.abs(np.sin(5 * np.pi * t)) if talking else rig.rest_gap
    return motion


def seam(renderer: Renderer, motion: MotionState) -> tuple[float, float, float]:
    """(mean jump in px, share of band pixels jumping > 2 px, exposed px per frame) over the frames of
    ``motion`` (see module doc)."""
    rig = renderer.rig
    warper = renderer._warper
    if rig.occluder_paste is None:
        return 0.0, 0.0, 0.0
    identity = warper.pixels[None].expand(len(motion), -1, -1, -1)  # (B, H, W, 2)
    face = warper.source_map(rig.deform(motion))  # (B, H, W, 2)
    # Where the composite keeps the still photo (background before and after) an occluder passes in front of
    # the background: no seam there, whatever moves. Only its edge against the person counts.
    body = torch.ones(face.shape[:3], dtype=torch.bool, device=face.device)
    if rig.person is not None:
        person = warper.sample(rig.person, face)[..., 0]  # (B, H, W)
        body = ((1.0 - person) * rig.background) <= 0.5
    occ_targets = renderer.occluder_targets(motion)
    still = rig.occlusion.alpha if occ_targets is None else rig.occlusion.still_alpha
    assert still is not None
    width = max(2, int(round(0.05 * rig.iod)))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 3, 2 * width + 3))
    moved = identity
    follow = torch.zeros(face.shape[:3], device=face.device)
    if occ_targets is not None:
        assert rig.occluder_layer is not None
        moved = warper.source_map(occ_targets)
        follow = warper.sample(rig.occluder_layer[:, 3:], moved)[..., 0]  # (B, H, W)
    # The occluder's place in the photo: face-layer pixels read from there show its fill.
    place = torch.from_numpy(rig.occlusion.mask.astype(np.float32))[None, None].to(face.device)
    from_occluder = warper.sample(place, face)[..., 0] > 0.5
    jumps: list[np.ndarray] = []
    exposed: list[int] = []
    for b in range(len(motion)):
        follows = (follow[b] > 0.5).cpu().numpy()
        mask = (still > 0.5) | follows
        band = cv2.dilate(mask.astype(np.uint8), disk[1:-1, 1:-1]).astype(bool) & ~mask
        # Next to the part that turns with the head, its warp is what the face must agree with; elsewhere the
        # photo's own place.
        near = torch.from_numpy(cv2.dilate(follows.astype(np.uint8), disk).astype(bool)).to(face.device)
        occluder = torch.where(near[..., None], moved[b], identity[b])
        band_t = torch.from_numpy(band).to(face.device)
        jump = (face[b] - occluder).norm(dim=-1)[band_t & body[b]]
        jumps.append(jump.cpu().numpy())
        visible = torch.from_numpy(~mask).to(face.device) & body[b]
        exposed.append(int((from_occluder[b] & visible).sum()))
    every = np.concatenate(jumps) if jumps else np.zeros(0)
    return float(every.mean()), float((every > 2.0).mean()), float(np.mean(exposed))


def close_up(frame: np.ndarray, centre: np.ndarray, half: int) -> np.ndarray:
    x, y = int(centre[0]), int(centre[1])
    size = frame.shape[0]
    x0, y0 = np.clip([x - half, y - half], 0, size - 2 * half)
    return cv2.resize(frame[y0 : y0 + 2 * half, x0 : x0 + 2 * half], (TILE, TILE), interpolation=cv2.INTER_CUBIC)


def row(face_image: np.ndarray, rig: FaceRig, label: str) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    renderer = Renderer(rig)
    motion = turns(rig)
    with torch.no_grad():
        frames = renderer.render(motion)
        measure = [seam(renderer, sinusoid(rig, talking)) for talking in (False, True)]
    masked = face_image.copy()
    mask = rig.occlusion.mask
    masked[mask] = (0.5 * masked[mask] + np.array([0, 120, 0])).astype(np.uint8)
    if mask.any():
        ys, xs = np.nonzero(mask)
        centre = np.array([(xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2])
        half = int(max(xs.max() - xs.min(), ys.max() - ys.min(), 1.2 * rig.iod) * 0.6)
    else:
        centre, half = rig.mouth_center, int(0.8 * rig.iod)
    half = min(half, rig.size // 2)
    tiles = [_label(cv2.resize(masked, (TILE, TILE)), label)]
    tiles += [_label(cv2.resize(frames[i], (TILE, TILE)), f"yaw {t:+d}") for i, t in enumerate((20, 0, -20))]
    tiles += [_label(close_up(frames[i], centre, half), text)
              for i, text in ((0, "+20 close"), (2, "-20 close"), (3, "+20 jaw .15"))]  # fmt: skip
    return np.hstack(tiles), measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--media", type=Path, default=MEDIA)
    parser.add_argument("--portraits", nargs="*", help="file-name prefixes in media/portraits")
    parser.add_argument("--out", type=Path, default=Path("/tmp/seam"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    prefixes = tuple(args.portraits or DEFAULT)
    portraits = [p for p in sorted((args.media / "portraits").iterdir()) if p.name.startswith(prefixes)]
    generator = TalkingFaceGenerator(GenerationConfig(size=512))
    args.out.mkdir(parents=True, exist_ok=True)
    head = f"{'jump px':>8} {'seam px':>8} {'exposed':>8}"
    print(f"{'':<55} {'head only':>26} {'talking':>26}")
    print(f"{'portrait':<48} {'rule':<6} {head} {head}")
    for path in portraits:
        t0 = time.perf_counter()
        prepared = generator.prepare(load_image(path.read_bytes(), max_pixels=50_000_000))
        rows = []
        for follows, label in ((False, "still"), (True, "moved")):
            rig = prepared.rig if follows else build_rig(prepared.face, RenderConfig(occluder_follows_head=False),
                                                         prepared.rig.device)  # fmt: skip
            image, measures = row(prepared.face.image, rig, f"occluder {label}")
            rows.append(image)
            cells = " ".join(f"{jump:>8.2f} {100 * share:>7.1f}% {shown:>8.0f}" for jump, share, shown in measures)
            print(f"{path.stem[:48]:<48} {label:<6} {cells}")
        out = args.out / f"{path.stem}.png"
        cv2.imwrite(str(out), cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR))
        print(f"    {out} ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
