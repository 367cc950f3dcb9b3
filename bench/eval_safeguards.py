"""All safeguard measurements of issue 5 in one table, written into bench/RESULTS.md.

Runs bench/eval_watermark.py, bench/eval_detector.py and bench/calibrate_identity.py (their full tables are kept),
then checks two things end to end itself: every public figure with two photos in ../shared/media is blocked from the
second photo after being blocked from the first, and `provatar detect` on a re-encoded, metadata-stripped output still
names the generation, its consent record and the original signed manifest.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/eval_safeguards.py [--quick] [--no-write]
    (or: provatar eval safeguards -- --quick)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MEDIA = ROOT.parent / "shared" / "media"
RESULTS = ROOT / "bench" / "RESULTS.md"
BEGIN, END = "<!-- eval_safeguards:begin -->", "<!-- eval_safeguards:end -->"

# Same person, two photos: block from the first, the second must be refused (face index for group photos).
BLOCK_PAIRS = [
    ("Barack Obama", "celebrities/obama_face_recognition.jpg", "celebrities/obama_small.jpg"),
    ("Barack Obama", "celebrities/obama_small.jpg", "celebrities/obama_face_recognition.jpg"),
    ("Angelina Jolie", "celebrities/angelina_jolie_facenet.jpg", "celebrities/angelina_jolie_deepface_img5.jpg"),
    ("Angelina Jolie", "celebrities/angelina_jolie_deepface_img5.jpg", "celebrities/angelina_jolie_facenet.jpg"),
    ("Joe Biden", "celebrities/biden_face_recognition.jpg", "celebrities/two_people_obama_biden.jpg"),
]


def run_script(name: str, args: list[str]) -> str:
    """Run a bench script, stream its progress (stderr) and return its stdout (markdown tables)."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / name), *args], stdout=subprocess.PIPE, text=True, check=False
    )
    print(f"[{name}: exit {proc.returncode} in {time.perf_counter() - t0:.0f} s]", file=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed with exit status {proc.returncode}")
    return proc.stdout


def table_rows(markdown: str) -> dict[str, list[str]]:
    """First cell -> other cells, for every markdown table row in the text."""
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def _rate(line: str, name: str) -> float:
    """The percentage after `name` in a line like `... (FAR 0.00%, FRR 0.00%)`."""
    m = re.search(rf"{name} ([0-9.]+)%", line)
    return float(m.group(1)) if m else float("inf")


def _first_number(text: str) -> float:
    m = re.search(r"[0-9]+(?:\.[0-9]+)?", text)
    return float(m.group(0)) if m else float("nan")


def check_block_list() -> list[tuple[str, bool, str]]:
    from sqlmodel import Session, SQLModel, create_engine

    import safeguards.consent  # noqa: F401  (tables)
    from generation import load_image
    from safeguards.blocklist import block_identity, closest_blocked
    from safeguards.consent import BlockedIdentityCreate
    from safeguards.identity import DEFAULT_BLOCK_MATCH_THRESHOLD, FaceAnalyzer
    from safeguards.reference_photos import ReferencePhoto

    analyzer = FaceAnalyzer()
    out = []
    for label, first, second in BLOCK_PAIRS:
        engine = create_engine("sqlite://")
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            a = (MEDIA / first).read_bytes()
            block_identity(
                session=session,
                blocked_in=BlockedIdentityCreate(label=label, reason="eval"),
                photo=ReferencePhoto(load_image(a, max_pixels=10**8), a),
                analyzer=analyzer,
                created_by="eval",
            )
            faces = analyzer.faces(load_image(MEDIA / second, max_pixels=10**8))
            hits = [
                closest_blocked(session=session, embedding=f.embedding, embedder=analyzer.embedder.name) for f in faces
            ]
            best = min((h[1] for h in hits if h), default=float("inf"))
        ok = best <= DEFAULT_BLOCK_MATCH_THRESHOLD
        out.append(
            (
                f"{label}: blocked from {Path(first).name}, caught in {Path(second).name}",
                ok,
                f"distance {best:.3f} (threshold {DEFAULT_BLOCK_MATCH_THRESHOLD})",
            )
        )
        engine.dispose()
    return out


def check_stripped_detection() -> tuple[bool, str]:
    """Generate through the real pipeline, re-encode at CRF 28 (no metadata survives), detect."""
    import av

    from service import consent_ops
    from service.detect import run_detection
    from service.pipeline import generate_file
    from service.runtime import Runtime, initialize
    from service.settings import Settings

    photo, audio = ROOT / "examples" / "astronaut_eileen_collins.png", ROOT / "examples" / "ljspeech_LJ001-0001.wav"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = Settings(data_dir=work / "data")
        initialize(settings)
        rt = Runtime(settings)
        subject, record = consent_ops.enroll(
            rt,
            name="eval",
            photos=[photo.read_bytes()],
            purposes=["eval"],
            clients=[],
            expires_days=1,
            evidence_sha256="e" * 64,
            actor="eval",
        )
        gen = generate_file(
            rt,
            subject_id=subject.id,
            purpose="eval",
            client_id="eval",
            photo_path=photo,
            audio_path=audio,
            output_path=work / "out.mp4",
            actor="eval",
        )
        stripped = work / "stripped.mp4"
        with av.open(str(work / "out.mp4")) as inp, av.open(str(stripped), "w") as out:
            vin = inp.streams.video[0]
            vout = out.add_stream("libx264", rate=25)
            vout.width, vout.height, vout.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
            vout.options = {"crf": "28"}
            for frame in inp.decode(vin):
                for packet in vout.encode(frame.reformat(format="yuv420p")):
                    out.mux(packet)
            for packet in vout.encode():
                out.mux(packet)
        report = run_detection(rt, stripped, actor="eval", request_id="eval").to_dict()
        rt.close()
    w = report["watermark"]
    ok = (
        not report["c2pa"]["present"]
        and w["generation_id"] == gen.id
        and w["consent_record_id"] == record.id
        and bool(w["stored_manifest"])
        and report["verdict"] == "provatar-generated"
    )
    return ok, (
        f"C2PA present: {report['c2pa']['present']}; watermark -> {w['generation_id']} (expected {gen.id}), "
        f"consent {w['consent_record_id']}, stored manifest {'found' if w['stored_manifest'] else 'missing'}, "
        f"classifier {report['classifier']['score']:.2f}, verdict {report['verdict']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer clips and random frames (a smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update bench/RESULTS.md")
    args = ap.parse_args()
    if not (MEDIA / "SOURCES.tsv").exists():
        sys.exit("needs ../shared/media")
    wm_args = (
        ["--clips", "3", "--random-frames", "1000"] if args.quick else ["--clips", "8", "--random-frames", "10000"]
    )
    watermark = run_script("eval_watermark.py", [*wm_args, "--media", str(MEDIA)])
    detector = run_script("eval_clip_classifier.py", ["--quick"] if args.quick else [])
    identity_text = run_script("calibrate_identity.py", ["--media", str(MEDIA)])
    blocks = check_block_list()
    stripped_ok, stripped_note = check_stripped_detection()

    wm = table_rows(watermark)
    # The robustness rows: "recovered | right id | ...": a row counts when the right generation id came back.
    recovery = {k: v[1] for k, v in wm.items() if len(v) > 1 and re.match(r"^\d+/\d+", v[0])}
    all_recovered = all(v.split()[0].split("/")[0] == v.split()[0].split("/")[1] for v in recovery.values())
    false_rows = {k: v[0] for k, v in wm.items() if k.startswith("false payloads")}
    embed = next((v[0] for k, v in wm.items() if k.startswith("embed 512x512 v3")), "?")
    det = table_rows(detector)
    own = det.get("own", ["?", "?", "?"])
    other = det.get("warp-only", ["?", "?", "?"])
    speed = next((line for line in detector.splitlines() if line.startswith("score_video on a 60 s")), "?")
    recommended = [line.strip() for line in identity_text.splitlines() if line.startswith("recommended")]
    identity_ok = all(_rate(line, "FAR") <= 0.1 and _rate(line, "FRR") <= 2.0 for line in recommended) and bool(
        recommended
    )

    summary = [
        (
            "payload recovered with the right id under every listed transformation and pair (incl. 0.5x/0.75x/1.5x)",
            all_recovered,
            f"{len(recovery)} rows, all recovered" if all_recovered else json.dumps(recovery),
        ),
        (
            "0 false payloads (real media, random frames)",
            all(v.startswith("0") for v in false_rows.values()),
            "; ".join(f"{k}: {v}" for k, v in false_rows.items()),
        ),
        ("embedding >= 200 fps at 512x512 (1 / 2 threads)", _first_number(embed) >= 200, embed),
        (
            "detector AUC >= 0.99, held-out own-generator clips, provenance stripped",
            own[1] not in ("?", "") and float(own[1]) >= 0.99,
            f"AUC {own[1]}, TPR {own[2]}",
        ),
        ("detector on another generator's clips", None, f"AUC {other[1]}, TPR {other[2]}"),
        ("detection of a 60 s clip <= 6 s", _first_number(speed.split("best", 1)[-1]) <= 6.0, speed),
        ("identity gate FAR <= 0.1 %, FRR <= 2 %", identity_ok, "; ".join(recommended)),
        *[(label, ok, note) for label, ok, note in blocks],
        ("detect on a re-encoded, stripped output names generation, consent, manifest", stripped_ok, stripped_note),
    ]
    lines = ["| criterion | met | measured |", "|---|---|---|"]
    for label, ok, note in summary:
        lines.append(f"| {label} | {'yes' if ok else ('no' if ok is False else 'see value')} | {note} |")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            BEGIN,
            f"## Safeguards evaluation (issue 5): `bench/eval_safeguards.py{' --quick' if args.quick else ''}`, {when}",
            "",
            *lines,
            "",
            "### Watermark",
            watermark.strip(),
            "",
            "### Detector",
            detector.strip(),
            "",
            "### Identity gate",
            "```",
            identity_text.strip()[-1800:],
            "```",
            END,
        ]
    )
    print(section)
    if not args.no_write:
        text = RESULTS.read_text()
        if BEGIN in text:
            text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        RESULTS.write_text(text)
        print(f"\nwrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
