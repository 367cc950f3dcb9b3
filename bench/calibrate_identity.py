"""Calibrate the identity gate's bands on ../shared/media with a person-disjoint split, and check the block list.

People: `identities/` (several photos each of eleven people), `celebrities/` (public figures, some with two photos;
Obama's photos there join his `identities/` folder) and a few single portraits of other people (negatives only).
That is 21 people and 64 faces: far too few to promise an error rate, so the thresholds are set to fail safe
(toward human review) by a fixed rule, and the rule is judged on people it never saw:

1. The people are shuffled (fixed seed) into K folds. For each fold, the rule picks the four thresholds from the
   pairs of the OTHER folds' people, and the held-out fold's pairs (both photos of held-out people) are classified:
   for the block list, blocked outright / review / passed; for the subject, accepted / review / rejected.
2. Rule (`tune`): block outright only 0.05 under the closest different-person pair seen; review up to 0.10 past
   the farthest same-person pair seen; accept a subject only 0.08 under the closest different-person pair; call it
   someone else only 0.05 past the farthest same-person pair. Poor photos widen both review bands (gate logic).
3. The thresholds to ship are the same rule on all people, rounded in the safe direction.

It also plays the issue's scenario with the shipped thresholds: block a public figure from one photo (or from all
their other photos: nearest + mean) and enroll or generate from another, for every pair; block every person and probe
with every other person's photos. FAR = a different person accepted (subject) or blocked outright (block list);
FRR = the same person rejected outright (subject) or passed (block list). Intervals are Clopper-Pearson 95 %.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/calibrate_identity.py [--media ../shared/media] [--folds 4]
        [--plot bench/identity_distances.png] [--json out.json] [--latency]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from itertools import combinations, permutations
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.stats import beta

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from safeguards.identity import (  # noqa: E402
    DEFAULT_POOR_PHOTO_MARGIN,
    Band,
    DlibEmbedder,
    FaceAnalyzer,
    IdentityThresholds,
    face_distance,
)
from safeguards.likeness import score_references  # noqa: E402

# Celebrities and portraits: (person, file, which face left to right; None = the only face). Obama joins identities/.
EXTRA_PHOTOS: list[tuple[str, str, int | None]] = [
    ("angelina_jolie", "celebrities/angelina_jolie_facenet.jpg", None),
    ("angelina_jolie", "celebrities/angelina_jolie_deepface_img5.jpg", None),
    ("kate_siegel", "celebrities/kate_siegel_facenet.jpg", None),
    ("paul_rudd", "celebrities/paul_rudd_facenet.jpg", None),
    ("obama", "celebrities/obama_face_recognition.jpg", None),
    ("obama", "celebrities/obama_small.jpg", None),
    ("obama", "celebrities/two_people_obama_biden.jpg", 0),
    ("joe_biden", "celebrities/biden_face_recognition.jpg", None),
    ("joe_biden", "celebrities/two_people_obama_biden.jpg", 1),
    ("eileen_collins", "portraits/astronaut_eileen_collins.png", None),
    ("man_young_d19", "portraits/man_young_frontal_d19.jpg", None),
    ("woman_smiling", "portraits/woman_smiling_happy.png", None),
    ("woman_outdoor", "portraits/woman_young_outdoor_stock-teen-8.jpg", None),
    ("woman_pair_left", "portraits/two_faces_women_dlib_2008_001009.jpg", 0),
    ("woman_pair_right", "portraits/two_faces_women_dlib_2008_001009.jpg", 1),
]
NOT_PUBLIC = {
    "eileen_collins",
    "man_young_d19",
    "woman_smiling",
    "woman_outdoor",
    "woman_pair_left",
    "woman_pair_right",
}
OLD_BLOCK_THRESHOLD = 0.50  # the single plain-dlib threshold before issue 15
ISSUE_CASE = 0.551  # issue 15: two photos of one actress at this plain-dlib distance got through


@dataclass(frozen=True)
class Sample:
    person: str
    label: str
    fused: np.ndarray  # the gate's embedding (fused dlib views)
    plain: np.ndarray  # the 5-point descriptor alone (the gate before issue 15)
    poor: bool
    issues: tuple[str, ...]


def _photos(media: Path) -> list[tuple[str, str, int | None]]:
    out: list[tuple[str, str, int | None]] = []
    for folder in sorted(p for p in (media / "identities").iterdir() if p.is_dir()):
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"}:
                out.append((folder.name, str(f.relative_to(media)), None))
    return out + EXTRA_PHOTOS


def collect(media: Path, analyzer: FaceAnalyzer, plain: DlibEmbedder) -> tuple[list[Sample], list[str], list[float]]:
    """(samples, skipped notes, ms per photo for analyzer.faces)."""
    samples: list[Sample] = []
    skipped: list[str] = []
    timings: list[float] = []
    for person, rel, index in _photos(media):
        path = media / rel
        if not path.is_file():
            skipped.append(f"{rel}: missing")
            continue
        image = np.asarray(Image.open(path).convert("RGB"))
        if max(image.shape[:2]) <= 160:
            # dlib's aligned 150x150 chips fill the frame; MTCNN needs some context around a face to find it.
            pad = image.shape[1] // 2
            image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
        t0 = time.perf_counter()
        faces = sorted(analyzer.faces(image), key=lambda f: f.box.left)
        timings.append((time.perf_counter() - t0) * 1000)
        if index is None and len(faces) != 1 or index is not None and len(faces) <= index:
            skipped.append(f"{rel}: {len(faces)} faces")
            continue
        face = faces[index or 0]
        issues = face.quality.issues if face.quality else ()
        samples.append(Sample(person, rel, face.embedding, plain.embed(image, face.box), bool(issues), tuple(issues)))
    return samples, skipped, timings


def _augmentations(image: np.ndarray) -> dict[str, np.ndarray]:
    """Everyday changes a re-uploaded photo goes through."""
    from PIL import ImageEnhance

    pil = Image.fromarray(image)
    h, w = image.shape[:2]
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=30)
    return {
        "flip": np.ascontiguousarray(image[:, ::-1]),
        "crop10": np.ascontiguousarray(image[h // 20 : h - h // 20, w // 20 : w - w // 20]),
        "jpeg30": np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")),
        "bright+30%": np.asarray(ImageEnhance.Brightness(pil).enhance(1.3)),
        "half-size": np.asarray(pil.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BILINEAR)),
        "rotate8": np.asarray(pil.rotate(8, resample=Image.Resampling.BILINEAR, expand=False)),
    }


def augmented(media: Path, analyzer: FaceAnalyzer, samples: list[Sample]) -> list[Sample]:
    """Copies of each solo public-figure photo (not the padded chips) under `_augmentations`; never used to tune."""
    out: list[Sample] = []
    for s in samples:
        if s.person in NOT_PUBLIC or "two_people" in s.label or "identities/john_" in s.label:
            continue
        image = np.asarray(Image.open(media / s.label).convert("RGB"))
        for name, copy in _augmentations(image).items():
            faces = analyzer.faces(copy)
            if len(faces) != 1:
                continue
            issues = faces[0].quality.issues if faces[0].quality else ()
            out.append(
                Sample(
                    s.person, f"{s.label} [{name}]", faces[0].embedding, faces[0].embedding, bool(issues), tuple(issues)
                )
            )
    return out


def pair_sets(samples: list[Sample], people: set[str], view: str = "fused") -> tuple[list, list]:
    """(same, different) pairs among `people`: (distance, a, b)."""
    same, diff = [], []
    for a, b in combinations([s for s in samples if s.person in people], 2):
        d = face_distance(getattr(a, view), getattr(b, view))
        (same if a.person == b.person else diff).append((d, a, b))
    return same, diff


def tune(same: list[float], diff: list[float]) -> IdentityThresholds:
    """The fail-safe rule (module docstring), rounded in the safe direction to 2 decimals."""
    floor = lambda x: math.floor(x * 100) / 100  # noqa: E731
    ceil = lambda x: math.ceil(x * 100) / 100  # noqa: E731
    max_same, min_diff = max(same), min(diff)
    block = Band(floor(min_diff - 0.05), max(floor(min_diff - 0.05), ceil(max_same + 0.10)))
    subject_match = floor(min_diff - 0.08)
    subject = Band(subject_match, max(subject_match, ceil(max_same + 0.05)))
    return IdentityThresholds(subject=subject, block=block, poor_photo_margin=DEFAULT_POOR_PHOTO_MARGIN)


def _bands(th: IdentityThresholds, a: Sample, b: Sample) -> IdentityThresholds:
    return th.for_photo(a.poor or b.poor)


def ci(k: int, n: int) -> tuple[float, float]:
    """Clopper-Pearson 95 % interval of k successes in n."""
    if n == 0:
        return (float("nan"), float("nan"))
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def _rate(k: int, n: int) -> str:
    lo, hi = ci(k, n)
    return f"{k:3d}/{n:<4d} {100 * k / max(n, 1):5.1f} % [{100 * lo:4.1f}, {100 * hi:4.1f}]"


def crossval(samples: list[Sample], folds: int, seed: int, view: str = "fused") -> dict[str, object]:
    people = sorted({s.person for s in samples})
    rng = random.Random(seed)
    rng.shuffle(people)
    groups = [set(people[i::folds]) for i in range(folds)]
    counts: dict[str, int] = defaultdict(int)
    per_fold = []
    for i, test in enumerate(groups):
        train = set(people) - test
        tr_same, tr_diff = pair_sets(samples, train, view)
        th = tune([d for d, *_ in tr_same], [d for d, *_ in tr_diff])
        te_same, te_diff = pair_sets(samples, test, view)
        per_fold.append({"fold": i, "test_people": sorted(test), "thresholds": _th_dict(th)})
        for d, a, b in te_same:
            bands = _bands(th, a, b)
            counts["same"] += 1
            counts[f"same_block_{bands.block.classify(d)}"] += 1
            counts[f"same_subject_{bands.subject.classify(d)}"] += 1
        for d, a, b in te_diff:
            bands = _bands(th, a, b)
            counts["diff"] += 1
            counts[f"diff_block_{bands.block.classify(d)}"] += 1
            counts[f"diff_subject_{bands.subject.classify(d)}"] += 1
    return {"counts": dict(counts), "folds": per_fold}


def _th_dict(th: IdentityThresholds) -> dict[str, float]:
    return {
        "subject_match": th.subject.match,
        "subject_review": th.subject.review,
        "block_match": th.block.match,
        "block_review": th.block.review,
    }


def scenario(samples: list[Sample], th: IdentityThresholds) -> dict[str, object]:
    """Block from one photo (or from all other photos of the person), enroll/generate from another."""
    by_person: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_person[s.person].append(s)
    out: dict[str, list] = {"same_single": [], "same_multi": [], "diff_single": []}
    for person, photos in by_person.items():
        if person in NOT_PUBLIC or len(photos) < 2:
            continue
        for ref, probe in permutations(photos, 2):
            d = score_references(ref.fused[None, :], probe.fused).block_distance
            verdict = th.for_photo(probe.poor).block.classify(d)
            out["same_single"].append((person, ref.label, probe.label, d, verdict))
        for probe in photos:
            refs = np.stack([p.fused for p in photos if p is not probe])  # (N-1, 128)
            d = score_references(refs, probe.fused).block_distance
            verdict = th.for_photo(probe.poor).block.classify(d)
            out["same_multi"].append((person, "all others", probe.label, d, verdict))
    for ref, probe in permutations(samples, 2):
        if ref.person != probe.person:
            d = face_distance(ref.fused, probe.fused)
            verdict = th.for_photo(probe.poor).block.classify(d)
            out["diff_single"].append((ref.person, ref.label, probe.label, d, verdict))
    return out


def latency(repeats: int = 5) -> list[tuple[str, float, float]]:
    """Median ms of the policy step's measurement on the example photo, per embedder setting: analyzer.faces alone,
    and the whole gate (faces + subject + a 50-entry, 150-photo block list + consent + approvals) + Cedar."""
    from datetime import UTC, datetime

    from sqlmodel import Session, SQLModel, create_engine

    from policies import evaluate_generation
    from safeguards.consent import BlockedIdentity, BlockedReference, Subject, SubjectReference
    from safeguards.gate import assess_generation_request

    image = np.asarray(Image.open(REPO / "examples" / "astronaut_eileen_collins.png").convert("RGB"))
    rng = np.random.default_rng(0)
    now = datetime.now(UTC)
    engine = create_engine("sqlite://")
    SQLModel.metadata.create_all(engine)
    with Session(engine) as session:
        subject = Subject(display_name="Eileen Collins", created_at=now, created_by="bench")
        session.add(subject)
        session.flush()
        ref = [float(v) for v in rng.normal(0, 0.09, 128)]
        session.add(
            SubjectReference(
                subject_id=subject.id, embedding=ref, embedder="dlib_resnet_v1", photo_sha256="0" * 64, created_at=now
            )
        )
        for i in range(50):
            row = BlockedIdentity(
                label=f"p{i}",
                reason="bench",
                embedding=ref,
                embedder="dlib_resnet_v1",
                photo_sha256="0" * 64,
                created_at=now,
                created_by="bench",
            )
            session.add(row)
            session.flush()
            for _ in range(3):
                emb = [float(v) for v in rng.normal(0, 0.09, 128)]
                session.add(
                    BlockedReference(
                        blocked_id=row.id,
                        embedding=emb,
                        embedder="dlib_resnet_v1",
                        photo_sha256="0" * 64,
                        created_at=now,
                    )
                )
        session.commit()
        subject_id = subject.id
    results = []
    for name, embedder in (
        ("plain 5-point, 1 jitter (before)", DlibEmbedder(fuse=False)),
        ("fused 3 views, 1 jitter (default)", DlibEmbedder(fuse=True)),
        ("plain 5-point, 10 jitters", DlibEmbedder(fuse=False, num_jitters=10)),
        ("fused 3 views, 10 jitters", DlibEmbedder(fuse=True, num_jitters=10)),
    ):
        analyzer = FaceAnalyzer(embedder)
        analyzer.faces(image)  # warm
        faces_ms, gate_ms = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            analyzer.faces(image)
            faces_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            with Session(engine) as session:
                facts = assess_generation_request(
                    session=session,
                    analyzer=analyzer,
                    photo_rgb=image,
                    subject_id=subject_id,
                    client_id="c",
                    purpose="p",
                    audio_duration_s=5.0,
                    max_audio_s=120.0,
                    thresholds=IdentityThresholds(),
                    now=datetime.now(UTC),
                    photo_sha256="1" * 64,
                )
            evaluate_generation(facts)
            gate_ms.append((time.perf_counter() - t0) * 1000)
        results.append((name, statistics.median(faces_ms), statistics.median(gate_ms)))
    return results


def plot(path: Path, same: list[float], diff: list[float], th: IdentityThresholds, plain: tuple) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[dev]'); no plot"
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    bins = np.linspace(0.0, 1.2, 61)
    for ax, (title, s, d) in zip(
        axes, (("fused dlib views (the gate now)", same, diff), ("plain 5-point dlib (before)", *plain)), strict=True
    ):
        ax.hist(s, bins=bins, alpha=0.6, label=f"same person (n={len(s)})", color="tab:green")
        ax.hist(d, bins=bins, alpha=0.6, label=f"different people (n={len(d)})", color="tab:red")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_ylabel("pairs")
        ax.axvline(OLD_BLOCK_THRESHOLD, color="grey", linestyle=":", label="old block threshold 0.50")
    ax = axes[0]
    ax.axvspan(th.block.match, th.block.review, color="orange", alpha=0.15, label="block review band")
    ax.axvline(th.subject.match, color="blue", linestyle="--", label=f"subject match {th.subject.match:.2f}")
    ax.axvline(th.block.match, color="black", linestyle="--", label=f"block outright {th.block.match:.2f}")
    ax.legend(fontsize=7)
    axes[1].legend(fontsize=7)
    axes[1].set_xlabel("L2 distance between two faces")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=REPO / "bench" / "identity_distances.png")
    parser.add_argument("--json", type=Path, help="also write the pairs and the tables here")
    parser.add_argument("--latency", action="store_true", help="also time analyzer.faces per embedder setting")
    parser.add_argument("--augment", action="store_true", help="also probe with re-uploaded copies (slow)")
    args = parser.parse_args(argv)
    if not (args.media / "identities").is_dir():
        print(f"no media at {args.media} (needs identities/ and celebrities/)", file=sys.stderr)
        return 2

    analyzer = FaceAnalyzer()  # the gate's default: fused dlib views, 1 jitter
    t0 = time.perf_counter()
    samples, skipped, timings = collect(args.media, analyzer, DlibEmbedder(fuse=False))
    people = {s.person for s in samples}
    multi = sorted(p for p in people if sum(s.person == p for s in samples) > 1)
    print(
        f"{len(samples)} faces of {len(people)} people ({len(multi)} with several photos); "
        f"analyzer.faces median {statistics.median(timings):.0f} ms/photo; {time.perf_counter() - t0:.0f} s"
    )
    for note in skipped:
        print(f"  skipped {note}")
    poor = [f"{s.label} ({','.join(s.issues)})" for s in samples if s.poor]
    print(f"  poor photos (bands widened by {DEFAULT_POOR_PHOTO_MARGIN}): {len(poor)}: {'; '.join(poor) or 'none'}")

    same, diff = pair_sets(samples, people)
    p_same, p_diff = pair_sets(samples, people, "plain")
    print("\ndistances (L2)      same person                          different people")
    for name, s, d in (("fused (now)", same, diff), ("plain (before)", p_same, p_diff)):
        sv, dv = [x for x, *_ in s], [x for x, *_ in d]
        print(
            f"  {name:15s} n={len(sv):3d} median {np.median(sv):.3f} max {max(sv):.3f}   "
            f"n={len(dv):4d} min {min(dv):.3f} p1 {np.percentile(dv, 1):.3f} median {np.median(dv):.3f}"
        )
    print("  farthest same-person pairs (fused | plain):")
    plain_of = {(a.label, b.label): d for d, a, b in p_same}
    for d, a, b in sorted(same, key=lambda r: -r[0])[:5]:
        print(f"    {d:.3f} | {plain_of[(a.label, b.label)]:.3f}  {a.label}  vs  {b.label}")
    print("  closest different-person pairs (fused):")
    for d, a, b in sorted(diff, key=lambda r: r[0])[:4]:
        print(f"    {d:.3f}  {a.label}  vs  {b.label}")

    cv = crossval(samples, args.folds, args.seed)
    c = cv["counts"]
    assert isinstance(c, dict)
    print(f"\nperson-disjoint {args.folds}-fold: thresholds tuned on the other folds' people, pairs of held-out people")
    for fold in cv["folds"]:  # type: ignore[attr-defined]
        t = fold["thresholds"]
        print(
            f"  fold {fold['fold']}: subject ({t['subject_match']:.2f}, {t['subject_review']:.2f}]  "
            f"block ({t['block_match']:.2f}, {t['block_review']:.2f}]  held out: {', '.join(fold['test_people'])}"
        )
    ns, nd = c.get("same", 0), c.get("diff", 0)
    print("  block list   same person:  passed (FRR) " + _rate(c.get("same_block_no_match", 0), ns))
    print("                             review      " + _rate(c.get("same_block_review", 0), ns))
    print("               different:    blocked outright (false block) " + _rate(c.get("diff_block_match", 0), nd))
    print("                             review      " + _rate(c.get("diff_block_review", 0), nd))
    print("  subject      different:    accepted (FAR) " + _rate(c.get("diff_subject_match", 0), nd))
    print("                             review      " + _rate(c.get("diff_subject_review", 0), nd))
    print("               same person:  rejected outright (FRR) " + _rate(c.get("same_subject_no_match", 0), ns))
    print("                             review      " + _rate(c.get("same_subject_review", 0), ns))

    # One line per band in the form bench/eval_safeguards.py reads: held-out error rates of the rule.
    pct = lambda k: 100 * c.get(k, 0) / max(ns if k.startswith("same") else nd, 1)  # noqa: E731
    default = IdentityThresholds()
    print(
        f"recommended subject band ({default.subject.match:.2f}, {default.subject.review:.2f}]  "
        f"(FAR {pct('diff_subject_match'):.2f}%, FRR {pct('same_subject_no_match'):.2f}%; review "
        f"{pct('same_subject_review'):.2f}% of same, {pct('diff_subject_review'):.2f}% of different; "
        "held-out rates of the rule that set the band)"
    )
    print(
        f"recommended block band ({default.block.match:.2f}, {default.block.review:.2f}]  "
        f"(FAR {pct('diff_block_match'):.2f}%, FRR {pct('same_block_no_match'):.2f}%; review "
        f"{pct('same_block_review'):.2f}% of same, {pct('diff_block_review'):.2f}% of different; "
        "held-out rates of the rule; "
        "FAR = unrelated person blocked outright, FRR = same person passed)"
    )
    pc = crossval(samples, args.folds, args.seed, "plain")["counts"]
    assert isinstance(pc, dict)
    print(
        "  plain dlib (before) under the same rule and folds: block passed "
        f"{pc.get('same_block_no_match', 0)}/{ns}, review same {pc.get('same_block_review', 0)}/{ns}, "
        f"false block {pc.get('diff_block_match', 0)}/{nd}, review different {pc.get('diff_block_review', 0)}/{nd}; "
        f"subject FAR {pc.get('diff_subject_match', 0)}/{nd}, review same {pc.get('same_subject_review', 0)}/{ns}"
    )

    shipped = tune([d for d, *_ in same], [d for d, *_ in diff])
    print(
        f"\nthresholds from all {len(people)} people (the rule, safe rounding): subject "
        f"({shipped.subject.match:.2f}, {shipped.subject.review:.2f}]  block ({shipped.block.match:.2f}, "
        f"{shipped.block.review:.2f}]"
    )
    print(
        f"shipped defaults (safeguards/identity.py):                   subject ({default.subject.match:.2f}, "
        f"{default.subject.review:.2f}]  block ({default.block.match:.2f}, {default.block.review:.2f}]"
    )

    sc = scenario(samples, default)
    print("\nscenario with the shipped defaults: block a public figure, then enroll/generate from another photo")
    for key, title in (
        ("same_single", "blocked from ONE other photo"),
        ("same_multi", "blocked from ALL other photos"),
    ):
        rows = sc[key]
        tally = {v: sum(r[4] == v for r in rows) for v in ("match", "review", "no_match")}  # type: ignore[index]
        print(
            f"  {title:30s} {len(rows):3d} probes: blocked {tally['match']}, review {tally['review']}, "
            f"PASSED {tally['no_match']}"
        )
        for r in rows:
            if r[4] == "no_match":  # type: ignore[index]
                print(f"    PASSED {r[3]:.3f}  {r[1]} -> {r[2]}")  # type: ignore[index]
    rows = sc["diff_single"]
    tally = {v: sum(r[4] == v for r in rows) for v in ("match", "review", "no_match")}  # type: ignore[index]
    print(
        f"  unrelated person probed      {len(rows):4d} probes: BLOCKED OUTRIGHT {tally['match']}, "
        f"review {tally['review']} ({100 * tally['review'] / len(rows):.2f} %), passed {tally['no_match']}"
    )
    for r in sorted((r for r in rows if r[4] != "no_match"), key=lambda r: r[3])[:6]:  # type: ignore[index]
        print(f"    {r[4]:6s} {r[3]:.3f}  {r[1]} blocked, {r[2]} probed")  # type: ignore[index]

    print(f"\nthe old failure: same-person pairs the old gate passed (plain dlib > {OLD_BLOCK_THRESHOLD:.2f}), now:")
    fused_of = {(a.label, b.label): (d, a, b) for d, a, b in same}
    old_missed = [(d, a, b) for d, a, b in p_same if d > OLD_BLOCK_THRESHOLD]
    for d, a, b in sorted(old_missed, key=lambda r: -r[0]):
        fd, fa, fb = fused_of[(a.label, b.label)]
        verdict = _bands(default, fa, fb).block.classify(fd)
        print(f"    plain {d:.3f} -> fused {fd:.3f}: {verdict:8s} {a.label} vs {b.label}")
    if not old_missed:
        print("    none in this media")
    print(
        f"  issue 15's actress pair (plain {ISSUE_CASE}, not in ../shared/media): a face at {ISSUE_CASE} from a "
        f"blocked reference is '{default.block.classify(ISSUE_CASE)}' now (fused distances run lower than plain)"
    )

    if args.augment:
        copies = augmented(args.media, analyzer, samples)
        tally: dict[str, int] = defaultdict(int)
        for copy in copies:
            for orig in samples:
                d = face_distance(copy.fused, orig.fused)
                bands = default.for_photo(copy.poor or orig.poor)
                kind = "same" if orig.person == copy.person else "diff"
                tally[f"{kind}"] += 1
                tally[f"{kind}_block_{bands.block.classify(d)}"] += 1
                tally[f"{kind}_subject_{bands.subject.classify(d)}"] += 1
        n_same, n_diff = tally["same"], tally["diff"]
        print(f"\nre-uploaded copies ({len(copies)}: flip, 10 % crop, JPEG q30, +30 % brightness, half size, 8 deg)")
        print(
            f"  vs every photo of the same person ({n_same}): block passed {tally['same_block_no_match']}, "
            f"review {tally['same_block_review']}; subject accepted {tally['same_subject_match']}, review "
            f"{tally['same_subject_review']}, rejected {tally['same_subject_no_match']}"
        )
        print(
            f"  vs every other person ({n_diff}): blocked outright {tally['diff_block_match']}, review "
            f"{tally['diff_block_review']}; subject accepted {tally['diff_subject_match']}"
        )

    plain = ([d for d, *_ in p_same], [d for d, *_ in p_diff])
    print("\nhistogram plot:", plot(args.plot, [d for d, *_ in same], [d for d, *_ in diff], default, plain))

    if args.latency:
        print("\npolicy step on examples/astronaut_eileen_collins.png, median of 5 (ms):")
        print(f"  {'embedder':36s} {'faces':>7s} {'gate+policy':>12s}")
        for name, faces_ms, gate_ms in latency():
            print(f"  {name:36s} {faces_ms:7.0f} {gate_ms:12.0f}")

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "crossval": cv,
                    "pairs": {
                        "same": [[d, a.label, b.label] for d, a, b in same],
                        "different": [[d, a.label, b.label] for d, a, b in diff],
                    },
                    "shipped": _th_dict(default),
                    "rule_on_all": _th_dict(shipped),
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
