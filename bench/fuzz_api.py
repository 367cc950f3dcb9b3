"""schemathesis over every operation of a real `provatar serve`, with a larger budget than the CI test.

Starts a fresh installation and server (as tests/service/test_schemathesis.py does), then runs the schemathesis CLI
twice: with an admin token holding every scope, and with no token. Prints, per run, the operations tested, the
requests the server answered (counted from its access log), the duration, and the failures schemathesis reported;
exits non-zero on any failure or server traceback.

    PYTHONPATH=. python bench/fuzz_api.py --max-examples 100
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.service.test_schemathesis import server_errors_in_log, start_server, stop_server

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)


def _access_lines(log: Path) -> int:
    return sum(1 for line in log.read_text(errors="replace").splitlines() if '" ' in line and "HTTP/1.1" in line)


def _summary_number(text: str, pattern: str) -> int:
    m = re.search(pattern, text)
    return int(m.group(1)) if m else 0


def fuzz(base: str, log: Path, *, token: str | None, max_examples: int, seed: int, out: Path) -> dict[str, object]:
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(max_examples),
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--no-color",
    ]
    if token:
        cmd += ["--header", f"Authorization: Bearer {token}"]
    before = _access_lines(log)
    start = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True)
    took = time.monotonic() - start
    out.write_text(result.stdout + result.stderr)
    text = result.stdout
    return {
        "auth": "all-scopes token" if token else "no token",
        "operations": _summary_number(text, r"Tested:\s+(\d+)"),
        "test_cases": _summary_number(text, r"(\d+) generated"),
        "requests": _access_lines(log) - before,
        "seconds": round(took, 1),
        "failures": _summary_number(text, r"(\d+) unique failures") + _summary_number(text, r"(\d+) errors?\b"),
        "exit": result.returncode,
        "report": str(out),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=100, help="generated cases per operation and phase")
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="provatar-fuzz-"))
    proc, target = start_server(tmp)
    rows = []
    try:
        for token in (target.token, None):
            name = "auth" if token else "anon"
            rows.append(
                fuzz(
                    target.base,
                    target.log,
                    token=token,
                    max_examples=args.max_examples,
                    seed=args.seed,
                    out=tmp / f"schemathesis-{name}.txt",
                )
            )
    finally:
        stop_server(proc)
    tracebacks = server_errors_in_log(target.log)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"server tracebacks: {len(tracebacks)}  (log: {target.log})")
    bad = tracebacks or any(row["exit"] != 0 for row in rows)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
