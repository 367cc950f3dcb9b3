"""The console in a real browser: Debian's Chromium (headless, driven by Playwright) against `provatar serve` on a
loopback port. Sign-in, each role's main flow, CSRF refusal, a reviewer kept from consent:write actions, keyboard
entry (skip link) and no horizontal scrolling at phone width.

Skips when Chromium or Playwright is missing on a developer machine; fails under CI (`CI` set), where `.ci/run`
installs Chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from generation import load_audio, load_image
from generation.media import encode_mp4
from tests.service.test_real_server import running_server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ROLES = {
    "reviewer": ["audit:read", "consent:read"],
    "analyst": ["detect"],
    "officer": ["consent:read", "consent:write"],
}


def _missing(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs Chromium)")
    pytest.skip(reason)


@dataclass
class Console:
    base: str
    creds: dict[str, tuple[str, str]]
    log: Path


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    with running_server(tmp_path_factory.mktemp("console-server")) as server:
        token = server.token("clients:admin")
        creds = {}
        for role, scopes in ROLES.items():
            r = httpx.post(
                f"{server.base}/v1/clients",
                json={"name": f"console-{role}", "scopes": scopes},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert r.status_code == 201, r.text
            creds[role] = (r.json()["client_id"], r.json()["client_secret"])
        yield Console(server.base, creds, server.log)


@pytest.fixture(scope="module")
def chromium() -> Iterator[object]:
    if not CHROMIUM.exists():
        _missing(f"{CHROMIUM} is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (the dev extra)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in_page(chromium, console: Console, role: str, *, width: int = 1280):  # type: ignore[no-untyped-def]
    context = chromium.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{console.base}/console/")
    assert "/console/sign-in" in page.url  # not signed in: sent to the sign-in form
    cid, secret = console.creds[role]
    page.get_by_label("Client id").fill(cid)
    page.get_by_label("Client secret").fill(secret)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{console.base}/console/")
    return page


def no_horizontal_overflow(page) -> bool:  # type: ignore[no-untyped-def]
    return bool(page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory, example_photo: Path, example_audio: Path) -> Path:
    """1.6 s of the example portrait, gently zooming, with the first words of the example speech (our encoder)."""
    out = tmp_path_factory.mktemp("clip") / "portrait.mp4"
    face = cv2.resize(load_image(example_photo, max_pixels=10**7), (256, 256), interpolation=cv2.INTER_AREA)
    fps, seconds = 10, 1.6

    def frames() -> Iterator[np.ndarray]:
        for i in range(int(fps * seconds)):
            s = 1.0 + 0.01 * i
            m = cv2.getRotationMatrix2D((128, 128), 0, s)
            yield cv2.warpAffine(face, m, (256, 256), borderMode=cv2.BORDER_REFLECT)

    return encode_mp4(frames(), load_audio(example_audio).head(seconds), out, fps=fps)


def test_reviewer_signs_in_filters_the_timeline_and_verifies_the_log(chromium, console: Console) -> None:  # type: ignore[no-untyped-def]
    page = signed_in_page(chromium, console, "reviewer")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"  # first stop: the skip link
    nav = page.get_by_role("navigation", name="Main")
    assert nav.get_by_role("link", name="Audit log").is_visible()
    assert nav.get_by_role("link", name="Detect").count() == 0 and nav.get_by_role("link", name="Enroll").count() == 0
    nav.get_by_role("link", name="Audit log").click()
    page.get_by_label("Action").fill("console.signed_in")
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*action=console\.signed_in.*"))
    rows = page.locator("table.timeline tbody tr")
    assert rows.count() >= 1
    actions = rows.locator("td:nth-child(3)").all_inner_texts()
    assert set(actions) == {"console.signed_in"}
    rows.first.locator("a").first.click()
    assert page.get_by_text("matches its fields").is_visible()
    assert page.get_by_text("valid (Ed25519)").first.is_visible()
    assert page.locator("#inclusion-ok").inner_text() == "verified"  # the earliest checkpoint's inclusion proof
    nav.get_by_role("link", name="Verify").click()
    page.get_by_role("button", name="Verify now").click()
    assert "OK: the log is intact" in page.locator("#verify-result").inner_text()


def test_reviewer_downloads_an_evidence_bundle_that_verifies_offline(
    chromium,  # type: ignore[no-untyped-def]
    console: Console,
    tmp_path: Path,
) -> None:
    page = signed_in_page(chromium, console, "reviewer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    page.get_by_role("link", name=re.compile("Evidence bundle")).click()
    fingerprint = page.locator("#key-fingerprint").inner_text()
    with page.expect_download() as info:
        page.get_by_role("button", name="Export evidence bundle").click()
    assert info.value.suggested_filename.startswith("provatar-audit-bundle-")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    # What a regulator runs: the CLI, with no data directory and no database, trusting the key's fingerprint.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVATAR_")}
    env["PROVATAR_DATA_DIR"] = str(tmp_path / "no-data-dir")
    checked = subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", "verify-export", str(saved), "--fingerprint", fingerprint],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert not (tmp_path / "no-data-dir").exists()


def test_analyst_uploads_a_clip_sees_the_verdict_and_downloads_the_report(
    chromium,  # type: ignore[no-untyped-def]
    console: Console,
    short_clip: Path,
) -> None:
    page = signed_in_page(chromium, console, "analyst")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Detect").click()
    page.get_by_label(re.compile("Video")).set_input_files(str(short_clip))
    page.get_by_role("button", name="Analyse").click()
    verdict = page.locator("#verdict")
    verdict.wait_for(timeout=300_000)
    assert verdict.locator("strong").inner_text() in {"provatar-generated", "likely-synthetic", "no-evidence"}
    frame = page.frame_locator("iframe.report")
    assert "Detection report" in frame.locator("h1").inner_text()
    assert frame.locator("h2", has_text="Cues").count() == 1
    with page.expect_download() as info:
        page.get_by_role("link", name="Download the report (HTML)").click()
    saved = Path(info.value.path()).read_text(encoding="utf-8")
    assert saved.startswith("<!doctype html>") and "Detection report: portrait.mp4" in saved
    page.set_viewport_size({"width": 375, "height": 800})
    assert no_horizontal_overflow(page), "the detection result scrolls sideways at 375 px"


def test_officer_enrolls_a_subject_and_revokes_after_typing_its_id(
    chromium,  # type: ignore[no-untyped-def]
    console: Console,
    example_photo: Path,
    tmp_path: Path,
) -> None:
    evidence = tmp_path / "consent-form.txt"
    evidence.write_text("Signed consent of the subject, for marketing.")
    page = signed_in_page(chromium, console, "officer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Enroll").click()
    page.get_by_label("Name").fill("Eileen")
    page.get_by_label("Reference photo(s)").set_input_files(str(example_photo))
    page.get_by_label("Purposes consented to").fill("marketing, education")
    page.get_by_label("Consent evidence file").set_input_files(str(evidence))
    page.get_by_label("I checked that the evidence").check()
    page.get_by_role("button", name="Enroll").click()
    page.get_by_text("Subject enrolled and consent recorded.").wait_for(timeout=180_000)
    subject_id = re.search(r"/console/subjects/(subj_[A-Za-z0-9]+)", page.url).group(1)  # type: ignore[union-attr]
    assert page.locator(".st-active").count() == 1

    page.get_by_label("Reason").fill("withdrawn by email")
    page.get_by_role("button", name="Revoke…").click()
    page.get_by_label(re.compile("To confirm, type")).fill("not the id")
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_text("Nothing was revoked").is_visible()
    page.get_by_label(re.compile("To confirm, type")).fill(subject_id)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text("Consent revoked").wait_for()
    assert page.locator(".st-revoked").count() == 1 and page.get_by_text("withdrawn by email").is_visible()


def test_a_form_with_a_forged_csrf_token_is_refused(chromium, console: Console) -> None:  # type: ignore[no-untyped-def]
    page = signed_in_page(chromium, console, "reviewer")
    page.goto(f"{console.base}/console/audit/verify")
    page.evaluate("document.querySelector('main input[name=csrf_token]').value = 'forged'")
    with page.expect_response(lambda r: r.url.endswith("/console/audit/verify") and r.request.method == "POST") as r:
        page.get_by_role("button", name="Verify now").click()
    assert r.value.status == 403
    assert "csrf_refused" in page.locator("main").inner_text()


def test_a_reviewer_cannot_reach_consent_write_actions(chromium, console: Console) -> None:  # type: ignore[no-untyped-def]
    page = signed_in_page(chromium, console, "reviewer")
    response = page.goto(f"{console.base}/console/subjects/new")
    assert response is not None and response.status == 403
    assert "consent:write" in page.locator("main").inner_text()
    page.goto(f"{console.base}/console/")
    token = page.locator("header input[name=csrf_token]").get_attribute("value")
    # Even with this session's valid CSRF token, the server refuses the action.
    refused = page.request.post(
        f"{console.base}/console/subjects/subj_x/revoke", form={"csrf_token": token or "", "confirmation": "subj_x"}
    )
    assert refused.status == 403
    refused = page.request.post(
        f"{console.base}/console/blocklist", multipart={"csrf_token": token or "", "label": "x", "confirm": "yes"}
    )
    assert refused.status == 403


def test_pages_fit_a_phone_width_without_horizontal_scrolling(chromium, console: Console) -> None:  # type: ignore[no-untyped-def]
    pages = {
        "reviewer": ["/console/", "/console/audit", "/console/audit/1", "/console/audit/verify", "/console/subjects"],
        "officer": ["/console/subjects/new", "/console/blocklist", "/console/subjects"],
        "analyst": ["/console/detect"],
    }
    for role, paths in pages.items():
        page = signed_in_page(chromium, console, role, width=375)
        for path in paths:
            response = page.goto(f"{console.base}{path}")
            assert response is not None and response.status == 200, path
            assert no_horizontal_overflow(page), f"{path} scrolls sideways at 375 px for the {role}"
        # every subject page the officer can open fits too
        if role == "officer":
            page.goto(f"{console.base}/console/subjects")
            for href in page.locator("main table a").evaluate_all("els => els.map(e => e.getAttribute('href'))")[:3]:
                page.goto(f"{console.base}{href}")
                assert no_horizontal_overflow(page), f"{href} scrolls sideways at 375 px"


def test_officer_erases_a_subject_after_typing_the_confirmation(
    chromium,  # type: ignore[no-untyped-def]
    console: Console,
    example_photo: Path,
) -> None:
    officer = console.creds["officer"]
    token = httpx.post(f"{console.base}/v1/token", data={"grant_type": "client_credentials"}, auth=officer).json()[
        "access_token"
    ]
    r = httpx.post(
        f"{console.base}/v1/subjects",
        data={"name": "To erase", "purposes": ["marketing"], "evidence_sha256": "cd" * 32},
        files=[("photos", (example_photo.name, example_photo.read_bytes(), "image/png"))],
        headers={"Authorization": f"Bearer {token}"},
        timeout=180,
    )
    assert r.status_code == 201, r.text
    subject_id = r.json()["id"]
    page = signed_in_page(chromium, console, "officer")
    page.goto(f"{console.base}/console/subjects/{subject_id}")
    page.get_by_role("button", name="Erase…").click()
    page.get_by_label(re.compile("To confirm, type")).fill(subject_id)
    page.get_by_role("button", name="Confirm").click()
    assert page.get_by_text("Nothing was erased").is_visible()
    page.get_by_label(re.compile("To confirm, type")).fill(f"erase {subject_id}")
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text(f"{subject_id} was erased.").wait_for(timeout=60_000)
    deleted = page.get_by_role("row", name=re.compile("Reference embeddings and photo hashes deleted"))
    assert deleted.inner_text().endswith("1")
    page.get_by_role("link", name="The subject's record").click()
    assert page.locator("h1 .st-erased").inner_text() == "erased" and page.locator("#erased").is_visible()
    assert "To erase" not in page.locator("main").inner_text()  # the name is gone
    assert page.get_by_role("button", name="Erase…").count() == 0
    assert page.get_by_role("button", name="Grant").count() == 0
    page.set_viewport_size({"width": 375, "height": 800})
    assert no_horizontal_overflow(page), "the erased subject's page scrolls sideways at 375 px"
    page.set_viewport_size({"width": 1280, "height": 900})

    # The same photo enrolls again only with a new consent, confirmed by the officer, with new evidence.
    def enroll_again(*, new_consent: bool) -> None:
        page.goto(f"{console.base}/console/subjects/new")
        page.get_by_label("Name").fill("Back again")
        page.get_by_label("Reference photo(s)").set_input_files(str(example_photo))
        page.get_by_label("Purposes consented to").fill("marketing")
        page.get_by_label("…or its SHA-256").fill("ef" * 32)
        page.get_by_label("I checked that the evidence").check()
        if new_consent:
            page.get_by_text("Only when the enrolment was refused").click()
            page.get_by_label(re.compile("This person was erased before")).check()
        page.get_by_role("button", name="Enroll").click()

    enroll_again(new_consent=False)
    refusal = page.get_by_role("alert")
    refusal.wait_for(timeout=180_000)
    assert "409 · subject_erased" in refusal.inner_text()
    enroll_again(new_consent=True)
    page.get_by_text("Subject enrolled and consent recorded.").wait_for(timeout=180_000)
    assert page.locator(".st-active").count() == 1 and "Back again" in page.locator("h1").inner_text()
