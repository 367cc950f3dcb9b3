"""`provatar detect --json --html`: the cues, the calibrated probability and a self-contained HTML report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from generation import GenerationConfig, TalkingFaceGenerator, encode_mp4, load_audio, load_image
from service.detect_report import render_html
from tests.service.conftest import Cli


@pytest.fixture(scope="module")
def made_clip(example_photo: Path, example_audio: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of our renderer's output with sound, unsigned and unmarked (as if provenance had been stripped)."""
    gen = TalkingFaceGenerator(GenerationConfig(size=256))
    audio = load_audio(example_audio).head(3.0)
    frames = gen.frames(gen.prepare(load_image(example_photo, max_pixels=10**7)), audio)
    return encode_mp4(frames, audio, tmp_path_factory.mktemp("clip") / "made.mp4", crf=23)


def _self_contained(page: str) -> bool:
    """No resource is fetched: no src/href to a URL, no @import, no script."""
    return not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "@import" not in page and (
        "<script" not in page
    )


def test_detect_json_has_cues_and_probability_and_html_report_is_self_contained(
    cli: Cli, made_clip: Path, tmp_path: Path
) -> None:
    assert cli("init").exit_code == 0
    html_path = tmp_path / "report.html"
    r = cli("detect", str(made_clip), "--json", "--html", str(html_path))
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    # Fields kept from before, and the new ones.
    assert {"media", "c2pa", "watermark", "classifier", "verdict", "reasons"} <= set(report)
    names = [c["name"] for c in report["cues"]]
    assert names == ["rppg", "audio_visual", "temporal", "spatial", "any_generator_cnn", "learned"]
    for c in report["cues"]:
        assert c["applies"] or (c["score"] is None and c["reason"])
        assert c["score"] is not None or c["contribution"] == 0.0
    p = report["probability"]
    assert 0.0 <= p["synthetic"] <= 1.0 and 0.5 <= p["threshold"] < 1.0
    assert p["expected_false_positive_rate"] is not None
    # Our own renderer, unmarked and unsigned: the renderer CNN's one-sided evidence must carry it.
    assert report["verdict"] == "likely-synthetic", report["reasons"]

    page = html_path.read_text()
    assert _self_contained(page)
    assert "likely-synthetic" in page and "<svg" in page and "data:image/png;base64," in page
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no partial file left


def test_detect_prints_a_readable_report_with_every_cue(cli: Cli, made_clip: Path) -> None:
    assert cli("init").exit_code in (0, 2)
    r = cli("detect", str(made_clip))
    assert r.exit_code == 0, r.output
    for name in ("rppg", "audio_visual", "temporal", "spatial", "any_generator_cnn", "learned"):
        assert name in r.stdout
    assert "probability" in r.stdout and "verdict:" in r.stdout


def test_html_escapes_what_comes_from_the_file() -> None:
    report = {
        "verdict": "no-evidence",
        "media": {"kind": "image", "width": 1, "height": 1, "duration_s": 0},
        "c2pa": {"present": True, "signer": "<img src=x onerror=alert(1)>", "state": "Untrusted"},
        "watermark": {"found": False},
        "reasons": ["<script>alert(1)</script>"],
        "cues": [],
        "probability": {},
    }
    page = render_html(report, file_name='"><script>alert(2)</script>.mp4')
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_html_to_a_directory_is_refused_before_detection(cli: Cli, made_clip: Path, tmp_path: Path) -> None:
    assert cli("init").exit_code in (0, 2)
    r = cli("detect", str(made_clip), "--html", str(tmp_path))
    assert r.exit_code == 2 and "HTML report" in r.output


def test_another_generators_open_watermark_makes_the_verdict_likely_synthetic() -> None:
    from safeguards.detection import decide

    c2pa = {"present": False, "state": None, "ai_generated": False}
    watermark = {"found": False}
    classifier = {"score": 0.1, "threshold": 0.9}
    sd = {"name": "Stable Diffusion v1", "found": True, "bit_agreement": 1.0, "false_alarm_p": 1e-30}
    verdict, reasons = decide(c2pa, watermark, classifier, None, [sd])
    assert verdict == "likely-synthetic" and any("Stable Diffusion v1 watermark found" in r for r in reasons)
    verdict, _ = decide(c2pa, watermark, classifier, None, [dict(sd, found=False)])
    assert verdict == "no-evidence"
