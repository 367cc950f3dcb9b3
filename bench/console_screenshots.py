"""Screenshots of every console page, for a person to look at: starts `provatar serve` on a loopback port with a fresh
data dir, seeds it (a subject, one short generation, a detection), signs in as each role in Debian's Chromium and
saves full-page PNGs at 1280 and 375 px wide to bench/out/console/. Last, the officer erases subjects (the subject
with the generation at 1280 px, a second one at 375 px) and both roles' views of the erased subject are saved.

    python bench/console_screenshots.py [--out bench/out/console] [--no-generation]

Also reports, per page and width, whether the page scrolls sideways (it must not).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PHOTO = EXAMPLES / "astronaut_eileen_collins.png"
SPEECH = EXAMPLES / "ljspeech_LJ001-0001.wav"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WIDTHS = (1280, 375)
ROLES = {
    "reviewer": ["audit:read", "consent:read"],
    "analyst": ["detect"],
    "officer": ["consent:read", "consent:write"],
    "generator": ["generate"],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(data_dir: Path) -> Iterator[tuple[str, tuple[str, str]]]:
    env = {**os.environ, "PROVATAR_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    init = subprocess.run([sys.executable, "-m", "service.cli", "init"], env=env, capture_output=True, text=True)
    if init.returncode != 0:
        raise SystemExit(init.stderr)
    fields = dict(line.split(":", 1) for line in init.stdout.splitlines() if line.strip().startswith("client_"))
    admin = (fields["  client_id"].strip(), fields["  client_secret"].strip())
    port = free_port()
    log = data_dir.parent / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, stdout=fh, stderr=fh
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"provatar serve exited:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"provatar serve did not come up:\n{log.read_text()}")
            time.sleep(0.5)
        yield base, admin
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def token(base: str, creds: tuple[str, str]) -> dict[str, str]:
    r = httpx.post(f"{base}/v1/token", data={"grant_type": "client_credentials"}, auth=creds)
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def enroll(base: str, officer: dict[str, str], name: str) -> str:
    r = httpx.post(
        f"{base}/v1/subjects",
        data={"name": name, "purposes": ["education", "marketing"]},
        files=[
            ("photos", (PHOTO.name, PHOTO.read_bytes(), "image/png")),
            ("evidence", ("consent.pdf", f"signed consent form of {name}".encode(), "application/pdf")),
        ],
        headers=officer,
        timeout=300,
    )
    r.raise_for_status()
    return str(r.json()["id"])


def seed(
    base: str, admin: tuple[str, str], tmp: Path, *, generation: bool
) -> tuple[dict[str, tuple[str, str]], str, str]:
    """Clients for each role, two enrolled subjects (the second only to be erased), and (optionally) one short
    generation of the first."""
    headers = token(base, admin)
    creds = {}
    for role, scopes in ROLES.items():
        r = httpx.post(f"{base}/v1/clients", json={"name": f"{role}-desk", "scopes": scopes}, headers=headers)
        r.raise_for_status()
        creds[role] = (r.json()["client_id"], r.json()["client_secret"])
    officer = token(base, creds["officer"])
    subject = enroll(base, officer, "Eileen Collins")
    second = enroll(base, officer, "Second Subject")
    if generation:
        from generation import load_audio

        sys.path.insert(0, str(ROOT))
        from tests.service.conftest import write_wav

        track = load_audio(SPEECH).head(2.0)
        wav = write_wav(tmp / "speech.wav", track.samples, track.sample_rate)
        r = httpx.post(
            f"{base}/v1/generations",
            data={"subject_id": subject, "purpose": "education"},
            files=[
                ("photo", (PHOTO.name, PHOTO.read_bytes(), "image/png")),
                ("audio", ("speech.wav", wav.read_bytes(), "audio/wav")),
            ],
            headers=token(base, creds["generator"]),
            timeout=120,
        )
        r.raise_for_status()
        gen = r.json()
        gen_headers = token(base, creds["generator"])
        deadline = time.monotonic() + 900
        while gen["status"] in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(2)
            gen = httpx.get(f"{base}/v1/generations/{gen['id']}", headers=gen_headers).json()
        print(f"generation {gen['id']}: {gen['status']}")
        if gen["status"] == "succeeded":
            video = httpx.get(f"{base}/v1/generations/{gen['id']}/video", headers=gen_headers, timeout=60)
            (tmp / "generated.mp4").write_bytes(video.content)
    return creds, subject, second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "console")
    ap.add_argument("--no-generation", action="store_true", help="skip the short generation (faster)")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    overflow: list[str] = []
    with tempfile.TemporaryDirectory(prefix="provatar-console-") as tmpdir:
        tmp = Path(tmpdir)
        with server(tmp / "data") as (base, admin):
            creds, subject, second = seed(base, admin, tmp, generation=not args.no_generation)
            clip = tmp / "generated.mp4" if (tmp / "generated.mp4").exists() else None
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)

                def signed_in(role: str, width: int, *, first_shots: bool):  # type: ignore[no-untyped-def]
                    context = browser.new_context(viewport={"width": width, "height": 900})
                    page = context.new_page()
                    page.set_default_timeout(300_000)

                    def shot(name: str) -> None:
                        path = args.out / f"{role}-{name}-{width}.png"
                        page.screenshot(path=str(path), full_page=True)
                        fits = page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
                        if not fits:
                            overflow.append(path.name)
                        print(f"{path.name}: {'fits' if fits else 'SCROLLS SIDEWAYS'}")

                    page.goto(f"{base}/console/sign-in")
                    if first_shots and role == "reviewer":
                        shot("sign-in")
                    page.get_by_label("Client id").fill(creds[role][0])
                    page.get_by_label("Client secret").fill(creds[role][1])
                    page.get_by_role("button", name="Sign in").click()
                    page.wait_for_url(f"{base}/console/")
                    if first_shots:
                        shot("home")
                    return context, page, shot

                for width in WIDTHS:
                    for role in ("reviewer", "officer", "analyst"):
                        context, page, shot = signed_in(role, width, first_shots=True)
                        flows[role](page, base, subject, clip, shot)
                        context.close()
                # Erasure last: the pages above show the subject as it was.
                for width, victim in zip(WIDTHS, (subject, second), strict=True):
                    context, page, shot = signed_in("officer", width, first_shots=False)
                    erase_flow(page, base, victim, shot)
                    context.close()
                    context, page, shot = signed_in("reviewer", width, first_shots=False)
                    page.goto(f"{base}/console/subjects/{subject}")
                    shot("subject-erased")
                    page.goto(f"{base}/console/subjects")
                    shot("subjects-after-erasure")
                    context.close()
                browser.close()
    print(f"screenshots in {args.out}")
    if overflow:
        raise SystemExit(f"pages that scroll sideways: {', '.join(overflow)}")


def reviewer_flow(page, base: str, subject: str, clip: Path | None, shot: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/console/audit")
    shot("audit")
    page.goto(f"{base}/console/audit?action=subject.enrolled")
    shot("audit-filtered")
    href = page.locator("table.timeline tbody a").first.get_attribute("href")
    page.goto(f"{base}{href}")
    shot("audit-entry")
    page.goto(f"{base}/console/audit/verify")
    page.get_by_role("button", name="Verify now").click()
    page.locator("#verify-result").wait_for()
    shot("verify")
    page.goto(f"{base}/console/subjects")
    shot("subjects")
    page.goto(f"{base}/console/subjects/{subject}")
    for d in page.locator("details.manifest").all():
        d.evaluate("el => el.open = true")
    shot("subject")
    page.goto(f"{base}/console/subjects/new")
    shot("forbidden")


def officer_flow(page, base: str, subject: str, clip: Path | None, shot: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/console/subjects/new")
    shot("enroll")
    page.goto(f"{base}/console/blocklist")
    shot("blocklist")
    page.goto(f"{base}/console/subjects/{subject}")
    shot("subject")
    page.get_by_role("button", name="Revoke…").click()
    shot("revoke-confirm")


def erase_flow(page, base: str, subject: str, shot: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/console/subjects/{subject}")
    page.get_by_role("button", name="Erase…").click()
    shot("erase-confirm")
    page.get_by_label(re.compile("To confirm, type")).fill(f"erase {subject}")
    page.get_by_role("button", name="Confirm").click()
    page.get_by_text(f"{subject} was erased.").wait_for()
    shot("erased")
    page.get_by_role("link", name="The subject's record").click()
    shot("subject-erased")


def analyst_flow(page, base: str, subject: str, clip: Path | None, shot: Callable[[str], None]) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/console/detect")
    shot("detect")
    media = clip or PHOTO
    page.get_by_label(re.compile("Video")).set_input_files(str(media))
    page.get_by_role("button", name="Analyse").click()
    page.locator("#verdict").wait_for()
    page.wait_for_timeout(500)  # the report frame sizes itself on load
    shot("detect-result")


flows = {"reviewer": reviewer_flow, "officer": officer_flow, "analyst": analyst_flow}

if __name__ == "__main__":
    main()
