"""The console over HTTP (TestClient, no browser): session cookie flags and lifetimes, CSRF refusals, roles from
scopes enforced by the server whatever the page shows, confirmation steps, and the audit entries of it all."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from audit import compute_entry_hash
from safeguards.consent import ConsentCreate, Subject
from safeguards.consent_records import grant_consent, list_consents
from service.api.main import create_app
from service.auth import create_client, set_disabled
from service.console import session as sessions
from service.models import ConsoleSession, Generation, JobStatus
from service.runtime import Runtime, initialize
from service.settings import Settings

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Env:
    app: FastAPI
    rt: Runtime
    creds: dict[str, tuple[str, str]]  # role -> (client id, secret)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("console")
    settings = Settings(data_dir=tmp / "data", max_upload_bytes=1024 * 1024, rate_limits_enabled=False)
    initialize(settings)
    rt = Runtime(settings)
    app = create_app(settings, runtime=rt, start_worker=False)
    scopes = {
        "reviewer": ["audit:read", "consent:read"],
        "analyst": ["detect"],
        "officer": ["consent:read", "consent:write"],
        "generator": ["generate"],
        "auditor": ["detect", "audit:read"],
    }
    creds = {}
    with rt.session() as db:
        for role, granted in scopes.items():
            client, secret = create_client(session=db, name=f"console-{role}", scopes=granted)
            creds[role] = (client.client_id, secret)
        db.commit()
    with TestClient(app):  # runs the lifespan once: the runtime, limiter and rejection audit are set on the app
        yield Env(app, rt, creds)
    rt.close()


def browser(env: Env, *, https: bool = False) -> TestClient:
    return TestClient(env.app, base_url="https://testserver" if https else "http://testserver", follow_redirects=False)


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(env: Env, role: str, *, https: bool = False) -> TestClient:
    c = browser(env, https=https)
    page = c.get("/console/sign-in")
    cid, secret = env.creds[role]
    r = c.post("/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 303, r.text
    return c


def page_csrf(c: TestClient, path: str = "/console/") -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


def last_entries(env: Env, action: str, n: int = 5) -> list:
    with env.rt.engine.connect() as conn:
        seqs = conn.execute(
            text("SELECT seq FROM audit_event WHERE action = :a ORDER BY seq DESC LIMIT :n"), {"a": action, "n": n}
        ).scalars()
        return [env.rt.audit.query(after_seq=s - 1, limit=1)[0] for s in seqs]


def make_subject(env: Env, name: str = "Ada") -> str:
    with env.rt.session() as db:
        subject = Subject(display_name=name, created_at=datetime.now(UTC), created_by="test")
        db.add(subject)
        db.flush()
        grant_consent(
            session=db,
            consent_in=ConsentCreate(
                subject_id=subject.id, purposes=["marketing"], allowed_clients=["*"],
                expires_at=datetime.now(UTC) + timedelta(days=30), evidence_sha256="ab" * 32,
            ),
            granted_by="test",
        )  # fmt: skip
        db.commit()
        return subject.id


# --- sessions --------------------------------------------------------------------------------------------------


def test_sign_in_sets_an_httponly_strict_expiring_cookie_secure_only_over_https(env: Env) -> None:
    for https in (False, True):
        c = browser(env, https=https)
        page = c.get("/console/sign-in")
        assert page.status_code == 200
        cid, secret = env.creds["reviewer"]
        r = c.post(
            "/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": csrf_of(page.text)}
        )
        assert r.status_code == 303 and r.headers["location"] == "/console/"
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(sessions.SESSION_COOKIE + "="))
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
        assert {"httponly", "max-age", "path"} <= flags
        assert "samesite=strict" in cookie.lower() and "path=/console" in cookie.lower()
        assert ("secure" in flags) is https
        assert c.get("/console/").status_code == 200
    entry = last_entries(env, "console.signed_in")[0]
    assert entry.actor == f"client:{env.creds['reviewer'][0]}" and entry.details["via"] == "console"


def test_a_wrong_secret_is_refused_with_the_form_again_and_audited(env: Env) -> None:
    c = browser(env)
    page = c.get("/console/sign-in")
    cid, _ = env.creds["officer"]
    r = c.post("/console/sign-in", data={"client_id": cid, "client_secret": "wrong", "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401 and "wrong secret" in r.text
    assert sessions.SESSION_COOKIE not in c.cookies
    failed = last_entries(env, "auth.failed")
    assert any(e.details.get("endpoint") == "/console/sign-in" and e.details.get("via") == "console" for e in failed)


def test_sign_in_without_its_form_token_is_a_403_page(env: Env) -> None:
    c = browser(env)
    c.get("/console/sign-in")
    cid, secret = env.creds["reviewer"]
    r = c.post("/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": "forged"})
    assert r.status_code == 403 and "csrf_refused" in r.text and r.headers["content-type"].startswith("text/html")
    assert sessions.SESSION_COOKIE not in c.cookies


def test_a_client_without_console_scopes_is_not_signed_in(env: Env) -> None:
    c = browser(env)
    page = c.get("/console/sign-in")
    cid, secret = env.creds["generator"]
    r = c.post("/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": csrf_of(page.text)})
    assert r.status_code == 403 and "no console role" in r.text
    assert sessions.SESSION_COOKIE not in c.cookies


def test_pages_redirect_to_sign_in_without_a_valid_session(env: Env) -> None:
    c = browser(env)
    r = c.get("/console/audit")
    assert r.status_code == 303 and r.headers["location"].startswith("/console/sign-in?next=%2Fconsole%2Faudit")
    signed = sign_in(env, "reviewer")
    value = signed.cookies[sessions.SESSION_COOKIE]
    c.cookies.set(sessions.SESSION_COOKIE, value[:-2] + ("AA" if value[-2:] != "AA" else "BB"), path="/console")
    r = c.get("/console/subjects/new")
    assert r.status_code == 303 and "why=expired" in r.headers["location"]
    assert any("Max-Age=0" in h or "expires=" in h.lower() for h in r.headers.get_list("set-cookie"))


def test_session_rows_enforce_idle_and_absolute_limits_and_revocation(env: Env) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    with env.rt.session() as db:
        token, row = sessions.open_session(
            db, principal="client:cl_x", name="x", via="client", scopes=frozenset({"detect"}), lifetime_s=100, now=t0
        )
        db.commit()
        assert row.id == sessions.session_id_of(token) and token not in row.id  # only the hash is stored
        at = lambda s: t0 + timedelta(seconds=s)  # noqa: E731
        assert sessions.find_session(db, token, idle_s=50, now=at(49)).id == row.id
        with pytest.raises(sessions.BadSession, match="idle"):
            sessions.find_session(db, token, idle_s=50, now=at(50))
        assert not sessions.touch(row, now=at(30))  # under a minute: no write
        assert sessions.touch(row, now=at(60))
        db.commit()
        assert sessions.find_session(db, token, idle_s=50, now=at(99)).last_seen_at == at(60)
        with pytest.raises(sessions.BadSession, match="expired"):
            sessions.find_session(db, token, idle_s=50, now=at(100))  # the absolute limit does not slide
        with pytest.raises(sessions.BadSession, match="no such"):
            sessions.find_session(db, token + "x", idle_s=50, now=at(1))
        sessions.revoke_session(db, row.id[:12], by="operator", now=at(61))
        db.commit()
        with pytest.raises(sessions.BadSession, match="revoked"):
            sessions.find_session(db, token, idle_s=50, now=at(62))
        with pytest.raises(sessions.UnknownSession):
            sessions.revoke_session(db, "0" * 64, by="operator")
        assert sessions.purge_old(db, now=at(100) + sessions.KEEP_ENDED) == 0  # kept a while after expiry
        assert sessions.purge_old(db, now=at(101) + sessions.KEEP_ENDED) >= 1
        db.commit()
        assert db.get(type(row), row.id) is None
    key = b"k" * 32
    csrf = sessions.csrf_token(row.id, key)
    assert sessions.csrf_matches(csrf, csrf) and not sessions.csrf_matches(None, csrf)
    assert csrf != sessions.csrf_token("other", key)
    assert not sessions.csrf_matches(csrf[:-1] + "a" if csrf[-1] != "a" else csrf[:-1] + "b", csrf)


def test_a_copied_cookie_stops_working_after_sign_out(env: Env) -> None:
    c = sign_in(env, "reviewer")
    copy = browser(env)
    copy.cookies.set(sessions.SESSION_COOKIE, c.cookies[sessions.SESSION_COOKIE], path="/console")
    assert copy.get("/console/audit").status_code == 200
    assert c.post("/console/sign-out", data={"csrf_token": page_csrf(c)}).status_code == 303
    r = copy.get("/console/audit")
    assert r.status_code == 303 and "why=expired" in r.headers["location"]


def test_sign_out_and_disabling_the_client_end_the_session(env: Env) -> None:
    c = sign_in(env, "analyst")
    r = c.post("/console/sign-out", data={"csrf_token": page_csrf(c)})
    assert r.status_code == 303 and sessions.SESSION_COOKIE not in c.cookies
    assert last_entries(env, "console.signed_out")[0].actor == f"client:{env.creds['analyst'][0]}"

    with env.rt.session() as db:
        client, secret = create_client(session=db, name="console-temp", scopes=["detect"])
        cid = client.client_id
        db.commit()
    env.creds["temp"] = (cid, secret)
    c = sign_in(env, "temp")
    assert c.get("/console/detect").status_code == 200
    session_id = sessions.session_id_of(c.cookies[sessions.SESSION_COOKIE])
    with env.rt.session() as db:
        set_disabled(session=db, client_id=cid, disabled=True)
        db.commit()
    assert c.get("/console/detect").status_code == 303
    with env.rt.session() as db:
        row = db.get(ConsoleSession, session_id)
        assert row is not None and row.revoked_reason == "client_changed"  # ended for good, not just refused


# --- roles and CSRF -----------------------------------------------------------------------------------------------


def test_navigation_shows_what_the_role_may_do(env: Env) -> None:
    reviewer = sign_in(env, "reviewer").get("/console/").text
    assert 'href="/console/audit"' in reviewer and 'href="/console/subjects"' in reviewer
    assert 'href="/console/detect"' not in reviewer and 'href="/console/subjects/new"' not in reviewer
    analyst = sign_in(env, "analyst").get("/console/").text
    assert 'href="/console/detect"' in analyst and 'href="/console/audit"' not in analyst
    officer = sign_in(env, "officer").get("/console/").text
    assert 'href="/console/subjects/new"' in officer and 'href="/console/audit"' not in officer


def test_the_server_refuses_what_the_role_may_not_do(env: Env) -> None:
    subject = make_subject(env)
    reviewer = sign_in(env, "reviewer")
    token = page_csrf(reviewer)
    assert reviewer.get("/console/subjects/new").status_code == 403
    r = reviewer.post(f"/console/subjects/{subject}/revoke", data={"csrf_token": token, "confirmation": subject})
    assert r.status_code == 403 and "consent:write" in r.text
    assert reviewer.get("/console/detect").status_code == 403
    assert all(c.revoked_at is None for c in _consents(env, subject))
    analyst = sign_in(env, "analyst")
    assert analyst.get("/console/audit").status_code == 403
    assert analyst.get(f"/console/subjects/{subject}").status_code == 403
    refused = last_entries(env, "request.rejected", 10)
    assert any(
        e.actor == f"client:{env.creds['reviewer'][0]}" and e.details["via"] == "console"
        and e.details["code"] == "insufficient_scope" and e.details["path"].endswith("/revoke")
        for e in refused
    )  # fmt: skip


def _consents(env: Env, subject: str) -> list:
    with env.rt.session() as db:
        return list_consents(session=db, subject_id=subject)


def test_a_form_without_this_sessions_csrf_token_is_refused_and_audited(env: Env) -> None:
    subject = make_subject(env)
    officer = sign_in(env, "officer")
    other = sign_in(env, "officer")
    for data in ({}, {"csrf_token": "x"}, {"csrf_token": page_csrf(other)}):
        r = officer.post(f"/console/subjects/{subject}/revoke", data={**data, "confirmation": subject})
        assert r.status_code == 403 and "csrf_refused" in r.text
    assert all(c.revoked_at is None for c in _consents(env, subject))
    refused = [e for e in last_entries(env, "request.rejected", 10) if e.details.get("code") == "csrf_refused"]
    assert (
        refused and refused[0].actor == f"client:{env.creds['officer'][0]}" and refused[0].details["via"] == "console"
    )


def test_revoke_asks_for_the_typed_subject_id_first(env: Env) -> None:
    subject = make_subject(env, "Grace")
    officer = sign_in(env, "officer")
    token = page_csrf(officer, f"/console/subjects/{subject}")
    step1 = officer.post(f"/console/subjects/{subject}/revoke", data={"csrf_token": token, "reason": "asked by email"})
    assert step1.status_code == 200 and 'name="confirmation"' in step1.text and subject in step1.text
    wrong = officer.post(
        f"/console/subjects/{subject}/revoke",
        data={"csrf_token": token, "reason": "asked by email", "confirmation": "yes"},
    )
    assert wrong.status_code == 400 and all(c.revoked_at is None for c in _consents(env, subject))
    done = officer.post(
        f"/console/subjects/{subject}/revoke",
        data={"csrf_token": token, "reason": "asked by email", "confirmation": subject},
    )
    assert done.status_code == 303 and done.headers["location"].endswith("?done=revoked")
    assert all(c.revoked_at is not None and c.revocation_reason == "asked by email" for c in _consents(env, subject))
    revoked = last_entries(env, "consent.revoked")[0]
    marker = last_entries(env, "console.consent_revoked")[0]
    assert revoked.actor == marker.actor == f"client:{env.creds['officer'][0]}"
    assert revoked.request_id == marker.request_id and marker.details["via"] == "console"
    page = officer.get(done.headers["location"]).text
    assert "Consent revoked" in page and "revoked" in page


def test_an_upload_over_the_limit_is_a_413_page(env: Env) -> None:
    analyst = sign_in(env, "analyst")
    token = page_csrf(analyst, "/console/detect")
    big = b"\0" * (1024 * 1024 + 1)
    r = analyst.post("/console/detect", data={"csrf_token": token}, files={"file": ("big.mp4", big, "video/mp4")})
    assert r.status_code == 413 and "payload_too_large" in r.text
    assert not any(env.rt.settings.uploads_dir.glob("det_*"))


# --- reviewer -------------------------------------------------------------------------------------------------------


def test_timeline_filters_and_pages_newest_first(env: Env) -> None:
    for i in range(60):
        env.rt.audit.append(action="test.paging", actor="test", outcome="ok" if i % 3 else "denied", subject="subj_p")
    reviewer = sign_in(env, "reviewer")
    first = reviewer.get("/console/audit", params={"action": "test.paging"})
    seqs = [int(s) for s in re.findall(r'href="/console/audit/(\d+)"', first.text)]
    assert len(seqs) == 50 and seqs == sorted(seqs, reverse=True)
    older = re.search(r'href="(\?[^"]*before=\d+[^"]*)"', first.text)
    assert older, "no link to older entries"
    second = reviewer.get("/console/audit" + older.group(1).replace("&amp;", "&"))
    rest = [int(s) for s in re.findall(r'href="/console/audit/(\d+)"', second.text)]
    assert len(rest) == 10 and max(rest) < min(seqs)
    newer = re.search(r'href="(\?[^"]*after=\d+[^"]*)"', second.text)
    assert newer, "no link back to newer entries"
    back = reviewer.get("/console/audit" + newer.group(1).replace("&amp;", "&"))
    assert [int(s) for s in re.findall(r'href="/console/audit/(\d+)"', back.text)] == seqs
    denied = reviewer.get("/console/audit", params={"action": "test.paging", "outcome": "denied", "subject": "subj_p"})
    assert len(re.findall(r'href="/console/audit/\d+"', denied.text)) == 20
    late = reviewer.get("/console/audit", params={"action": "test.paging", "since": "2999-01-01T00:00"})
    assert "No entries match" in late.text
    bad = reviewer.get("/console/audit", params={"since": "yesterday"})
    assert bad.status_code == 400


def test_entry_detail_shows_hashes_chain_position_and_covering_checkpoint(env: Env) -> None:
    event = env.rt.audit.append(action="test.detail", actor="test", outcome="ok", details={"k": "<b>v</b>"})
    r = sign_in(env, "reviewer").get(f"/console/audit/{event.seq}")
    assert r.status_code == 200
    assert event.entry_hash in r.text and event.prev_hash in r.text and "matches its fields" in r.text
    assert f"links to entry {event.seq - 1}" in r.text and "valid (Ed25519)" in r.text
    assert "&lt;b&gt;v&lt;/b&gt;" in r.text and "<b>v</b>" not in r.text  # details are escaped
    assert sign_in(env, "reviewer").get("/console/audit/999999").status_code == 404


def test_verify_now_says_ok_or_names_the_first_bad_entry(env: Env) -> None:
    reviewer = sign_in(env, "reviewer")
    token = page_csrf(reviewer, "/console/audit/verify")
    ok = reviewer.post("/console/audit/verify", data={"csrf_token": token})
    assert ok.status_code == 200 and "OK: the log is intact" in ok.text
    victim = env.rt.audit.append(action="test.victim", actor="test", outcome="ok")
    env.rt.audit.append(action="test.after", actor="test", outcome="ok")
    with env.rt.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = :s"), {"s": victim.seq})
    try:
        bad = reviewer.post("/console/audit/verify", data={"csrf_token": token})
        assert bad.status_code == 200 and "FAILED: chain_broken" in bad.text
        assert f'href="/console/audit/{victim.seq}">entry {victim.seq}</a>' in bad.text
        assert "does not match its fields" in reviewer.get(f"/console/audit/{victim.seq}").text
    finally:
        with env.rt.engine.begin() as conn:
            conn.execute(text("UPDATE audit_event SET actor = 'test' WHERE seq = :s"), {"s": victim.seq})
    verified = last_entries(env, "audit.verified", 3)
    assert [e.details["intact"] for e in verified[:2]] == [False, True] and verified[0].details["seq"] == victim.seq


def test_export_downloads_the_filtered_entries_as_rehashable_jsonl(env: Env) -> None:
    env.rt.audit.append(action="test.export", actor="test", outcome="denied")
    env.rt.audit.append(action="test.export", actor="test", outcome="ok")
    r = sign_in(env, "reviewer").get("/console/audit/export", params={"action": "test.export", "outcome": "denied"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) == 1 and lines[0]["outcome"] == "denied"
    record = lines[0]
    assert compute_entry_hash({k: v for k, v in record.items() if k != "entry_hash"}) == record["entry_hash"]
    assert last_entries(env, "audit.exported")[0].details["filters"] == {"action": "test.export", "outcome": "denied"}


def test_subject_page_shows_consent_history_and_generations_with_decision_and_manifest(env: Env) -> None:
    subject = make_subject(env, "Lin")
    manifest = {"claim_generator": "provatar", "assertions": [{"label": "c2pa.actions"}]}
    with env.rt.session() as db:
        gen = Generation(
            id="gen_console1", request_id="r1", subject_id=subject, purpose="marketing", client_id="cl_x",
            status=JobStatus.succeeded, watermark_tag=0xC0FFEE, photo_path="-", audio_path="-",
            manifest_json=json.dumps(manifest), policy_decision_id="dec_1", consent_record_id="cons_1",
        )  # fmt: skip
        db.add(gen)
        db.commit()
    env.rt.audit.append(
        action="policy.decision", actor="client:cl_x", subject=subject, outcome="ok",
        details={"generation_id": "gen_console1",
                 "decision": {"decision_id": "dec_1", "allowed": True, "reasons": [], "policy_version": "pv-7"}},
    )  # fmt: skip
    page = sign_in(env, "reviewer").get(f"/console/subjects/{subject}").text
    assert "ab" * 32 in page and "active" in page  # the evidence hash and the state of the grant
    assert "gen_console1" in page and "pv-7" in page and "00c0ffee" in page and "c2pa.actions" in page
    assert "<details" in page  # the manifest is collapsible
    officer_page = sign_in(env, "officer").get(f"/console/subjects/{subject}").text  # no audit:read: no generations
    assert "gen_console1" not in officer_page and "Grant consent" in officer_page


def test_pages_carry_a_strict_content_security_policy_and_no_store(env: Env) -> None:
    r = sign_in(env, "reviewer").get("/console/audit")
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"
    css = browser(env).get("/console/static/console.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    missing = browser(env).get("/console/no-such-page")
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")
    metrics = browser(env).get("/metrics").text
    assert 'route="/console/audit"' in metrics  # labelled with the mount prefix, apart from the API's routes


def test_static_assets_are_local(env: Env) -> None:
    templates = Path(__file__).resolve().parents[2] / "service" / "console" / "templates"
    for page in templates.glob("*.html"):
        assert not re.search(r'(src|href)="(https?:)?//', page.read_text()), f"{page.name} loads something remote"


def _console_post_paths() -> list[str]:
    """Every form action the console's route modules register (all of them are included by create_console)."""
    from fastapi.routing import APIRoute

    from service.console import routes_audit, routes_auth, routes_detect, routes_subjects

    return [
        "/console" + re.sub(r"\{[^}]+\}", "subj_x", r.path)
        for module in (routes_auth, routes_audit, routes_subjects, routes_detect)
        for r in module.router.routes
        if isinstance(r, APIRoute) and "POST" in r.methods
    ]


