"""`provatar demo`, the README's first command, end to end: init -> consent -> generate -> detect -> audit verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.service.conftest import Cli


@pytest.mark.slow
def test_demo_runs_the_whole_chain_and_prints_the_detection(cli: Cli, tmp_path: Path) -> None:
    r = cli("demo", "--out", str(tmp_path / "demo"))
    assert r.exit_code == 0, r.output
    assert "verdict: provatar-generated" in r.stdout and "audit log intact" in r.output  # progress on stderr
    assert "rppg" in r.stdout and "probability" in r.stdout
    assert list((tmp_path / "demo").glob("run-*/provatar-demo.mp4"))
