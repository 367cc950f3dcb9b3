"""`provatar eval ...`: run the benchmark and evaluation scripts in bench/ (they print numbers: bench/RESULTS.md)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import Annotated

import typer

from service.cli import app, raise_invalid

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = {
    "generation": "eval_generation.py",
    "safeguards": "eval_safeguards.py",
    "e2e": "bench_e2e.py",
    "streaming": "bench_streaming.py",
    "framing": "bench_framing.py",
    "identity": "calibrate_identity.py",
    "watermark": "eval_watermark.py",
    "detector": "eval_detector.py",
    "clip-classifier": "eval_clip_classifier.py",
}

eval_app = typer.Typer(no_args_is_help=True, help="Benchmarks and evaluations (need the source tree's bench/).")
app.add_typer(eval_app, name="eval")


def _run(name: str, args: list[str]) -> None:
    script = BENCH / SCRIPTS[name]
    if not script.is_file():
        raise_invalid(f"{script} not found: evaluation scripts ship with the source tree, not the wheel")
    sys.argv = [str(script), *args]
    runpy.run_path(str(script), run_name="__main__")


def _command(name: str, doc: str) -> None:
    def command(
        args: Annotated[list[str] | None, typer.Argument(help="Arguments for the script (see its --help).")] = None,
    ) -> None:
        _run(name, args or [])

    command.__doc__ = doc
    eval_app.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(command)


for _name, _doc in {
    "generation": "Generated vs real talking heads: faces, identity, lip sync, blinks, head motion; contact sheets.",
    "safeguards": "Watermark robustness and false positives, detector AUC, identity FAR/FRR: one table.",
    "e2e": "End-to-end generation speed at 512x512 and the ratio to real time.",
    "streaming": "Streaming first-frame latency and 5-minute memory/sync.",
    "framing": "End-to-end fps (render + watermark + encode) at 512x512 crop and 1920x1080 full frame.",
    "identity": "Face-match distance distributions and FAR/FRR per threshold.",
    "watermark": "Watermark recovery per transformation, false payloads, speed, PSNR.",
    "detector": "Multi-cue detector: leave-one-generator-out AUC per generator, CRF 28, real clips flagged, speed.",
    "clip-classifier": "The renderer CNN alone: AUC on our own held-out renders and a warp-only animator, speed.",
}.items():
    _command(_name, _doc)
