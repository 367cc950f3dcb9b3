"""The consent lifecycle reaches outputs (issue 13 items 3 and 4), through the HTTP API on a real installation:

- a revoked or expired consent withholds the subject's videos (410 with the reason, audited, webhook recorded), and a
  new grant serves them again, decided at request time;
- retention purges old videos (410 retention_expired, before and after the purge job);
- erasure leaves no embedding, photo hash, name or file of the person in any table, column or file of the data dir,
  the audit log still verifies, and the same photo enrolls again only with a new consent and new evidence;
- a detect-only client sees the evidence but no identifier of another client's generation; the owner and auditors see
  the links, in the JSON and in the HTML report alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy import inspect, text
from typer.testing import CliRunner

from safeguards.consent import ConsentRecord, SubjectReference
from service.api.main import create_app
from service.auth import create_client
from service.cli import app as cli_app
from service.models import Generation, WebhookDelivery
from service.runtime import Runtime, initialize
from service.settings import Settings, get_settings
from service.webhooks import create_endpoint
from tests.service.conftest import short_speech

pytestmark = pytest.mark.slow


@dataclass
class World:
    app: FastAPI
    client: TestClient
    rt: Runtime
    admin: tuple[str, str]
    owner: tuple[str, str]  # generate + detect
    detector: tuple[str, str]  # detect only
    tmp: Path
    audio: Path

    def bearer(self, creds: tuple[str, str], scope: str | None = None) -> dict[str, str]:
        data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
        r = self.client.post("/v1/token", data=data, auth=creds)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def enroll(self, photo: Path, name: str, evidence: bytes, **extra: str) -> dict[str, object]:
        r = self.client.post(
            "/v1/subjects",
            data={"name": name, "purposes": ["lifecycle"], **extra},
            files=[("photos", (photo.name, photo.read_bytes(), "image/png")), ("evidence", ("c.txt", evidence))],
            headers=self.bearer(self.admin, "consent:write"),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    def generate(self, photo: Path, subject_id: str) -> str:
        files = {"photo": (photo.name, photo.read_bytes()), "audio": ("a.wav", self.audio.read_bytes())}
        r = self.client.post(
            "/v1/generations",
            data={"subject_id": subject_id, "purpose": "lifecycle"},
            files=files,
            headers=self.bearer(self.owner, "generate"),
        )
        assert r.status_code == 202, r.text
        assert self.app.state.worker.run_pending() == 1
        gen_id = str(r.json()["id"])
        with self.rt.session() as session:
            gen = session.get(Generation, gen_id)
            assert gen is not None and gen.status == "succeeded", gen
        return gen_id

    def video(self, gen_id: str):  # type: ignore[no-untyped-def]
        return self.client.get(f"/v1/generations/{gen_id}/video", headers=self.bearer(self.owner, "generate"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, example_audio: Path) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("lifecycle")
    settings = Settings(
        data_dir=tmp / "data",
        rate_limits_enabled=False,
        store_reference_photos=True,  # so erasure has stored photos to delete
        webhook_allow_http=True,
        webhook_allowed_networks=["127.0.0.1/32"],
    )
    init = initialize(settings)
    rt = Runtime(settings)
    creds = {}
    with rt.session() as session:
        for name, scopes in (("owner", ["generate", "detect"]), ("detector", ["detect"])):
            client, secret = create_client(session=session, name=name, scopes=scopes)
            creds[name] = (client.client_id, secret)
        session.commit()
    for client_id, _ in creds.values():  # nothing listens there: deliveries are recorded, not delivered
        create_endpoint(
            rt,
            client_id=client_id,
            url="http://127.0.0.1:9/hook",
            events=["generation.withdrawn", "consent.revoked"],
            description=None,
            actor="test",
            request_id=None,
        )
    app = create_app(settings, runtime=rt, start_worker=False)
    audio = short_speech(example_audio, tmp / "speech.wav", 1.0)
    with TestClient(app) as client:
        yield World(
            app, client, rt, (str(init.admin_client_id), str(init.admin_secret)), creds["owner"],
            creds["detector"], tmp, audio,
        )  # fmt: skip
    rt.close()


def _deliveries(world: World, event_type: str) -> list[dict[str, object]]:
    with world.rt.session() as session:
        rows = session.query(WebhookDelivery).filter(WebhookDelivery.event_type == event_type).all()
        return [dict(r.payload) for r in rows]


def _problem(r, status: int, code: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == code and "Traceback" not in r.text


def test_revoked_or_expired_consent_withholds_videos_and_a_new_grant_serves_them_again(
    world: World, example_photo: Path
) -> None:
    subject = world.enroll(example_photo, "Revocable", b"consent form 1")
    gen_id = world.generate(example_photo, str(subject["id"]))
    assert world.video(gen_id).status_code == 200
    admin = world.bearer(world.admin, "consent:write")

    r = world.client.post(f"/v1/subjects/{subject['id']}/revoke", data={"reason": "withdrawn"}, headers=admin)
    assert r.status_code == 200, r.text
    _problem(world.video(gen_id), 410, "consent_revoked")
    status = world.client.get(f"/v1/generations/{gen_id}", headers=world.bearer(world.owner, "generate")).json()
    assert status["download_url"] is None and status["output_withheld"] == "consent_revoked"
    refusals = [
        e
        for e in list(world.rt.audit.iter_events(action="generation.download_refused"))
        if e.details["generation_id"] == gen_id
    ]
    assert refusals and refusals[-1].details["code"] == "consent_revoked" and refusals[-1].outcome == "rejected"
    withdrawn = _deliveries(world, "generation.withdrawn")
    assert any(gen_id in p["data"]["generation_ids"] for p in withdrawn)  # type: ignore[index,operator]

    # A new grant: served again (the decision is made per request, from the records).
    r = world.client.post(
        f"/v1/subjects/{subject['id']}/consents",
        data={"purposes": ["lifecycle"], "evidence_sha256": hashlib.sha256(b"consent form 2").hexdigest()},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    assert world.video(gen_id).status_code == 200

    # Expiry needs no job: once the record's expiry passes, the next request is refused.
    with world.rt.session() as session:
        newest = session.get(ConsentRecord, r.json()["id"])
        assert newest is not None
        newest.expires_at = datetime.now(UTC) - timedelta(seconds=1)
        session.add(newest)
        session.commit()
    _problem(world.video(gen_id), 410, "consent_expired")
    # The sweep announces the expiry once (the revocation's notice was cleared when consent came back).
    from service.retention import purge_outputs

    before = len(_deliveries(world, "generation.withdrawn"))
    assert gen_id in purge_outputs(world.rt).withdrawn
    assert gen_id not in purge_outputs(world.rt).withdrawn
    assert len(_deliveries(world, "generation.withdrawn")) == before + 1

    # A renewal for other purposes does not cover this video.
    r = world.client.post(
        f"/v1/subjects/{subject['id']}/consents",
        data={"purposes": ["other-purpose"], "evidence_sha256": hashlib.sha256(b"consent form 3").hexdigest()},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    _problem(world.video(gen_id), 410, "consent_wrong_purpose")


def test_retention_refuses_then_purges_old_videos(world: World, example_photo: Path) -> None:
    from service.jobs import Worker
    from service.retention import purge_outputs

    subject = world.enroll(example_photo, "Retained", b"consent form 3")
    gen_id = world.generate(example_photo, str(subject["id"]))
    with world.rt.session() as session:
        gen = session.get(Generation, gen_id)
        assert gen is not None and gen.output_path
        output = Path(gen.output_path)
        gen.finished_at = datetime.now(UTC) - timedelta(days=10)
        session.add(gen)
        session.commit()
    assert output.is_file() and world.video(gen_id).status_code == 200  # no retention period: kept
    world.rt.settings.output_retention_days = 7
    try:
        _problem(world.video(gen_id), 410, "retention_expired")  # refused before the purge job ran
        worker = Worker(world.rt, poll_seconds=0.05)
        worker.start()  # the worker's sweep (at start, then every PROVATAR_SWEEP_INTERVAL_SECONDS) purges
        worker.stop()
        assert not output.exists()
        with world.rt.session() as session:
            purged = session.get(Generation, gen_id)
            assert purged is not None and purged.output_deleted_reason == "retention_expired"
        _problem(world.video(gen_id), 410, "retention_expired")
        assert gen_id not in purge_outputs(world.rt).expired
    finally:
        world.rt.settings.output_retention_days = None
    expired = list(world.rt.audit.iter_events(action="generation.output_expired"))
    assert any(e.details["generation_id"] == gen_id for e in expired)


def _detect(world: World, creds: tuple[str, str], video: bytes) -> dict[str, object]:
    r = world.client.post(
        "/v1/detections", files={"file": ("clip.mp4", video, "video/mp4")}, headers=world.bearer(creds, "detect")
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_detection_links_are_shown_to_the_owner_and_auditors_only(world: World, example_photo: Path) -> None:
    from service.auth import Principal
    from service.detect_report import render_html
    from service.detect_scope import scoped_report

    subject = world.enroll(example_photo, "Detected", b"consent form 4")
    gen_id = world.generate(example_photo, str(subject["id"]))
    video = world.video(gen_id).content
    with world.rt.session() as session:
        gen = session.get(Generation, gen_id)
        assert gen is not None
        ids = [gen_id, str(subject["id"]), str(gen.consent_record_id)]

    other = _detect(world, world.detector, video)
    assert other["verdict"] == "provatar-generated" and other["links_hidden"] is True
    wm, c2pa = other["watermark"], other["c2pa"]
    assert wm["found"] is True and wm["payload"]  # type: ignore[index]
    assert c2pa["present"] is True and c2pa["state"] == "Trusted" and c2pa["signer"]  # type: ignore[index]
    assert other["classifier"] and other["cues"] and other["probability"]
    for name in ("generation_id", "subject_id", "consent_record_id", "audit_seq", "stored_manifest"):
        assert wm[name] is None, name  # type: ignore[index]
    text_other = json.dumps(other)
    for ident in ids:
        assert ident not in text_other, ident

    mine = _detect(world, world.owner, video)
    assert mine["links_hidden"] is False
    assert mine["watermark"]["generation_id"] == gen_id  # type: ignore[index]
    assert mine["watermark"]["subject_id"] == subject["id"]  # type: ignore[index]
    assert mine["watermark"]["audit_seq"] and mine["watermark"]["stored_manifest"]  # type: ignore[index]

    # Auditors see the links; the HTML report shows exactly what the scoped JSON does.
    full = dict(mine)
    full.pop("links_hidden")
    auditor = Principal(client_id="someone-else", scopes=frozenset({"detect", "audit:read"}), issuer="provatar")
    stranger = Principal(client_id="someone-else", scopes=frozenset({"detect"}), issuer="provatar")
    assert scoped_report(world.rt, full, auditor)["watermark"]["generation_id"] == gen_id
    hidden_page = render_html(scoped_report(world.rt, full, stranger), file_name="clip.mp4")
    shown_page = render_html(scoped_report(world.rt, full, auditor), file_name="clip.mp4")
    assert gen_id in shown_page
    for ident in ids:
        assert ident not in hidden_page, ident


def _mirrored_jpeg(photo: Path, dest: Path) -> Path:
    """The same face in other bytes (mirrored, JPEG): another subject's photo whose hash no other subject shares."""
    Image.open(photo).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(dest, quality=92)
    return dest


