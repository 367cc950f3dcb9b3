"""The `provatar` command line. Exit status: 0 ok, 1 failure, 2 invalid input, 3 denied by policy.

Every failure is shown as `error[code]: message` plus a hint; tracebacks only with --debug. Progress goes to
stderr and only when it is a terminal; `--json` prints machine-readable results on stdout.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads: 2-thread torch stalls otherwise
# mediapipe/TFLite log every graph start to stderr through glog/absl; keep the terminal for our own messages.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer
from rich.console import Console
from rich.markup import escape

from service.errors import ExitStatus, NotInitialized, describe
from service.settings import Settings, get_settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Responsible talking-face video generation.")
consent_app = typer.Typer(no_args_is_help=True, help="Subjects, consent records and the block list.")
audit_app = typer.Typer(no_args_is_help=True, help="Verify and export the audit log.")
client_app = typer.Typer(no_args_is_help=True, help="API clients (OAuth2 client credentials).")
app.add_typer(consent_app, name="consent")
app.add_typer(audit_app, name="audit")
app.add_typer(client_app, name="client")

# Markup is ours only: every value that comes from a user or the database goes through shown() (emoji codes off:
# a subject named ":warning:" is shown as typed).
out = Console(soft_wrap=True, highlight=False, emoji=False)
err = Console(stderr=True, soft_wrap=True, highlight=False, emoji=False)
STATE: dict[str, Any] = {"debug": False}
T = TypeVar("T")


def shown(value: object) -> str:
    """A user-supplied value (a name, label, reason, URL, message) made inert for a Rich console: control characters
    (ANSI/OSC escapes, BEL, CR) shown as \\xNN, then Rich markup escaped, so `[/]` or `[link=...]` is printed as
    typed instead of breaking or rewriting the output."""
    from service.validation import terminal_safe

    return escape(terminal_safe(value))


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def fail(exc: BaseException, *, settings: Settings | None = None, action: str = "request.rejected") -> typer.Exit:
    """Print an error the pip way (code, message, hint), audit the attempt when possible, and pick the exit status."""
    problem = describe(exc)
    if STATE["debug"]:
        err.print_exception()
    err.print(f"[bold red]error\\[{shown(problem.code)}][/]: {shown(problem.message)}")
    for reason in problem.details.get("reasons", [])[1:]:
        err.print(f"  also: {shown(reason)}")
    if problem.hint:
        err.print(f"[dim]hint: {shown(problem.hint)}[/]")
    if settings is not None and not isinstance(exc, NotInitialized) and "decision" not in problem.details:
        _audit_quietly(settings, action, problem.code, problem.message)
    return typer.Exit(int(problem.exit_status))


def _audit_quietly(settings: Settings, action: str, code: str, message: str) -> None:
    try:
        from service.runtime import Runtime

        rt = Runtime(settings)
        rt.audit.append(
            action=action,
            actor=actor(),
            outcome="rejected",
            # The command, not its arguments: those are names and photo paths, and the audit log outlives an
            # erasure of the person they belong to.
            details={"code": code, "message": message, "command": _command_path()},
        )
        rt.close()
    except Exception:  # auditing a failure must never hide the failure itself
        pass


def _command_path() -> str:
    """`provatar consent enroll` for the command being run, from the click context typer runs it under (newer typer
    releases carry their own copy of click; older ones use click itself)."""
    try:
        from typer._click.globals import get_current_context
    except ImportError:
        from click import get_current_context

    ctx = get_current_context(silent=True)
    return str(ctx.command_path) if ctx is not None else "provatar"


@contextmanager
def runtime(settings: Settings | None = None) -> Iterator[Any]:
    from service.runtime import Runtime

    rt = Runtime(settings or get_settings())
    try:
        yield rt
    finally:
        rt.close()


def guarded(fn: Callable[[], T], *, action: str = "request.rejected") -> T:
    """Run a command body, turning any error into a clean message and exit status."""
    settings = get_settings()
    try:
        return fn()
    except typer.Exit:
        raise
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        raise fail(exc, settings=settings, action=action) from None


def emit(data: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def progress_bar(label: str) -> Iterator[Callable[[float], None]]:
    """A progress bar on stderr when it is a terminal; silent otherwise."""
    if not err.is_terminal:
        yield lambda _p: None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=1.0)
        yield lambda p: bar.update(task, completed=p)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    STATE["debug"] = debug
    if not debug:
        # The service logs for operators of a server; a CLI user gets `error[code]` lines instead (a handler here
        # stops Python's last-resort handler from printing warnings with tracebacks on the terminal).
        logging.getLogger("provatar").addHandler(logging.NullHandler())


# --------------------------------------------------------------------------------------------------- init / serve
@app.command()
def init() -> None:
    """Create the data dir, database, keys, dev signing CA and the first admin client (printed once)."""
    from service.runtime import initialize

    def body() -> None:
        settings = get_settings()
        result = initialize(settings)
        out.print(f"data dir: {shown(result.data_dir)}")
        if result.created_ca:
            out.print(f"dev signing CA: {settings.pki_dir / 'root.pem'} (trust anchor for C2PA validation)")
        if result.admin_client_id:
            out.print("admin API client (the secret is shown only now; store it safely):")
            out.print(f"  client_id:     {result.admin_client_id}")
            out.print(f"  client_secret: {result.admin_secret}")
        else:
            out.print("already initialised; existing clients kept")

    guarded(body)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Run the HTTP API (OpenAPI docs at /docs); jobs run in-process, or on `provatar worker`s with a broker."""

    def body() -> None:
        import uvicorn

        from service.api.main import create_app
        from service.log_redact import uvicorn_log_config

        settings = get_settings()
        if not (settings.keys_dir).exists():
            raise NotInitialized(f"no provatar installation at {settings.data_dir}")
        # A token passed as ?access_token= (WebSocket clients) must never reach the access log.
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_level="info",
            log_config=uvicorn_log_config(settings.log_format),
            # On SIGTERM: stop accepting at once, give requests in flight this long, then the lifespan shutdown
            # gives the in-process worker the same grace (service/api/main.py).
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds)),
        )

    guarded(body)


