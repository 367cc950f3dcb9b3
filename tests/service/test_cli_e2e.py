"""End to end through the `provatar` CLI: init, consent, generate, detect, audit — and every denial and bad input."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import c2pa
import pytest

from generation import probe_video
from tests.service.conftest import (
    Cli,
    flip_byte_in_mdat,
    huge_png_header,
    long_silence_wav,
    no_face_photo,
    reencode_x264,
    short_speech,
    two_face_photo,
)

pytestmark = pytest.mark.slow


@dataclass
class Installed:
    data_dir: Path
    subject: str
    consent: str
    audio: Path
    video: Path
    generation_id: str
    audit_seq: int


def _audit_actions(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "provatar.db") as db:
        return db.execute("SELECT action, outcome, details FROM audit_event ORDER BY seq").fetchall()


@pytest.fixture(scope="module")
def installed(
    cli: Cli, data_dir: Path, example_photo: Path, example_audio: Path, tmp_path_factory: pytest.TempPathFactory
) -> Installed:
    work = tmp_path_factory.mktemp("cli-e2e")
    r = cli("init")
    assert r.exit_code == 0, r.output
    assert "client_secret:" in r.output and (data_dir / "pki" / "root.pem").is_file()
    assert (data_dir / "provatar.db").is_file()
    evidence = work / "consent.txt"
    evidence.write_text("signed consent form")
    r = cli(
        "consent",
        "enroll",
        str(example_photo),
        "--name",
        "Eileen",
        "--purpose",
        "test",
        "--evidence",
        str(evidence),
        "--json",
    )
    assert r.exit_code == 0, r.output
    enrolled = json.loads(r.stdout)
    audio = short_speech(example_audio, work / "speech.wav", 2.4)
    video = work / "out.mp4"
    r = cli(
        "generate",
        str(example_photo),
        str(audio),
        "-o",
        str(video),
        "--subject",
        enrolled["subject_id"],
        "--purpose",
        "test",
        "--json",
    )
    assert r.exit_code == 0, r.output
    gen = json.loads(r.stdout)
    return Installed(
        data_dir,
        enrolled["subject_id"],
        enrolled["consent_record_id"],
        audio,
        video,
        gen["generation_id"],
        gen["audit_seq"],
    )


def test_output_is_h264_aac_of_the_audio_duration(installed: Installed) -> None:
    info = probe_video(installed.video)
    assert info.video_codec == "h264" and info.audio_codec == "aac" and info.pix_fmt == "yuv420p"
    assert (info.width, info.height) == (512, 512) and round(info.fps) == 25
    assert abs(info.duration_s - 2.4) <= 0.05
    assert info.audio_duration_s is not None and abs(info.audio_duration_s - 2.4) <= 0.05
    assert not [p for p in installed.video.parent.iterdir() if p.name.startswith(".")]  # no temp files left


def test_c2pa_trusted_with_our_root_and_invalid_after_one_flipped_byte(installed: Installed, tmp_path: Path) -> None:
    root = (installed.data_dir / "pki" / "root.pem").read_text()
    ctx = c2pa.Context.from_dict({"trust": {"trust_anchors": root}, "verify": {"verify_trust": True}})
    with open(installed.video, "rb") as fh, c2pa.Reader("video/mp4", fh, context=ctx) as reader:
        assert reader.get_validation_state() == "Trusted"
        manifest = json.loads(reader.json())
    active = manifest["manifests"][manifest["active_manifest"]]
    labels = {a["label"] for a in active["assertions"]}
    assert {"c2pa.actions.v2", "org.provatar.generation", "c2pa.soft-binding"} <= labels or {
        "c2pa.actions",
        "org.provatar.generation",
        "c2pa.soft-binding",
    } <= labels
    assert installed.generation_id in json.dumps(active)
    flipped = flip_byte_in_mdat(installed.video, tmp_path / "flipped.mp4")
    with open(flipped, "rb") as fh, c2pa.Reader("video/mp4", fh, context=ctx) as reader:
        assert reader.get_validation_state() == "Invalid"


def test_detect_names_generation_and_audit_entry_also_after_x264_crf28(
    cli: Cli, installed: Installed, tmp_path: Path
) -> None:
    r = cli("detect", str(installed.video), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["c2pa"]["present"] and report["c2pa"]["state"] == "Trusted"
    assert report["watermark"]["found"] and report["watermark"]["generation_id"] == installed.generation_id
    assert report["watermark"]["audit_seq"] == installed.audit_seq
    assert report["watermark"]["consent_record_id"] == installed.consent
    assert report["verdict"] == "provatar-generated" and report["reasons"]
    assert 0.0 <= report["classifier"]["score"] <= 1.0

    stripped = reencode_x264(installed.video, tmp_path / "reencoded.mp4", crf=28)
    r = cli("detect", str(stripped), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert not report["c2pa"]["present"]
    assert report["watermark"]["found"] and report["watermark"]["generation_id"] == installed.generation_id
    assert report["watermark"]["audit_seq"] == installed.audit_seq
    assert report["watermark"]["stored_manifest"] is not None  # the original signed manifest, found by the mark
    assert report["verdict"] == "provatar-generated"


def test_unmarked_real_video_has_no_provatar_evidence(cli: Cli, installed: Installed, shared_media: Path) -> None:
    r = cli("detect", str(shared_media / "videos" / "talkinghead_man_suit_retalking1.mp4"), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert not report["watermark"]["found"] and not report["c2pa"]["present"]
    assert report["verdict"] in ("no-evidence", "likely-synthetic")


def _denied(cli: Cli, photo: Path, audio: Path, subject: str, out: Path, code: str, purpose: str = "test") -> None:
    r = cli("generate", str(photo), str(audio), "-o", str(out), "--subject", subject, "--purpose", purpose)
    assert r.exit_code == 3, r.output
    assert f"error[{code}]" in r.output or code in r.output
    assert not out.exists()


def test_denials_fresh_machine(cli: Cli, installed: Installed, example_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "denied.mp4"
    _denied(cli, example_photo, installed.audio, "subj_nobody", out, "unknown_subject")
    _denied(cli, example_photo, installed.audio, installed.subject, out, "consent_wrong_purpose", purpose="ads")
    _denied(
        cli,
        two_face_photo(example_photo, tmp_path / "two.png"),
        installed.audio,
        installed.subject,
        out,
        "multiple_faces",
    )
    _denied(cli, no_face_photo(tmp_path / "gradient.png"), installed.audio, installed.subject, out, "no_face")
    long_audio = long_silence_wav(tmp_path / "hour.wav", 3600)
    _denied(cli, example_photo, long_audio, installed.subject, out, "audio_too_long")
    reasons = [
        json.loads(d)["decision"]["reasons"]
        for a, o, d in _audit_actions(installed.data_dir)
        if a == "policy.decision" and o == "denied"
    ]
    for code in ("unknown_subject", "consent_wrong_purpose", "multiple_faces", "no_face", "audio_too_long"):
        assert any(code in r for r in reasons), code


def test_denials_with_real_faces(cli: Cli, installed: Installed, shared_media: Path, tmp_path: Path) -> None:
    out = tmp_path / "denied.mp4"
    celebs = shared_media / "celebrities"
    _denied(
        cli,
        shared_media / "portraits" / "man_young_frontal_d19.jpg",
        installed.audio,
        installed.subject,
        out,
        "subject_mismatch",
    )
    _denied(
        cli,
        shared_media / "portraits" / "two_faces_women_dlib_2008_001009.jpg",
        installed.audio,
        installed.subject,
        out,
        "multiple_faces",
    )
    _denied(cli, shared_media / "nonface" / "coffee.png", installed.audio, installed.subject, out, "no_face")
    r = cli("consent", "block", str(celebs / "obama_face_recognition.jpg"), "--label", "Barack Obama")
    assert r.exit_code == 0, r.output
    _denied(cli, celebs / "obama_small.jpg", installed.audio, installed.subject, out, "blocked_identity")


def test_bad_input_is_refused_cleanly_and_audited(
    cli: Cli, installed: Installed, example_photo: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bad.mp4"
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("this is not an image")
    empty_audio = tmp_path / "empty.wav"
    empty_audio.write_bytes(b"")
    huge = huge_png_header(tmp_path / "huge.png", 10_000, 10_000)
    cases = [
        ((str(not_image), str(installed.audio)), "invalid_image"),
        ((str(example_photo), str(empty_audio)), "invalid_audio"),
        ((str(huge), str(installed.audio)), "image_too_large"),
    ]
    for (photo, audio), code in cases:
        r = cli("generate", photo, audio, "-o", str(out), "--subject", installed.subject, "--purpose", "test")
        assert r.exit_code == 2, (code, r.output)
        assert f"error[{code}]" in r.output and "Traceback" not in r.output
        assert not out.exists() and not list(tmp_path.glob(".bad*"))
    r = cli(
        "generate",
        str(example_photo),
        str(installed.audio),
        "-o",
        str(out),
        "--subject",
        installed.subject,
        "--purpose",
        "test",
        "--emotion",
        "smug",
    )
    assert r.exit_code == 2 and "error[invalid_controls]" in r.output and "emotion" in r.output, r.output
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(installed.video.read_bytes()[:3000] + b"\x00garbage" * 100)
    r = cli("detect", str(corrupt))
    assert r.exit_code == 2 and "error[" in r.output and "Traceback" not in r.output, r.output
    codes = [
        json.loads(d).get("code")
        for a, o, d in _audit_actions(installed.data_dir)
        if a in ("generation.failed", "detection.failed")
    ]
    for code in ("invalid_image", "invalid_audio", "image_too_large"):
        assert code in codes
    assert any(c in ("invalid_video", "unsupported_media") for c in codes)


def test_revocation_denies_the_very_next_request(
    cli: Cli, installed: Installed, example_photo: Path, tmp_path: Path
) -> None:
    r = cli("consent", "revoke", installed.subject, "--reason", "withdrawn")
    assert r.exit_code == 0, r.output
    _denied(cli, example_photo, installed.audio, installed.subject, tmp_path / "after.mp4", "consent_revoked")


def test_audit_verify_then_every_single_row_tamper_is_named(cli: Cli, installed: Installed, tmp_path: Path) -> None:
    r = cli("audit", "verify")
    assert r.exit_code == 0, r.output
    r = cli("audit", "export", "-o", str(tmp_path / "audit.jsonl"))
    assert r.exit_code == 0, r.output
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(lines) >= 10 and all("entry_hash" in json.loads(line) for line in lines)
    db_path = installed.data_dir / "provatar.db"
    pristine = sqlite3.connect(":memory:")
    with sqlite3.connect(db_path) as db:
        db.backup(pristine)
        n = db.execute("SELECT max(seq) FROM audit_event").fetchone()[0]
    tampers = [
        ("UPDATE audit_event SET actor = 'cli:mallory' WHERE seq = 3", 3),
        ("UPDATE audit_event SET details = '{}' WHERE seq = ?", n // 2),
        ("DELETE FROM audit_event WHERE seq = ?", n // 2),
        ("DELETE FROM audit_event WHERE seq = ?", n),
    ]
    try:
        for sql, seq in tampers:
            with sqlite3.connect(db_path) as db:
                pristine.backup(db)  # restore the untouched log, then tamper with exactly one row
                db.execute(sql, (seq,) if "?" in sql else ())
            r = cli("audit", "verify")
            assert r.exit_code == 1, (sql, r.output)
            assert f"#{seq}" in r.output, (sql, r.output)
    finally:
        with sqlite3.connect(db_path) as db:
            pristine.backup(db)
        pristine.close()
    assert cli("audit", "verify").exit_code == 0
