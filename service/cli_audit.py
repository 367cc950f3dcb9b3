"""`provatar audit export --bundle FILE` (its writer) and `provatar audit verify-export FILE`.

verify-export is for whoever receives a bundle (a regulator, an auditor): it reads nothing but the file and the
keys named on the command line; no settings, no data directory, no database. So it neither loads the settings nor
audits its own failures (there is no local log to audit into), unlike the other commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from service.cli import STATE, actor, audit_app, emit, err, fail, out, raise_invalid, runtime, shown

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from audit.bundle import BundleSummary
    from audit.bundle_verify import BundleReport

_STATUS_STYLE = {"ok": "green", "failed": "bold red", "warning": "yellow", "not checked": "dim"}


def write_bundle_file(path: Path) -> BundleSummary:
    """The body of `audit export --bundle PATH` (runs under the caller's guarded())."""
    from audit.bundle import export_bundle
    from service.errors import OutputNotWritable

    target = path.expanduser().resolve()
    if target.is_dir() or not target.parent.is_dir():
        raise OutputNotWritable(f"cannot write the bundle to {path}: not a file in an existing directory")
    with runtime() as rt:
        summary = export_bundle(rt.audit, target, exporter_version=_version())
        # Who took the evidence out, and exactly what (the entry lands after the bundle's end, in the next one).
        rt.audit.append(
            action="audit.exported",
            actor=actor(),
            outcome="ok",
            details={
                "format": "bundle",
                "entries": summary.entries,
                "checkpoint_size": summary.size,
                "root_hash": summary.root_hash,
                "sha256": summary.sha256,
            },
        )
    err.print(
        f"bundle {shown(summary.path)}: {summary.entries} entries, {summary.checkpoints} signed checkpoints "
        f"(newest at size {summary.size}, root {summary.root_hash[:16]}…), {summary.proofs} consistency proofs; "
        f"sha256 {summary.sha256}"
    )
    return summary


@audit_app.command("verify-export")
def verify_export(
    bundle: Annotated[Path, typer.Argument(help="The bundle written by `provatar audit export --bundle`.")],
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="PEM of the service's audit public key, obtained from it separately (repeat for rotated keys). "
            "Without it or --fingerprint the bundle's own key is only self-asserted.",
        ),
    ] = None,
    fingerprint: Annotated[
        list[str] | None,
        typer.Option("--fingerprint", help="Trusted key fingerprint (ed25519:<16 hex>), instead of a PEM (repeat)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify an evidence bundle offline: member digests, the hash chain, every checkpoint's signature and Merkle
    root, and RFC 6962 consistency between consecutive checkpoints. Exit 0 intact, 1 not intact (the first failure
    named), 2 unreadable arguments. Needs no database and no data directory."""
    try:
        report = _verify(bundle, public_key or [], fingerprint or [])
    except typer.Exit:
        raise
    except Exception as exc:  # argument problems (a missing file, a bad PEM): the usual error line, no audit
        raise fail(exc) from None
    if as_json:
        emit(report.to_dict(), True)
    else:
        _print_report(report)
    if not report.intact:
        raise typer.Exit(1)


def _verify(bundle: Path, key_paths: list[Path], fingerprints: list[str]) -> BundleReport:
    from audit.bundle_verify import verify_bundle

    if not bundle.is_file():
        raise_invalid(f"no such file: {bundle}")
    keys = [_load_public_key(p) for p in key_paths]
    for value in fingerprints:
        if not value.startswith("ed25519:") or len(value) != len("ed25519:") + 16:
            raise_invalid(f"--fingerprint {value!r} is not of the form ed25519:<16 hex digits>")
    try:
        return verify_bundle(bundle, trusted_keys=keys, trusted_fingerprints=fingerprints)
    except OSError as exc:
        raise_invalid(f"cannot read {bundle}: {exc.strerror or exc}")
        raise  # unreachable: raise_invalid raises


def _load_public_key(path: Path) -> Ed25519PublicKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not path.is_file():
        raise_invalid(f"--public-key: no such file: {path}")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (ValueError, TypeError, OSError) as exc:
        raise_invalid(f"--public-key {path} is not a PEM public key ({exc})")
    if not isinstance(key, Ed25519PublicKey):
        raise_invalid(f"--public-key {path} is a {type(key).__name__}, not the Ed25519 audit key")
    return key


def _print_report(report: BundleReport) -> None:
    for check in report.checks:
        style = _STATUS_STYLE.get(check.status, "")
        out.print(f"[{style}]{check.status:<11}[/] {check.name:<21} {shown(check.detail)}")
    first = report.first_failure
    if first is None and report.intact:
        trust = "trusted key" if report.key_trusted else "self-asserted key (not checked against a trusted one)"
        out.print(
            f"[bold green]bundle intact[/]: {report.entries} entries under {report.checkpoints} signed checkpoints, "
            f"newest at size {report.newest_size}"
            + (f" (root {report.root_hash})" if report.root_hash else "")
            + f"; {trust}: {', '.join(report.fingerprints)}"
        )
        return
    name = f"{first.name}: {first.reason}{first.where}" if first else "nothing could be checked"
    err.print(f"[bold red]bundle NOT intact[/]: first failure {shown(name)}")
    if STATE.get("debug"):
        err.print(shown(repr(report.to_dict())))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("provatar")
    except PackageNotFoundError:
        return "unknown"
