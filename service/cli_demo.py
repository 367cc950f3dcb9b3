"""`provatar demo`: the whole responsible-generation chain on the shipped public-domain examples.

Initialises a throwaway installation, enrolls the example subject with consent, generates, detects the result,
verifies the audit log, and prints the output path on its last line (`output: PATH`).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from service.cli import actor, app, err, guarded, out, print_detection, progress_bar
from service.settings import Settings

# service/examples links to the repository's examples/ and is a real folder in an installed wheel.
EXAMPLES = Path(__file__).resolve().parent / "examples"
CONSENT_STATEMENT = (
    "Demo consent: the subject of examples/astronaut_eileen_collins.png (a public-domain NASA portrait) is used to "
    "demonstrate provatar's consent-gated pipeline; purpose 'demo'; created by `provatar demo`.\n"
)


@app.command()
def demo(
    out_dir: Annotated[
        Path, typer.Option("--out", help="Directory for the throwaway installation and the video.")
    ] = Path("out/demo"),
    photo: Annotated[Path, typer.Option(help="Portrait to animate.")] = EXAMPLES / "astronaut_eileen_collins.png",
    audio: Annotated[Path, typer.Option(help="Speech to lip-sync.")] = EXAMPLES / "ljspeech_LJ001-0001.wav",
) -> None:
    """Run init -> consent -> generate -> detect -> audit verify on the example photo and speech."""
    from service import consent_ops
    from service.detect import run_detection
    from service.pipeline import generate_file
    from service.runtime import Runtime, initialize

    def body() -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        run_dir = (out_dir / f"run-{stamp}-{uuid.uuid4().hex[:4]}").resolve()
        settings = Settings(data_dir=run_dir / "data")
        t0 = time.perf_counter()
        initialize(settings)
        err.print(f"[1/5] initialised a throwaway installation in {settings.data_dir}")
        rt = Runtime(settings)
        try:
            statement = CONSENT_STATEMENT.encode()
            (run_dir / "consent-statement.txt").write_bytes(statement)
            subject, record = consent_ops.enroll(
                rt,
                name="Eileen Collins (NASA portrait, public domain)",
                photos=[photo.read_bytes()],
                purposes=["demo"],
                clients=[],
                expires_days=1,
                evidence_sha256=consent_ops.evidence_digest(statement, None),
                actor=actor(),
            )
            err.print(f"[2/5] enrolled {subject.id} with consent {record.id} (purpose demo)")
            output = run_dir / "provatar-demo.mp4"
            t_gen = time.perf_counter()
            with progress_bar("[3/5] generating") as bar:
                gen = generate_file(
                    rt,
                    subject_id=subject.id,
                    purpose="demo",
                    client_id="cli",
                    photo_path=photo.resolve(),
                    audio_path=audio.resolve(),
                    output_path=output,
                    actor=actor(),
                    progress=bar,
                )
            gen_s = time.perf_counter() - t_gen
            err.print(f"[3/5] generated {gen.id} in {gen_s:.1f}s: watermarked, C2PA-signed, audited (#{gen.audit_seq})")
            report = run_detection(rt, output, actor=actor(), request_id=uuid.uuid4().hex)
            err.print("[4/5] detection of the output:")
            print_detection(report.to_dict())
            verified = rt.audit.verify()
            err.print(f"[5/5] audit log intact: {asdict(verified)['entries']} entries, signed checkpoint verified")
        finally:
            rt.close()
        out.print(
            f"summary: subject {subject.id}, consent {record.id}, generation {gen.id}, verdict {report.verdict},"
            f" total {time.perf_counter() - t0:.1f}s"
        )
        out.print(f"data dir: {settings.data_dir}  (PROVATAR_DATA_DIR={settings.data_dir} provatar audit verify)")
        out.print(f"output: {output}")

    guarded(body)
