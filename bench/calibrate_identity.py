"""Calibrate the identity gate's thresholds on ../shared/media (dlib embeddings by default).

Builds same-person pairs (two photos of one person; a person's face inside a group photo vs a solo photo; a photo
vs augmented copies of itself: flip, crop, JPEG, brightness, downscale) and different-person pairs (every two
distinct people), prints the distance distributions and FAR/FRR at candidate thresholds, and recommends
`subject_match_threshold` and `block_match_threshold`.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/calibrate_identity.py [--media ../shared/media] [--json out.json]

FAR = share of different-person pairs at or under the threshold (a stranger accepted as the subject);
FRR = share of same-person pairs over it (the subject rejected). With a few dozen photos these are rough: a
FAR of 0 means "none of ~N pairs", i.e. an upper bound near 3/N at 95 % confidence, not zero.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from safeguards.identity import FaceAnalyzer, face_distance  # noqa: E402

# (person, file, which face: index after sorting faces left to right; None = the photo's only face)
PHOTOS: list[tuple[str, str, int | None]] = [
    ("angelina_jolie", "celebrities/angelina_jolie_facenet.jpg", None),
    ("angelina_jolie", "celebrities/angelina_jolie_deepface_img5.jpg", None),
    ("kate_siegel", "celebrities/kate_siegel_facenet.jpg", None),
    ("paul_rudd", "celebrities/paul_rudd_facenet.jpg", None),
    ("barack_obama", "celebrities/obama_face_recognition.jpg", None),
    ("barack_obama", "celebrities/obama_small.jpg", None),
    ("barack_obama", "celebrities/two_people_obama_biden.jpg", 0),
    ("joe_biden", "celebrities/biden_face_recognition.jpg", None),
    ("joe_biden", "celebrities/two_people_obama_biden.jpg", 1),
    ("eileen_collins", "portraits/astronaut_eileen_collins.png", None),
    ("man_young_d19", "portraits/man_young_frontal_d19.jpg", None),
    ("woman_smiling", "portraits/woman_smiling_happy.png", None),
    ("woman_outdoor", "portraits/woman_young_outdoor_stock-teen-8.jpg", None),
    ("woman_pair_left", "portraits/two_faces_women_dlib_2008_001009.jpg", 0),
    ("woman_pair_right", "portraits/two_faces_women_dlib_2008_001009.jpg", 1),
    ("mona_lisa", "portraits/painting_mona_lisa_s9.jpg", None),
    ("anime_yongen", "portraits/anime_yongen.jpeg", None),
]
CANDIDATES = (0.35, 0.40, 0.42, 0.45, 0.48, 0.50, 0.52, 0.55, 0.60)


@dataclass(frozen=True)
class Sample:
    person: str
    label: str
    embedding: np.ndarray


def _augmentations(image: np.ndarray) -> dict[str, np.ndarray]:
    """Everyday changes a re-uploaded photo goes through; each must still match the original."""
    pil = Image.fromarray(image)
    h, w = image.shape[:2]

    def jpeg(quality: int) -> np.ndarray:
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=quality)
        return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    return {
        "flip": np.ascontiguousarray(image[:, ::-1]),
        "crop10": np.ascontiguousarray(image[h // 20 : h - h // 20, w // 20 : w - w // 20]),
        "jpeg30": jpeg(30),
        "bright+30%": np.asarray(ImageEnhance.Brightness(pil).enhance(1.3)),
        "bright-30%": np.asarray(ImageEnhance.Brightness(pil).enhance(0.7)),
        "half-size": np.asarray(pil.resize((max(1, w // 2), max(1, h // 2)), Image.BILINEAR)),
        "rotate8": np.asarray(pil.rotate(8, resample=Image.BILINEAR, expand=False)),
    }


def _pick(analyzer: FaceAnalyzer, image: np.ndarray, index: int | None) -> np.ndarray | None:
    faces = sorted(analyzer.faces(image), key=lambda f: f.box.left)
    if index is None:
        return faces[0].embedding if len(faces) == 1 else None
    return faces[index].embedding if len(faces) > index else None


def collect(media: Path, analyzer: FaceAnalyzer) -> tuple[list[Sample], list[Sample], list[str], float]:
    """(originals, augmented copies, skipped notes, ms per photo for analyzer.faces)."""
    originals: list[Sample] = []
    augmented: list[Sample] = []
    skipped: list[str] = []
    timings: list[float] = []
    for person, rel, index in PHOTOS:
        path = media / rel
        if not path.is_file():
            skipped.append(f"{rel}: missing")
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        t0 = time.perf_counter()
        emb = _pick(analyzer, image, index)
        timings.append((time.perf_counter() - t0) * 1000)
        if emb is None:
            skipped.append(f"{rel}: face not found")
            continue
        originals.append(Sample(person, rel, emb))
        if index is not None:
            continue  # augment solo photos only (a group photo's crop may cut the other face)
        for name, aug in _augmentations(image).items():
            aug_emb = _pick(analyzer, aug, None)
            if aug_emb is None:
                skipped.append(f"{rel} [{name}]: face not found")
                continue
            augmented.append(Sample(person, f"{rel} [{name}]", aug_emb))
    return originals, augmented, skipped, float(np.median(timings)) if timings else float("nan")


def pairs(originals: list[Sample], augmented: list[Sample]) -> dict[str, list[tuple[str, str, float]]]:
    out: dict[str, list[tuple[str, str, float]]] = {"same_photos": [], "same_augmented": [], "different": []}
    for a, b in combinations(originals, 2):
        key = "same_photos" if a.person == b.person else "different"
        out[key].append((a.label, b.label, face_distance(a.embedding, b.embedding)))
    for aug in augmented:
        for orig in originals:
            d = face_distance(aug.embedding, orig.embedding)
            if orig.person == aug.person:
                out["same_augmented"].append((aug.label, orig.label, d))
            else:
                out["different"].append((aug.label, orig.label, d))
    return out


def _describe(values: list[float]) -> str:
    if not values:
        return "n=0"
    v = np.asarray(values)
    q = np.percentile(v, [0, 5, 50, 95, 100])
    return f"n={v.size:4d}  min {q[0]:.3f}  p5 {q[1]:.3f}  median {q[2]:.3f}  p95 {q[3]:.3f}  max {q[4]:.3f}"


def rates(same: list[float], diff: list[float], threshold: float) -> tuple[float, float]:
    """(FAR, FRR) at a threshold: accept when distance <= threshold."""
    far = float(np.mean(np.asarray(diff) <= threshold)) if diff else float("nan")
    frr = float(np.mean(np.asarray(same) > threshold)) if same else float("nan")
    return far, frr


def recommend(same: list[float], diff: list[float]) -> tuple[float, float]:
    """(subject threshold, block threshold).

    Subject: a stranger must never pass, so sit well under the closest different-person pair, at the midpoint
    between the farthest same-person pair and that closest stranger, but at least 0.05 below the stranger.
    Block: missing a protected person is the worse error, so allow more distance (closer to the nearest stranger,
    0.02 under it): a false block only sends a request to review.
    """
    max_same = max(same)
    min_diff = min(diff)
    subject = min((max_same + min_diff) / 2, min_diff - 0.05)
    block = max(subject, min_diff - 0.02)
    return math.floor(subject * 100) / 100, math.floor(block * 100) / 100


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--json", type=Path, help="also write the pairs and the table here")
    args = parser.parse_args(argv)
    if not (args.media / "celebrities").is_dir():
        print(f"no media at {args.media}", file=sys.stderr)
        return 2

    analyzer = FaceAnalyzer()
    t0 = time.perf_counter()
    originals, augmented, skipped, ms = collect(args.media, analyzer)
    groups = pairs(originals, augmented)
    same = [d for _, _, d in groups["same_photos"] + groups["same_augmented"]]
    diff = [d for _, _, d in groups["different"]]
    print(
        f"embedder {analyzer.embedder.name}; {len(originals)} photos, {len(augmented)} augmented copies; "
        f"analyzer.faces median {ms:.0f} ms/photo; total {time.perf_counter() - t0:.1f} s"
    )
    for note in skipped:
        print(f"  skipped {note}")
    print("\ndistances (L2):")
    for name, rows in groups.items():
        print(f"  {name:15s} {_describe([d for _, _, d in rows])}")
    print("\n  same-person photo pairs:")
    for a, b, d in sorted(groups["same_photos"], key=lambda r: -r[2]):
        print(f"    {d:.3f}  {a}  vs  {b}")
    print("  closest different-person pairs:")
    for a, b, d in sorted(groups["different"], key=lambda r: r[2])[:6]:
        print(f"    {d:.3f}  {a}  vs  {b}")
    print("  farthest augmented same-person pairs:")
    for a, b, d in sorted(groups["same_augmented"], key=lambda r: -r[2])[:4]:
        print(f"    {d:.3f}  {a}  vs  {b}")

    print(f"\n{'threshold':>9}  {'FAR':>8}  {'FRR':>8}   (FAR over {len(diff)} different, FRR over {len(same)} same)")
    table = []
    for t in CANDIDATES:
        far, frr = rates(same, diff, t)
        table.append({"threshold": t, "far": far, "frr": frr})
        print(f"{t:9.2f}  {far:8.2%}  {frr:8.2%}")
    subject, block = recommend(same, diff)
    far_s, frr_s = rates(same, diff, subject)
    far_b, frr_b = rates(same, diff, block)
    print(f"\nrecommended subject_match_threshold = {subject:.2f}  (FAR {far_s:.2%}, FRR {frr_s:.2%})")
    print(f"recommended block_match_threshold   = {block:.2f}  (FAR {far_b:.2%}, FRR {frr_b:.2%})")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "embedder": analyzer.embedder.name,
                    "pairs": {k: [list(r) for r in v] for k, v in groups.items()},
                    "table": table,
                    "recommended": {"subject_match_threshold": subject, "block_match_threshold": block},
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
