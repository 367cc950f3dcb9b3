"""Issue 15 end to end through the real app: a borderline block-list match is denied and queued, a second client
(the consent officer) approves it with a justification over the API, the same photo then passes, a different file
of the same face does not, and every step is in the audit log. Also the CLI's review commands and multi-photo
block entries. Fresh-clone input only: the example photo, and a block entry constructed at a set distance from it.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session

from safeguards.blocklist import blocked_references
from safeguards.consent import BlockedIdentity
from service.api.main import create_app
from service.auth import create_client
from service.models import Generation
from service.runtime import Runtime, initialize
from service.settings import Settings
from tests.service.conftest import Cli, short_speech

pytestmark = pytest.mark.slow


@dataclass
class Env:
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]
    officer: tuple[str, str]
    tmp: Path

    def bearer(self, scope: str, creds: tuple[str, str] | None = None) -> dict[str, str]:
        r = self.client.post(
            "/v1/token", data={"grant_type": "client_credentials", "scope": scope}, auth=creds or self.admin
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def audit(self, action: str) -> list[dict[str, object]]:
        r = self.client.get(
            "/v1/audit/events", params={"limit": 1000, "action": action}, headers=self.bearer("audit:read")
        )
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("reviews")
    settings = Settings(data_dir=tmp / "data")
    init = initialize(settings)
    rt = Runtime(settings)
    with Session(rt.engine) as session:
        officer, secret = create_client(session=session, name="officer", scopes=["consent:read", "consent:write"])
        session.commit()
        officer_creds = (officer.client_id, secret)
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app) as client:
        yield Env(client, rt, (str(init.admin_client_id), str(init.admin_secret)), officer_creds, tmp)
    rt.close()


def _borderline_block(env: Env, photo: Path, distance: float) -> str:
    """A block-list entry whose only reference lies exactly `distance` from the photo's face."""
    face = env.rt.analyzer.faces(np.asarray(Image.open(photo).convert("RGB")))[0]
    direction = np.random.default_rng(7).normal(size=face.embedding.shape)
    vector = face.embedding + distance * direction / np.linalg.norm(direction)
    with env.rt.session() as session:
        row = BlockedIdentity(
            label="look-alike public figure",
            reason="test",
            embedding=[float(v) for v in vector],
            embedder=env.rt.analyzer.embedder.name,
            photo_sha256="c" * 64,
            created_at=datetime.now(UTC),
            created_by="admin:test",
        )
        session.add(row)
        session.commit()
        return row.id


def _submit(env: Env, photo_bytes: bytes, audio: Path, subject: str):  # type: ignore[no-untyped-def]
    files = {"photo": ("p.png", photo_bytes, "image/png"), "audio": ("a.wav", audio.read_bytes(), "audio/wav")}
    return env.client.post(
        "/v1/generations", data={"subject_id": subject, "purpose": "demo"}, files=files, headers=env.bearer("generate")
    )


def test_borderline_match_is_queued_approved_by_an_officer_and_bound_to_the_photo(
    env: Env, example_photo: Path, example_audio: Path
) -> None:
    r = env.client.post(
        "/v1/subjects",
        data={"name": "Eileen", "purposes": ["demo"]},
        files=[
            ("photos", ("e.png", example_photo.read_bytes(), "image/png")),
            ("evidence", ("consent.txt", b"signed consent", "text/plain")),
        ],
        headers=env.bearer("consent:write"),
    )
    assert r.status_code == 201, r.text
    subject = str(r.json()["id"])
    blocked_id = _borderline_block(env, example_photo, 0.55)
    audio = short_speech(example_audio, env.tmp / "speech.wav", 1.0)
    photo = example_photo.read_bytes()

    r = _submit(env, photo, audio, subject)
    assert r.status_code == 403 and r.json()["code"] == "possible_protected_identity", r.text
    assert "hint" in r.json() and "review" in r.json()["hint"]
    review_ids = r.json()["decision"]["review_ids"]
    assert len(review_ids) == 1
    # A retry with the same photo reuses the pending review instead of queueing a second one.
    r = _submit(env, photo, audio, subject)
    assert r.status_code == 403 and r.json()["decision"]["review_ids"] == review_ids
    review_id = review_ids[0]

    r = env.client.get("/v1/reviews", params={"status": "pending"}, headers=env.bearer("consent:read"))
    assert r.status_code == 200 and [x["id"] for x in r.json()["items"]] == [review_id]
    queued = r.json()["items"][0]
    assert queued["blocked_identity_id"] == blocked_id and abs(queued["distance"] - 0.55) < 1e-3
    assert queued["photo_sha256"] and "embedding" not in json.dumps(queued)

    # The client that asked cannot approve its own request; a justification is required.
    r = env.client.post(
        f"/v1/reviews/{review_id}/approve",
        json={"justification": "looks fine to me, the requester"},
        headers=env.bearer("consent:write"),
    )
    assert r.status_code == 400 and r.json()["code"] == "invalid_review_decision", r.text
    officer = env.bearer("consent:write", env.officer)
    r = env.client.post(f"/v1/reviews/{review_id}/approve", json={"justification": "ok"}, headers=officer)
    assert r.status_code == 422
    r = env.client.post(
        f"/v1/reviews/{review_id}/approve",
        json={"justification": "compared with the protected person's photos: different person (NASA portrait)"},
        headers=officer,
    )
    assert r.status_code == 200 and r.json()["status"] == "approved", r.text
    assert r.json()["decided_by"] == f"client:{env.officer[0]}"

    # The same photo now passes, and the signed video says who approved the borderline match.
    r = _submit(env, photo, audio, subject)
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    assert env.client.app.state.worker.run_pending() == 1  # type: ignore[attr-defined]
    with env.rt.session() as session:
        manifest = session.get(Generation, job).manifest_json  # type: ignore[union-attr]
    assert manifest and review_id in manifest and f"client:{env.officer[0]}" in manifest
    completed = [e for e in env.audit("generation.completed") if e["subject"] == subject]
    human = json.loads(json.dumps(completed[-1]["details"]))["human_review"]  # type: ignore[index]
    assert human == [
        {"review_id": review_id, "reason": "possible_protected_identity", "approved_by": f"client:{env.officer[0]}"}
    ]
    # A re-encoded copy of the same face is another photo: denied again, and queued as a new review.
    buf = io.BytesIO()
    Image.open(example_photo).convert("RGB").save(buf, format="JPEG", quality=95)
    r = _submit(env, buf.getvalue(), audio, subject)
    assert r.status_code == 403 and r.json()["code"] == "possible_protected_identity", r.text
    assert r.json()["decision"]["review_ids"] != review_ids

    # Decisions are final; everything is in the audit log, with who and why.
    r = env.client.post(
        f"/v1/reviews/{review_id}/reject", json={"justification": "changed my mind later on"}, headers=officer
    )
    assert r.status_code == 409 and r.json()["code"] == "review_already_decided"
    approved = env.audit("identity_review.approved")
    assert approved and approved[-1]["actor"] == f"client:{env.officer[0]}"
    assert "different person" in json.dumps(approved[-1]["details"])
    assert env.audit("identity_review.queued") and env.audit("identity_review.used")
    decisions = [e for e in env.audit("policy.decision") if e["subject"] == subject]
    facts = [json.loads(json.dumps(e["details"]))["facts"] for e in decisions]  # type: ignore[index]
    assert any(f["review_ids"] == [review_id] and f["approved_reviews"] for f in facts)
    assert env.client.get("/v1/audit/verify", headers=env.bearer("audit:read")).json()["intact"] is True