def test_every_console_form_action_refuses_a_missing_csrf_token(env: Env) -> None:
    paths = _console_post_paths()
    assert {"/console/sign-in", "/console/sign-out", "/console/audit/verify", "/console/detect"} <= set(paths)
    officer = sign_in(env, "officer")
    for path in paths:
        r = officer.post(path, data={"confirmation": "subj_x", "client_id": "x", "client_secret": "y"})
        assert r.status_code == 403 and "csrf_refused" in r.text, path
        r = officer.post(path, files={"csrf_token": (None, "forged"), "photos": ("a.png", b"x", "image/png")})
        assert r.status_code == 403 and "csrf_refused" in r.text, path


def test_the_session_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", public_url="https://console.example", rate_limits_enabled=False)
    initialize(settings)
    rt = Runtime(settings)
    with rt.session() as db:
        client, secret = create_client(session=db, name="behind-proxy", scopes=["audit:read"])
        cid = client.client_id
        db.commit()
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app, follow_redirects=False) as c:
        page = c.get("/console/sign-in")
        assert "secure" in page.headers["set-cookie"].lower()
        # A browser talks HTTPS to the proxy and sends the Secure cookie back; this client talks plain HTTP to the
        # app and keeps Secure cookies to itself, so the test sends it by hand.
        pre = re.search(rf"{sessions.PRESESSION_COOKIE}=([^;]+)", page.headers["set-cookie"]).group(1)  # type: ignore[union-attr]
        c.cookies.clear()
        r = c.post(
            "/console/sign-in",
            data={"client_id": cid, "client_secret": secret, "csrf_token": csrf_of(page.text)},
            headers={"Cookie": f"{sessions.PRESESSION_COOKIE}={pre}"},
        )
        assert r.status_code == 303
        session_cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(sessions.SESSION_COOKIE))
        assert "secure" in session_cookie.lower()
    rt.close()