def _needles(world: World, subject_id: str, photo: Path, name: str) -> dict[str, bytes]:
    """What must not survive an erasure: embedding values, photo hashes, stored file names, the name, photo bytes."""
    with world.rt.session() as session:
        refs = session.query(SubjectReference).filter(SubjectReference.subject_id == subject_id).all()
        gens = session.query(Generation).filter(Generation.subject_id == subject_id).all()
        needles = {"name": name.encode()}
        for i, ref in enumerate(refs):
            needles[f"photo_sha256_{i}"] = ref.photo_sha256.encode()
            assert ref.photo_path and Path(ref.photo_path).is_file()
            needles[f"stored_photo_{i}"] = Path(ref.photo_path).name.encode()
            # The JSON column stores Python's repr of each float.
            for j in (0, 7, 64, 127):
                needles[f"embedding_{i}_{j}"] = json.dumps(ref.embedding[j]).encode()
        for gen in gens:
            assert gen.output_path and Path(gen.output_path).is_file()
            needles[f"output_path_{gen.id}"] = gen.output_path.encode()
            needles[f"upload_dir_{gen.id}"] = Path(gen.photo_path).parent.name.encode()
    content = photo.read_bytes()
    needles["photo_bytes"] = content[len(content) // 2 : len(content) // 2 + 48]
    needles["request_photo_sha256"] = hashlib.sha256(content).hexdigest().encode()
    return needles


def _found_in_database(world: World, needles: dict[str, bytes]) -> list[str]:
    found = []
    with world.rt.engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                cells = " ".join(str(v) for v in row).encode()
                found += [f"{table}:{k}" for k, v in needles.items() if v in cells]
    return found


def _found_in_files(root: Path, needles: dict[str, bytes]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [
                f"{path.relative_to(root)}:{k}" for k, v in needles.items() if v in data or v in str(path).encode()
            ]
    return found


def test_erasure_leaves_nothing_of_the_person_and_the_audit_log_verifies(world: World, example_photo: Path) -> None:
    photo = _mirrored_jpeg(example_photo, world.tmp / "mirrored.jpg")
    name = "Erasable Person 7f3a"
    subject = world.enroll(photo, name, b"erasable consent form")
    subject_id = str(subject["id"])
    gen_id = world.generate(photo, subject_id)
    assert world.video(gen_id).status_code == 200
    needles = _needles(world, subject_id, photo, name)
    data_dir = world.rt.settings.data_dir
    # The check can fail: before the erasure it finds the person everywhere it should look.
    assert _found_in_database(world, {k: v for k, v in needles.items() if not k.startswith("photo_bytes")})
    before = _found_in_files(data_dir, needles)
    # ... including the embeddings and the name in the database's own bytes (file or WAL), not only the media files.
    assert any(":embedding_" in f for f in before) and any(f.endswith(":name") for f in before), before

    r = world.client.post(f"/v1/subjects/{subject_id}/erase", headers=world.bearer(world.admin, "consent:write"))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["references_deleted"] == 1 and report["reference_photos_deleted"] == 1
    assert report["generations_erased"] == [gen_id] and report["outputs_deleted"] == 1
    assert report["consents_revoked"] == 1 and report["fingerprints_kept"] == 1

    assert _found_in_database(world, needles) == []
    assert _found_in_files(data_dir, needles) == []
    assert world.rt.audit.verify().entries > 0
    verify = world.client.get("/v1/audit/verify", headers=world.bearer(world.admin, "audit:read")).json()
    assert verify["intact"] is True
    erased_events = list(world.rt.audit.iter_events(action="subject.erased", subject=subject_id))
    assert erased_events and erased_events[-1].actor == f"client:{world.admin[0]}"

    _problem(world.video(gen_id), 410, "subject_erased")
    assert any(
        gen_id in p["data"]["generation_ids"] and p["data"]["reasons"][gen_id] == "subject_erased"  # type: ignore[index]
        for p in _deliveries(world, "generation.withdrawn")
    )
    assert any(p["data"]["subject_id"] == subject_id for p in _deliveries(world, "consent.revoked"))  # type: ignore[index]
    detail = world.client.get(f"/v1/subjects/{subject_id}", headers=world.bearer(world.admin, "consent:read")).json()
    assert detail["erased_at"] and detail["display_name"] != name
    again = world.client.post(f"/v1/subjects/{subject_id}/erase", headers=world.bearer(world.admin, "consent:write"))
    assert again.status_code == 200 and again.json()["already_erased"] is True
    r = world.client.post(
        f"/v1/subjects/{subject_id}/consents",
        data={"purposes": ["lifecycle"], "evidence_sha256": "a" * 64},
        headers=world.bearer(world.admin, "consent:write"),
    )
    _problem(r, 409, "subject_erased")

    # The same photo does not enroll the person again without a new consent, confirmed, with new evidence.
    files = [("photos", ("p.jpg", photo.read_bytes(), "image/jpeg")), ("evidence", ("c.txt", b"erasable consent form"))]
    write = world.bearer(world.admin, "consent:write")
    r = world.client.post("/v1/subjects", data={"name": "Again", "purposes": ["x"]}, files=files, headers=write)
    _problem(r, 409, "subject_erased")
    r = world.client.post(
        "/v1/subjects",
        data={"name": "Again", "purposes": ["x"], "new_consent_after_erasure": "true"},
        files=files,
        headers=write,
    )
    _problem(r, 400, "stale_consent_evidence")
    files[1] = ("evidence", ("c.txt", b"a new consent form, signed after the erasure"))
    r = world.client.post(
        "/v1/subjects",
        data={"name": "Again", "purposes": ["x"], "new_consent_after_erasure": "true"},
        files=files,
        headers=write,
    )
    assert r.status_code == 201, r.text
    events = list(world.rt.audit.iter_events(action="subject.reenrolled_after_erasure", subject=str(r.json()["id"])))
    assert events and events[-1].details["erased_subject_ids"] == [subject_id]


def test_cli_erase_confirms_and_reports(world: World, example_photo: Path) -> None:
    photo = world.tmp / "upside.png"
    Image.fromarray(np.asarray(Image.open(example_photo).convert("RGB"))[:, :, ::-1].copy()).save(photo)  # BGR
    subject_id = str(world.enroll(photo, "Cli Erasable", b"cli consent")["id"])
    runner = CliRunner()
    env = {"PROVATAR_DATA_DIR": str(world.rt.settings.data_dir)}
    get_settings.cache_clear()
    try:
        unconfirmed = runner.invoke(cli_app, ["consent", "erase", subject_id], env=env, input="")
        assert unconfirmed.exit_code == 2 and "confirmation_required" in unconfirmed.output
        missing = runner.invoke(cli_app, ["consent", "erase", "subj_nobody", "--yes"], env=env)
        assert missing.exit_code == 2 and "subject_not_found" in missing.output
        done = runner.invoke(cli_app, ["consent", "erase", subject_id, "--yes", "--json"], env=env)
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["references_deleted"] == 1
        purge = runner.invoke(cli_app, ["purge", "--json"], env=env)
        assert purge.exit_code == 0 and json.loads(purge.stdout)["retention_days"] is None
        # A refused command is audited by its command path, not its arguments (a name here), which would outlive
        # an erasure of the person in the append-only log.
        bad = runner.invoke(
            cli_app, ["consent", "enroll", str(photo), "--name", "Secret Name 99", "--purpose", "x y"], env=env
        )
        assert bad.exit_code == 2, bad.output
        rejected = list(world.rt.audit.iter_events(action="request.rejected"))[-1]
        assert rejected.details["command"].endswith("consent enroll") and "Secret Name" not in json.dumps(
            rejected.details
        )
    finally:
        get_settings.cache_clear()