# ------------------------------------------------------------------------------------------------------ clients
@client_app.command("create")
def client_create(
    name: Annotated[str, typer.Argument(help="A name for the client (unique).")],
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="Scope to grant (repeat).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create an API client; its secret is printed once."""
    from service.auth import create_client

    def body() -> None:
        with runtime() as rt, rt.session() as session:
            client, secret = create_client(session=session, name=name, scopes=scope)
            session.commit()
            rt.audit.append(
                action="client.created",
                actor=actor(),
                outcome="ok",
                details={"client_id": client.client_id, "scopes": client.scopes},
            )
            data = {"client_id": client.client_id, "client_secret": secret, "scopes": client.scopes}
        if as_json:
            emit(data, True)
        else:
            out.print(f"client_id: {data['client_id']}\nclient_secret: {secret}\nscopes: {' '.join(client.scopes)}")

    guarded(body)


# ------------------------------------------------------------------------------------------------------ generate
@app.command()
def generate(
    photo: Annotated[Path, typer.Argument(help="Portrait photo of the consenting subject.")],
    audio: Annotated[Path, typer.Argument(help="Speech audio (wav/mp3/ogg/flac/m4a).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the MP4.")],
    subject: Annotated[str, typer.Option("--subject", help="Enrolled subject id (subj_...).")],
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose the subject consented to.")],
    seed: Annotated[int, typer.Option(help="Seed for blinks and head motion (same seed, same video).")] = 0,
    gaze_x: Annotated[float | None, typer.Option(help="Gaze -1..1 (+ = image right).")] = None,
    gaze_y: Annotated[float | None, typer.Option(help="Gaze -1..1 (+ = down).")] = None,
    distance: Annotated[float | None, typer.Option(help="Head distance 0.5..2 (1 = as in the photo).")] = None,
    emotion: Annotated[str | None, typer.Option(help="neutral, happy, sad, angry or surprised.")] = None,
    emotion_intensity: Annotated[float | None, typer.Option(help="Emotion strength 0..1.")] = None,
    motion_intensity: Annotated[float | None, typer.Option(help="Head/brow/gaze motion 0..3.")] = None,
    lipsync: Annotated[str | None, typer.Option(help="auto, phonemes (English) or acoustic (any language).")] = None,
    framing: Annotated[
        str | None,
        typer.Option(help="crop (a square around the face, the default) or full (the whole photo, up to 1920x1080)."),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(
            help="Head crop side in pixels, even, 128..1024 (crop: the video's side; full: the most the "
            "head is rendered at). Default 512."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Generate a watermarked, C2PA-signed talking-face MP4 (only with the subject's consent)."""
    from generation.controls import Controls
    from generation.framing import Framing
    from service.pipeline import generate_file
    from service.storage import check_output_path
    from service.validation import check_text

    def body() -> None:
        for p in (photo, audio):
            if not p.is_file():
                raise_invalid(f"no such file: {p}")
        if output.suffix.lower() != ".mp4":
            raise_invalid(f"the output must be an .mp4 file, got {output}")
        check_output_path(output.resolve())  # a directory, a missing or read-only parent: refused before any work
        check_text(subject, field="--subject")
        check_text(purpose, field="--purpose")
        raw = {
            "seed": seed,
            "gaze_x": gaze_x,
            "gaze_y": gaze_y,
            "head_distance": distance,
            "emotion": emotion,
            "emotion_intensity": emotion_intensity,
            "motion_intensity": motion_intensity,
            "lipsync": lipsync,
        }
        controls = {k: v for k, v in raw.items() if v is not None}
        Controls.from_mapping(controls)
        framed = Framing.from_values(framing, size, default_size=get_settings().output_size)
        with runtime() as rt, progress_bar("generating") as bar:
            gen = generate_file(
                rt,
                subject_id=subject,
                purpose=purpose,
                client_id="cli",
                photo_path=photo.resolve(),
                audio_path=audio.resolve(),
                output_path=output.resolve(),
                actor=actor(),
                controls=controls,
                framing=framed,
                progress=bar,
            )
            if gen.status != "succeeded":
                from service.errors import Cancelled

                raise Cancelled(f"generation {gen.id} was {gen.status}: {gen.error_message or 'no output'}")
            data = {
                "generation_id": gen.id,
                "output": gen.output_path,
                "watermark_tag": f"{gen.watermark_tag:08x}",
                "framing": framed.mode,
                "consent_record_id": gen.consent_record_id,
                "policy_decision_id": gen.policy_decision_id,
                "audit_seq": gen.audit_seq,
                "warnings": list(gen.params.get("warnings") or []),
            }
        if as_json:
            emit(data, True)
        else:
            out.print(
                f"generation {data['generation_id']} (audit entry #{data['audit_seq']}, "
                f"consent {data['consent_record_id']})"
            )
            out.print(f"output: {shown(data['output'])}")
            for warning in data["warnings"]:
                out.print(f"warning: {warning}")

    guarded(body)


def raise_invalid(message: str, code: str = "invalid_input") -> None:
    from service.errors import InvalidInput

    raise InvalidInput(message, code=code)


# -------------------------------------------------------------------------------------------------------- detect
@app.command()
def detect(
    file: Annotated[Path, typer.Argument(help="A video or image to check.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report to this file.")
    ] = None,
) -> None:
    """Is it ours (C2PA, watermark), whose generation, and does it look synthetic (cues fused, calibrated)?"""
    from service.detect import run_detection

    def body() -> None:
        if not file.is_file():
            raise_invalid(f"no such file: {file}", code="invalid_video")
        if html_out is not None and (html_out.is_dir() or not html_out.parent.is_dir()):
            raise_invalid(f"cannot write the HTML report to {html_out}: not a file in an existing directory")
        from service.detect_scope import scoped_report

        kept: list = []
        with runtime() as rt:
            report = run_detection(rt, file, actor=actor(), request_id=uuid.uuid4().hex, keep_track=kept)
            # The local operator holds the data dir: the full report, through the same scoping as the API.
            data = scoped_report(rt, report.to_dict(), None)
        if html_out is not None:
            from service.detect_report import render_html

            page = render_html(data, file_name=file.name, track=kept[0] if kept else None)
            tmp = html_out.with_name(f".{html_out.name}.part")
            try:
                tmp.write_text(page, encoding="utf-8")
                tmp.replace(html_out)
            finally:
                tmp.unlink(missing_ok=True)
            err.print(f"HTML report written to {shown(html_out)}")
        if as_json:
            emit(data, True)
        else:
            print_detection(data)

    guarded(body, action="detection.failed")


def print_detection(r: dict[str, Any]) -> None:
    colour = {"provatar-generated": "bold magenta", "likely-synthetic": "bold yellow"}.get(r["verdict"], "bold green")
    out.print(f"verdict: [{colour}]{r['verdict']}[/]")
    c, w, k = r["c2pa"], r["watermark"], r["classifier"]
    out.print(
        f"  c2pa:       {'present, ' + str(c['state']) if c['present'] else 'absent'}"
        + (f", signer {shown(c['signer'])}" if c.get("signer") else "")
    )
    wm = "not found"
    if w["found"]:
        wm = f"found, payload {shown(w['payload'])}, {w['frames_agreeing']:.0%} of frames agree"
        if w.get("generation_id"):
            wm += f" -> generation {w['generation_id']} (audit #{w['audit_seq']}, consent {w['consent_record_id']})"
    out.print(f"  watermark:  {wm}")
    if w.get("stored_manifest") and not c["present"]:
        out.print("  provenance: the original signed C2PA manifest was recovered through the watermark (see --json)")
    p = r.get("probability") or {}
    if p:
        fpr = p.get("expected_false_positive_rate")
        out.print(
            f"  synthetic:  probability {p['synthetic']:.2f} (threshold {p['threshold']:.2f}"
            + (f", {100 * fpr:.0f} % of real clips flagged in validation" if fpr is not None else "")
            + ")"
        )
        for c in r.get("cues", []):
            if c["applies"] and c["score"] is not None:
                state = f"{c['score']:.2f}, contributes {c['contribution']:+.2f}"
            else:
                state = shown(c["reason"])
            out.print(f"    {shown(c['name']):17s} {state}")
    out.print(f"  renderer CNN: {k['score']:.2f} (threshold {k['threshold']:.2f})")
    for reason in r["reasons"]:
        out.print(f"  - {shown(reason)}")


# --------------------------------------------------------------------------------------------------------- audit
@audit_app.command("verify")
def audit_verify(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Recompute the hash chain and check the signed checkpoint. Exit 1 naming the first bad entry."""
    from audit import AuditError

    def body() -> None:
        with runtime() as rt:
            try:
                report = rt.audit.verify()
            except AuditError as exc:
                emit({"intact": False, "code": exc.code, "seq": exc.seq, "message": str(exc)}, as_json)
                if not as_json:
                    err.print(f"[bold red]audit log NOT intact[/]: first bad entry #{exc.seq}: {shown(exc)}")
                raise typer.Exit(int(ExitStatus.ERROR)) from None
        emit({"intact": True, **asdict(report)}, as_json)
        if not as_json:
            out.print(
                f"audit log intact: {report.entries} entries, head {report.head_hash[:16]}…, "
                f"signed checkpoint at size {report.checkpoint_size}"
                + (f", witnessed up to {report.witnessed_size}" if report.witnessed_size is not None else "")
            )

    guarded(body)


@audit_app.command("export")
def audit_export(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only events at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, typer.Option(help="Only events before (ISO 8601).")] = None,
    actor_: Annotated[str | None, typer.Option("--actor")] = None,
    subject: Annotated[str | None, typer.Option()] = None,
    action: Annotated[str | None, typer.Option()] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            "--bundle",
            help="Write an evidence bundle (zip) instead: the whole log up to its newest signed checkpoint, every "
            "signed checkpoint, consistency proofs, the public key and a signed manifest, for `provatar audit "
            "verify-export` (no filters: a bundle is always the whole log).",
        ),
    ] = None,
) -> None:
    """Write the log (optionally filtered) as JSON Lines with hashes, or with --bundle an evidence bundle."""

    def body() -> None:
        if bundle is not None:
            if output is not None or any(v is not None for v in (since, until, actor_, subject, action)):
                raise_invalid("--bundle writes the whole log to its own file: drop --output and the filters")
            from service.cli_audit import write_bundle_file

            write_bundle_file(bundle)
            return
        with runtime() as rt:
            filters = {"since": since, "until": until, "actor": actor_, "subject": subject, "action": action}
            if output is None:
                rt.audit.export_jsonl(sys.stdout, **filters)
                return
            tmp = output.with_name(f".{output.name}.tmp")
            try:
                with open(tmp, "w") as fh:
                    n = rt.audit.export_jsonl(fh, **filters)
                tmp.replace(output)
            finally:
                tmp.unlink(missing_ok=True)
            err.print(f"exported {n} events to {shown(output)}")

    guarded(body)


def main() -> None:
    app()


# Command groups that live in their own modules register themselves on `app` / `consent_app`.
from service import (  # noqa: E402,F401
    cli_audit,
    cli_clients,
    cli_consent,
    cli_console,
    cli_db,
    cli_demo,
    cli_eval,
    cli_webhooks,
    cli_worker,
)

if __name__ == "__main__":
    # `python -m service.cli`: this file runs as __main__, but the command modules registered themselves on the
    # `app` of the imported `service.cli`; run that one.
    from service.cli import main as _main

    _main()
