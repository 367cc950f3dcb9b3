"""Small faces (issue 14): are faces pasted at 14-45 px counted, does the block list see them, what does it cost?

Two measurements, both on ../shared/media:

1. Every photo of portraits/, celebrities/, nonface/ and identities/: faces counted and the time `FaceAnalyzer.count`
   takes. Run it once with this checkout and once with an older one on PYTHONPATH to get the extra time per photo;
   an extra face on a photo that has none is a false face.
2. A face cropped from a celebrity photo, pasted at N px into the example portrait: is it counted, with what MTCNN
   score, and how far is its dlib embedding from that person's own reference (and from other people's)? The block
   list blocks at <= 0.45 and sends to review up to 0.62 (0.67 for a photo with a small face).

    PYTHONPATH=. python bench/bench_small_faces.py [--count-only]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO.parent / "shared" / "media"
EXAMPLE = REPO / "examples" / "astronaut_eileen_collins.png"
PEOPLE = {
    "obama": "celebrities/obama_face_recognition.jpg",
    "biden": "celebrities/biden_face_recognition.jpg",
    "jolie": "celebrities/angelina_jolie_facenet.jpg",
    "siegel": "celebrities/kate_siegel_facenet.jpg",
}


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def paste_face(
    base: np.ndarray,
    source: np.ndarray,
    source_box: tuple[float, float, float, float],
    face_px: int,
    at: tuple[int, int],
) -> np.ndarray:
    """`base` with the face in `source_box` of `source` (plus context around it) pasted at `at`, the face
    `face_px` wide."""
    left, top, right, bottom = source_box
    cx, cy, side = (left + right) / 2, (top + bottom) / 2, (right - left) * 1.6  # 1.6: hair, chin, some background
    crop = Image.fromarray(source).crop(
        (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
    )
    out_side = max(1, round(face_px * 1.6))
    canvas = Image.fromarray(base.copy())
    canvas.paste(crop.resize((out_side, out_side), Image.LANCZOS), at)
    return np.asarray(canvas)


def count_table(analyzer: object) -> None:
    photos = sorted(
        p
        for folder in ("portraits", "celebrities", "nonface", "identities")
        for p in (MEDIA / folder).rglob("*")
        if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
    )
    times: list[float] = []
    for path in photos:
        image = _rgb(path)
        t0 = time.perf_counter()
        n = analyzer.count(image)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t0)
        print(
            f"{path.relative_to(MEDIA)}\t{image.shape[1]}x{image.shape[0]}\t{n}\t{times[-1] * 1000:.0f} ms", flush=True
        )
    print(
        f"{len(photos)} photos: median {statistics.median(times) * 1000:.0f} ms, mean "
        f"{statistics.fmean(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms per photo"
    )


def paste_table(analyzer: object) -> None:
    from safeguards.identity import face_distance

    base = _rgb(EXAMPLE)
    refs = {}
    for name, rel in PEOPLE.items():
        image = _rgb(MEDIA / rel)
        face = analyzer.faces(image)[0]  # type: ignore[attr-defined]
        refs[name] = (image, face)
    print("pasted\tpx\tfaces\tbox px\tscore\tdistance to own reference / nearest other person")
    for name in ("obama", "jolie"):
        image, face = refs[name]
        for px in (12, 14, 16, 20, 25, 30, 35, 45):
            photo = paste_face(base, image, face.box.as_tuple(), px, (400, 380))
            faces = analyzer.faces(photo)  # type: ignore[attr-defined]
            pasted = [f for f in faces if f.box.left > 350 and f.box.top > 330]
            if not pasted:
                print(f"{name}\t{px}\t{len(faces)}\t-\t-\tnot found")
                continue
            f = pasted[0]
            own = face_distance(f.embedding, face.embedding)
            other = min(face_distance(f.embedding, o.embedding) for n, (_, o) in refs.items() if n != name)
            print(f"{name}\t{px}\t{len(faces)}\t{f.box.width:.1f}\t{f.score:.3f}\t{own:.3f} / {other:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count-only", action="store_true", help="only the per-photo count and time table")
    args = parser.parse_args()
    from safeguards.identity import FaceAnalyzer

    analyzer = FaceAnalyzer()
    analyzer.count(_rgb(EXAMPLE))  # warm
    count_table(analyzer)
    if not args.count_only:
        paste_table(analyzer)


if __name__ == "__main__":
    main()