def test_repeated_failed_sign_ins_are_rate_limited_like_the_token_endpoint(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", rate_limit_auth_failures_per_ip="2/minute")
    initialize(settings)
    rt = Runtime(settings)
    with rt.session() as db:
        client, secret = create_client(session=db, name="limited", scopes=["audit:read"])
        cid = client.client_id
        db.commit()
    app = create_app(settings, runtime=rt, start_worker=False)
    with TestClient(app, follow_redirects=False) as c:
        for _ in range(2):
            page = c.get("/console/sign-in")
            r = c.post(
                "/console/sign-in", data={"client_id": cid, "client_secret": "no", "csrf_token": csrf_of(page.text)}
            )
            assert r.status_code == 401
        page = c.get("/console/sign-in")
        r = c.post(
            "/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": csrf_of(page.text)}
        )
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "rate_limited" in r.text
        assert sessions.SESSION_COOKIE not in c.cookies
    rt.close()


def test_values_from_the_database_are_escaped_and_sign_in_never_redirects_off_the_console(env: Env) -> None:
    subject = make_subject(env, '<script>alert("x")</script>')
    reviewer = sign_in(env, "reviewer")
    page = reviewer.get(f"/console/subjects/{subject}").text
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    for target, expected in (
        ("https://evil.example/", "/console/"),
        ("//evil.example/console/", "/console/"),
        ("/console/audit?action=x", "/console/audit?action=x"),
    ):
        c = browser(env)
        token = csrf_of(c.get("/console/sign-in", params={"next": target}).text)
        cid, secret = env.creds["reviewer"]
        r = c.post(
            "/console/sign-in", data={"client_id": cid, "client_secret": secret, "csrf_token": token, "next": target}
        )
        assert r.status_code == 303 and r.headers["location"] == expected, target