def test_cli_lists_approves_and_blocks_from_several_photos(
    env: Env, cli: Cli, data_dir: Path, example_photo: Path, tmp_path: Path
) -> None:
    from service.cli import app  # noqa: F401  (the cli fixture's installation)

    assert cli("init").exit_code == 0
    mirrored = tmp_path / "mirrored.png"
    Image.open(example_photo).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored)
    r = cli("consent", "block", str(example_photo), str(mirrored), "--label", "Eileen Collins")
    assert r.exit_code == 0, r.output
    assert "from 2 photo(s)" in r.output
    r = cli("consent", "blocklist", "--json")
    entries = json.loads(r.output)
    assert len(entries) == 1
    rt = Runtime(Settings(data_dir=data_dir))
    with rt.session() as session:
        assert len(blocked_references(session=session, blocked_ids=[entries[0]["id"]])) == 2
    rt.close()
    r = cli("consent", "reviews", "--json")
    assert r.exit_code == 0 and json.loads(r.output) == []
    r = cli("consent", "approve", "rev_missing", "--justification", "checked the photo carefully")
    assert r.exit_code == 2 and "review_not_found" in r.output
    # Enrolling the protected face is refused (a certain match), whatever the justification.
    r = cli(
        "consent", "enroll", str(example_photo), "--name", "x", "--purpose", "demo", "--evidence-sha256", "a" * 64,
        "--review-justification", "I know her personally, truly",
    )
    assert r.exit_code == 3 and "blocked_identity" in r.output


def test_enrolling_a_face_in_the_block_band_needs_an_officers_justification(env: Env, example_photo: Path) -> None:
    _borderline_block(env, example_photo, 0.58)

    def enroll(**extra: str):  # type: ignore[no-untyped-def]
        return env.client.post(
            "/v1/subjects",
            data={"name": "Eileen", "purposes": ["demo"], "evidence_sha256": "e" * 64, **extra},
            files=[("photos", ("e.png", example_photo.read_bytes(), "image/png"))],
            headers=env.bearer("consent:write"),
        )

    r = enroll()
    assert r.status_code == 403 and r.json()["code"] == "possible_protected_identity", r.text
    r = enroll(review_justification="NASA portrait of the astronaut herself, checked against the registry")
    assert r.status_code == 201, r.text
    overrides = env.audit("identity_review.enrollment_override")
    assert overrides and overrides[-1]["subject"] == r.json()["id"]
    assert "NASA portrait" in json.dumps(overrides[-1]["details"])


def test_a_band_with_its_ends_swapped_refuses_to_start(tmp_path: Path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="block_match_threshold"):
        Settings(data_dir=tmp_path, block_match_threshold=0.7)
    with pytest.raises(ValidationError, match="subject_match_threshold"):
        Settings(data_dir=tmp_path, subject_review_threshold=0.3)
    ok = Settings(data_dir=tmp_path, subject_match_threshold=0.5, subject_review_threshold=0.5)  # no band: v1 shape
    assert ok.subject_match_threshold == ok.subject_review_threshold
