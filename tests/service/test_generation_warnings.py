"""What the generator could not animate as usual reaches the user: a glove over part of the mouth is reported in
the CLI's output (text and --json), the job's params (the API's `warnings`) and the audit entry; a clear photo
reports nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from generation import load_image
from tests.generation.occluders import with_glove
from tests.service.conftest import Cli, short_speech


@pytest.fixture(scope="module")
def enrolled(cli: Cli, example_photo: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    assert cli("init").exit_code == 0
    evidence = tmp_path_factory.mktemp("warnings") / "consent.txt"
    evidence.write_text("signed consent form")
    r = cli("consent", "enroll", str(example_photo), "--name", "E", "--purpose", "warnings", "--evidence",
            str(evidence), "--json")  # fmt: skip
    assert r.exit_code == 0, r.output
    return str(json.loads(r.stdout)["subject_id"])


def _stored(data_dir: Path, generation_id: str) -> tuple[dict[str, object], dict[str, object]]:
    """(the job's params, its generation.completed audit details)."""
    with sqlite3.connect(data_dir / "provatar.db") as db:
        params = db.execute("SELECT params FROM service_generation WHERE id = ?", (generation_id,)).fetchone()[0]
        rows = db.execute("SELECT details FROM audit_event WHERE action = 'generation.completed'").fetchall()
    done = [d for d in (json.loads(r[0]) for r in rows) if d.get("generation_id") == generation_id]
    return json.loads(params), done[0]


@pytest.mark.slow
def test_covered_mouth_is_reported_and_a_clear_face_is_not(cli: Cli, data_dir: Path, enrolled: str,
                                                           example_photo: Path, example_audio: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    photo = load_image(example_photo.read_bytes(), max_pixels=50_000_000)
    gloved = tmp_path / "gloved.png"
    Image.fromarray(with_glove(photo, "side")).save(gloved)
    audio = short_speech(example_audio, tmp_path / "speech.wav", 1.0)
    found: dict[str, list[str]] = {}
    for name, source in (("gloved", gloved), ("clear", example_photo)):
        video = tmp_path / f"{name}.mp4"
        r = cli("generate", str(source), str(audio), "-o", str(video), "--subject", enrolled, "--purpose",
                "warnings", "--json")  # fmt: skip
        assert r.exit_code == 0, r.output
        data = json.loads(r.stdout)
        params, audited = _stored(data_dir, data["generation_id"])
        assert params.get("warnings", []) == data["warnings"] == audited["warnings"]
        found[name] = data["warnings"]
    assert any("mouth partly covered" in w for w in found["gloved"]), found
    assert found["clear"] == []
    # The text output says it too.
    r = cli("generate", str(gloved), str(audio), "-o", str(tmp_path / "again.mp4"), "--subject", enrolled,
            "--purpose", "warnings")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "warning: mouth partly covered" in r.output
