"""OIDC sign-in to the console in a real browser (Debian's Chromium, headless, via Playwright) against `provatar
serve`, with the loopback test provider on another site (`localhost` vs the console's `127.0.0.1`): the browser goes
to the provider and back, lands signed in as `oidc:<sub>` on the page it asked for, and signing out ends it.

Skips like tests/service/test_console_browser.py when Chromium or Playwright is missing (fails under CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.service.oidc_test_provider import CLIENT_ID, CLIENT_SECRET, LoopbackProvider, running_provider
from tests.service.test_console_browser import CHROMIUM_ARGS, chromium  # noqa: F401 (the browser fixture)
from tests.service.test_real_server import cli_env, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def oidc_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, LoopbackProvider]]:
    tmp = tmp_path_factory.mktemp("console-oidc-server")
    with running_provider(host_name="localhost") as provider:
        env = cli_env(tmp / "data") | {
            "PROVATAR_EXTERNAL_ISSUER": provider.issuer,
            "PROVATAR_CONSOLE_OIDC_CLIENT_ID": CLIENT_ID,
            "PROVATAR_CONSOLE_OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "PROVATAR_CONSOLE_OIDC_SCOPE_MAP": json.dumps({"compliance": ["audit:read", "consent:read"]}),
        }
        init = subprocess.run(
            [sys.executable, "-m", "service.cli", "init"], env=env, capture_output=True, text=True, timeout=300
        )
        assert init.returncode == 0, init.stderr
        port = free_port()
        log = tmp / "server.log"
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env, stdout=fh, stderr=fh
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                assert proc.poll() is None, f"provatar serve exited with {proc.returncode}:\n{log.read_text()}"
                try:
                    if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, f"provatar serve did not come up:\n{log.read_text()}"
                time.sleep(0.5)
            yield base, provider
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.mark.parametrize("interactive", [False, True], ids=["auto-approve", "approve-on-the-provider-page"])
def test_sign_in_through_the_provider_and_out_again(chromium, oidc_console, interactive: bool) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    base, provider = oidc_console
    provider.interactive = interactive
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(f"{base}/console/audit")
    assert "/console/sign-in" in page.url
    page.get_by_role("link", name="Sign in with your organisation account").click()
    if interactive:
        page.wait_for_url(f"{provider.issuer}/authorize?*")
        page.get_by_role("link", name="Approve").click()  # this navigation starts on the provider's site
    page.wait_for_url(f"{base}/console/audit")  # to the provider (another site), approved, and back
    assert provider.token_requests and provider.token_requests[-1]["code_verifier"]
    assert "oidc:alice" in page.content()
    nav = page.get_by_role("navigation", name="Main")
    assert (
        nav.get_by_role("link", name="Audit log").is_visible() and nav.get_by_role("link", name="Detect").count() == 0
    )
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["provatar_console"]["httpOnly"] and cookies["provatar_console"]["sameSite"] == "Strict"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{base}/console/sign-in?why=signed_out")
    page.goto(f"{base}/console/audit")
    assert "/console/sign-in" in page.url
    context.close()