# --- follow-ups: scoped detection, real erasure, evidence bundle, inclusion proof ----------------------------------


def _linked_report(gen_id: str, subject: str, consent_id: str, audit_seq: int) -> object:
    """A detection report whose watermark and manifest link the clip to `gen_id` (as run_detection resolves a found
    tag), with the ids also written into a reason sentence."""
    from safeguards.detection import DetectionReport

    return DetectionReport(
        media={"kind": "video", "width": 256, "height": 256, "frames": 16, "duration_s": 1.6},
        c2pa={"present": True, "state": "Trusted", "signer": "provatar test", "generation_id": gen_id},
        watermark={
            "found": True, "payload": "00c0ffe1", "frames_agreeing": 0.9, "generation_id": gen_id,
            "subject_id": subject,
            "consent_record_id": consent_id, "audit_seq": audit_seq, "created_at": "2026-01-01T00:00:00+00:00",
            "stored_manifest": {"assertions": [{"label": "provatar.consent", "data": {"subject": subject}}]},
        },
        classifier={"score": 0.9},
        verdict="provatar-generated",
        reasons=[f"watermark of generation {gen_id} (subject {subject}, consent {consent_id})"],
    )  # fmt: skip


def test_the_detection_report_on_the_page_and_in_the_download_is_scoped_by_the_signed_in_client(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    from service.console import routes_detect

    subject = make_subject(env, "Linked")
    consent_id, seq = "cons_linked_console", 424242
    owners = {"gen_other_console": "cl_someone_else", "gen_mine_console": env.creds["analyst"][0]}
    with env.rt.session() as db:
        for i, (gen_id, owner) in enumerate(owners.items()):
            db.add(Generation(
                id=gen_id, request_id="r", subject_id=subject, purpose="marketing", client_id=owner,
                status=JobStatus.succeeded, watermark_tag=0xC0FFE1 + i, photo_path="-", audio_path="-",
                consent_record_id=consent_id, audit_seq=seq,
            ))  # fmt: skip
        db.commit()

    def detect_as(role: str, gen_id: str) -> tuple[str, str]:
        monkeypatch.setattr(
            routes_detect, "run_detection", lambda *a, **k: _linked_report(gen_id, subject, consent_id, seq)
        )
        c = sign_in(env, role)
        r = c.post(
            "/console/detect", data={"csrf_token": page_csrf(c, "/console/detect")},
            files={"file": ("clip.mp4", b"not analysed here", "video/mp4")},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        href = re.search(r'href="data:text/html;charset=utf-8;base64,([^"]+)"', r.text)
        assert href, "no download link"
        return r.text, base64.b64decode(href.group(1)).decode()

    identifiers = ("gen_other_console", subject, consent_id, str(seq))
    page, download = detect_as("analyst", "gen_other_console")  # detect only, another client's generation
    assert "provatar-generated" in page and "found" in page
    for ident in identifiers:
        assert ident not in page and ident not in download, ident
    assert "another client" in page and "another client" in download
    viewed = last_entries(env, "console.detection_viewed")[0]
    assert viewed.details["links_hidden"] is True and viewed.subject == subject  # the log keeps the link

    for role, gen_id in (("analyst", "gen_mine_console"), ("auditor", "gen_other_console")):  # owner; audit:read
        page, download = detect_as(role, gen_id)
        for ident in (gen_id, subject, consent_id):
            assert ident in page or ident in download, (role, ident)
        assert gen_id in page and f"generation <code>{gen_id}</code>" in page
        assert "another client" not in page


def test_erase_confirms_runs_erase_subject_and_the_subject_page_then_shows_the_tombstone(env: Env) -> None:
    from safeguards.consent import SubjectReference

    subject = make_subject(env, "Erin")
    output = env.rt.settings.data_dir / "erase-test" / "gen_erase_console.mp4"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"video of Erin")
    with env.rt.session() as db:
        db.add(SubjectReference(
            subject_id=subject, embedding=[0.1] * 4, embedder="test", photo_sha256="ef" * 32,
            created_at=datetime.now(UTC),
        ))  # fmt: skip
        db.add(Generation(
            id="gen_erase_console", request_id="r", subject_id=subject, purpose="marketing", client_id="cl_x",
            status=JobStatus.succeeded, watermark_tag=0xE7A5E, photo_path="-", audio_path="-", output_path=str(output),
            manifest_json=json.dumps({"subject": subject}), finished_at=datetime.now(UTC),
        ))  # fmt: skip
        db.commit()
    officer = sign_in(env, "officer")
    page = officer.get(f"/console/subjects/{subject}").text
    assert "ef" * 32 in page and f"/console/subjects/{subject}/erase" in page
    token = csrf_of(page)
    step1 = officer.post(f"/console/subjects/{subject}/erase", data={"csrf_token": token})
    assert step1.status_code == 200 and f"erase {subject}" in step1.text
    wrong = officer.post(f"/console/subjects/{subject}/erase", data={"csrf_token": token, "confirmation": subject})
    assert wrong.status_code == 400 and "Nothing was erased" in wrong.text and output.exists()
    done = officer.post(
        f"/console/subjects/{subject}/erase", data={"csrf_token": token, "confirmation": f" erase {subject} "}
    )
    assert done.status_code == 200 and f"{subject} was erased." in done.text
    assert "gen_erase_console" in done.text and not output.exists()
    rows = dict(re.findall(r'<th scope="row">([^<]+)</th><td>(\d+)', done.text))
    assert rows["Consent records revoked"] == "1" and rows["Reference embeddings and photo hashes deleted"] == "1"
    assert rows["Videos deleted"] == "1" and rows["Photo fingerprints kept"] == "1"

    erased = last_entries(env, "subject.erased")[0]
    marker = last_entries(env, "console.subject_erased")[0]
    assert erased.subject == marker.subject == subject and erased.request_id == marker.request_id
    assert erased.actor == marker.actor == f"client:{env.creds['officer'][0]}"
    assert marker.details["via"] == "console" and marker.details["erasure_audit_seq"] == erased.seq
    assert f"/console/audit/{erased.seq}" not in done.text  # the officer has no audit:read: no link to follow

    after = officer.get(f"/console/subjects/{subject}").text
    assert 'class="state st-erased"' in after and 'id="erased"' in after and "Erin" not in after
    assert "ef" * 32 not in after and "Grant consent" not in after and "/erase" not in after
    listing = officer.get("/console/subjects", params={"page": 1}).text
    assert "st-erased" in listing
    reviewer_view = sign_in(env, "reviewer").get(f"/console/subjects/{subject}").text
    assert "gen_erase_console" in reviewer_view and "withheld: subject_erased" in reviewer_view
    assert "410 <code>subject_erased</code>" in reviewer_view and "cleared by the erasure" in reviewer_view
    again = officer.post(
        f"/console/subjects/{subject}/erase", data={"csrf_token": token, "confirmation": f"erase {subject}"}
    )
    assert again.status_code == 200 and "erased already" in again.text


def test_a_revoked_subjects_videos_show_as_withheld(env: Env) -> None:
    subject = make_subject(env, "Rita")
    with env.rt.session() as db:
        db.add(Generation(
            id="gen_revoked_console", request_id="r", subject_id=subject, purpose="marketing", client_id="cl_x",
            status=JobStatus.succeeded, watermark_tag=0x5E7, photo_path="-", audio_path="-",
            finished_at=datetime.now(UTC),
        ))  # fmt: skip
        db.commit()
    reviewer = sign_in(env, "reviewer")
    assert "withheld:" not in reviewer.get(f"/console/subjects/{subject}").text  # consent in force: served
    officer = sign_in(env, "officer")
    r = officer.post(
        f"/console/subjects/{subject}/revoke",
        data={"csrf_token": page_csrf(officer), "confirmation": subject, "reason": "asked"},
    )
    assert r.status_code == 303
    assert "withheld: consent_revoked" in reviewer.get(f"/console/subjects/{subject}").text


def test_the_entry_page_shows_the_earliest_covering_checkpoint_with_a_verified_inclusion_proof(env: Env) -> None:
    from audit.merkle import root_from_inclusion_proof

    event = env.rt.audit.append(action="test.inclusion", actor="test", outcome="ok")
    for _ in range(3):
        env.rt.audit.append(action="test.inclusion.after", actor="test", outcome="ok")
    page = sign_in(env, "reviewer").get(f"/console/audit/{event.seq}").text
    assert 'id="inclusion-ok"' in page and "Earliest signed checkpoint" in page
    earliest = page.split("Earliest signed checkpoint", 1)[1].split("Current checkpoint", 1)[0]
    size = int(re.search(r"<td>(\d+) entries \(the first checkpoint", earliest).group(1))  # type: ignore[union-attr]
    current = env.rt.audit.checkpoint()
    assert current is not None and event.seq <= size < current.size  # the earliest, not the current one
    root = re.search(r"Merkle root</th><td class=\"break\"><code>([0-9a-f]{64})", earliest).group(1)  # type: ignore[union-attr]
    proof = [bytes.fromhex(h) for h in re.findall(r"<li><code>([0-9a-f]{64})</code></li>", earliest)]
    # What the page shows is enough to check the entry offline: entry hash + proof give the signed root.
    assert root_from_inclusion_proof(bytes.fromhex(event.entry_hash), event.seq - 1, size, proof).hex() == root
    assert root_from_inclusion_proof(bytes.fromhex("00" * 32), event.seq - 1, size, proof).hex() != root


def test_the_entry_page_shows_old_and_new_audit_detail_keys(env: Env) -> None:
    old = env.rt.audit.append(
        action="generation.completed", actor="test", outcome="ok",
        details={"photo_sha256": "a1" * 32, "audio_sha256": "b2" * 32},
    )  # fmt: skip
    new = env.rt.audit.append(
        action="generation.completed", actor="test", outcome="ok",
        details={"photo_fingerprint": "c3" * 32, "audio_fingerprint": "d4" * 32, "photo_fingerprints": ["e5" * 32]},
    )  # fmt: skip
    reviewer = sign_in(env, "reviewer")
    old_page, new_page = (reviewer.get(f"/console/audit/{e.seq}").text for e in (old, new))
    assert "&#34;photo_sha256&#34;: &#34;" + "a1" * 32 in old_page and "&#34;audio_sha256&#34;" in old_page
    assert "&#34;photo_fingerprint&#34;: &#34;" + "c3" * 32 in new_page and "d4" * 32 in new_page
    assert "&#34;photo_fingerprints&#34;" in new_page and "e5" * 32 in new_page


def test_the_evidence_bundle_download_verifies_offline_and_is_audited(env: Env, tmp_path: Path) -> None:
    import hashlib
    import zipfile

    from audit.bundle_verify import verify_bundle

    env.rt.audit.append(action="test.bundle", actor="test", outcome="ok")
    reviewer = sign_in(env, "reviewer")
    verify_page = reviewer.get("/console/audit/verify").text
    assert 'action="/console/audit/bundle"' in verify_page and "Export evidence bundle" in verify_page
    r = reviewer.post("/console/audit/bundle", data={"csrf_token": csrf_of(verify_page)})
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "attachment" in r.headers["content-disposition"] and int(r.headers["content-length"]) == len(r.content)
    bundle = tmp_path / "evidence.zip"
    bundle.write_bytes(r.content)
    report = verify_bundle(bundle, trusted_keys=[env.rt.audit.public_key])
    assert report.intact and report.key_trusted, report.to_dict()
    exported = last_entries(env, "audit.exported")[0]
    assert exported.actor == f"client:{env.creds['reviewer'][0]}" and exported.details["via"] == "console"
    assert exported.details["format"] == "bundle" and exported.details["entries"] == report.entries
    assert exported.details["sha256"] == hashlib.sha256(r.content).hexdigest()
    assert exported.details["root_hash"] == report.root_hash
    assert not any(env.rt.settings.uploads_dir.glob("bundle_*"))  # the temporary file is gone
    fingerprint = re.search(r'id="key-fingerprint">([^<]+)<', verify_page).group(1)  # type: ignore[union-attr]
    assert verify_bundle(bundle, trusted_fingerprints=[fingerprint]).key_trusted
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(tampered, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            edited = info.filename == "entries.jsonl"
            dst.writestr(info, data.replace(b"test.bundle", b"test.bundlf") if edited else data)
    assert not verify_bundle(tampered, trusted_keys=[env.rt.audit.public_key]).intact
    analyst = sign_in(env, "analyst")
    assert analyst.post("/console/audit/bundle", data={"csrf_token": page_csrf(analyst)}).status_code == 403


def test_a_log_that_does_not_verify_is_not_packaged_into_a_bundle(env: Env) -> None:
    victim = env.rt.audit.append(action="test.bundle.victim", actor="test", outcome="ok")
    env.rt.audit.append(action="test.bundle.after", actor="test", outcome="ok")
    reviewer = sign_in(env, "reviewer")
    token = page_csrf(reviewer, "/console/audit/verify")
    with env.rt.engine.begin() as conn:
        conn.execute(text("UPDATE audit_event SET actor = 'mallory' WHERE seq = :s"), {"s": victim.seq})
    try:
        r = reviewer.post("/console/audit/bundle", data={"csrf_token": token})
        assert r.status_code == 500 and r.headers["content-type"].startswith("text/html"), r.status_code
        assert "chain_broken" in r.text
        assert not any(env.rt.settings.uploads_dir.glob("bundle_*"))
    finally:
        with env.rt.engine.begin() as conn:
            conn.execute(text("UPDATE audit_event SET actor = 'test' WHERE seq = :s"), {"s": victim.seq})
    assert not [e for e in last_entries(env, "audit.exported", 3) if e.seq > victim.seq and e.details.get("format")]


def test_an_operator_lists_and_revokes_sessions_from_the_cli(env: Env) -> None:
    from typer.testing import CliRunner

    from service.cli import app
    from service.settings import get_settings

    c = sign_in(env, "auditor")
    cli_env = {"PROVATAR_DATA_DIR": str(env.rt.settings.data_dir)}

    def cli(*args: str):  # type: ignore[no-untyped-def]
        get_settings.cache_clear()
        try:
            return CliRunner().invoke(app, list(args), env=cli_env, catch_exceptions=False)
        finally:
            get_settings.cache_clear()

    listed = cli("console", "sessions", "--json")
    assert listed.exit_code == 0, listed.output
    mine = [s for s in json.loads(listed.stdout) if s["principal"] == f"client:{env.creds['auditor'][0]}"]
    assert mine and mine[0]["via"] == "client" and "audit:read" in mine[0]["scopes"]
    revoked = cli("console", "sessions", "--revoke", mine[0]["id"][:16])
    assert revoked.exit_code == 0 and "revoked" in revoked.stdout
    r = c.get("/console/audit")
    assert r.status_code == 303 and "why=expired" in r.headers["location"]
    entry = last_entries(env, "console.session_revoked")[0]
    assert entry.details["principal"] == f"client:{env.creds['auditor'][0]}" and entry.actor.startswith("cli:")
    missing = cli("console", "sessions", "--revoke", "deadbeefdeadbeef")
    assert missing.exit_code != 0 and "console_session_not_found" in missing.output
    ended = json.loads(cli("console", "sessions", "--all", "--json").stdout)
    assert any(s["id"] == mine[0]["id"] and s["revoked_reason"] == "revoked" for s in ended)
