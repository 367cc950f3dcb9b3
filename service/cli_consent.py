"""`provatar consent ...`: enroll subjects with consent, revoke, list, and keep the block list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

# The registry modules (SQLModel, the face models) are imported inside the commands: `provatar --help` stays fast.
from service.cli import actor, consent_app, emit, guarded, out, raise_invalid, runtime, shown


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise_invalid(f"{what} not found: {path}")
    return path.read_bytes()


@consent_app.command("enroll")
def enroll(
    photos: Annotated[list[Path], typer.Argument(help="One or more reference photos of the subject (one face each).")],
    name: Annotated[str, typer.Option("--name", help="Display name of the subject.")],
    purpose: Annotated[list[str], typer.Option("--purpose", "-p", help="Purpose consented to (repeat).")],
    client: Annotated[
        list[str] | None, typer.Option("--client", help="Allowed API client id (repeat; default any).")
    ] = None,
    expires_days: Annotated[float, typer.Option(help="Consent lifetime in days.")] = 365.0,
    evidence: Annotated[Path | None, typer.Option(help="Consent evidence file (signed form, recording).")] = None,
    evidence_sha256: Annotated[str | None, typer.Option(help="SHA-256 of evidence kept elsewhere.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Enroll a subject from reference photos and record their consent."""

    def body() -> None:
        from service import consent_ops

        digest = consent_ops.evidence_digest(_read(evidence, "evidence file") if evidence else None, evidence_sha256)
        contents = [_read(p, "photo") for p in photos]
        with runtime() as rt:
            subject, record = consent_ops.enroll(
                rt,
                name=name,
                photos=contents,
                purposes=purpose,
                clients=client or [],
                expires_days=expires_days,
                evidence_sha256=digest,
                actor=actor(),
            )
        data = {
            "subject_id": subject.id,
            "consent_record_id": record.id,
            "purposes": record.purposes,
            "allowed_clients": record.allowed_clients,
            "expires_at": record.expires_at.isoformat(),
        }
        if as_json:
            emit(data, True)
        else:
            out.print(
                f"subject:  {subject.id} ({shown(name)})\nconsent:  {record.id} for {shown(', '.join(record.purposes))}"
                f" until {record.expires_at:%Y-%m-%d}"
            )

    guarded(body)


@consent_app.command("grant")
def grant(
    subject: Annotated[str, typer.Argument(help="Subject id (subj_...).")],
    purpose: Annotated[list[str], typer.Option("--purpose", "-p", help="Purpose consented to (repeat).")],
    client: Annotated[
        list[str] | None, typer.Option("--client", help="Allowed API client id (repeat; default any).")
    ] = None,
    expires_days: Annotated[float, typer.Option(help="Consent lifetime in days.")] = 365.0,
    evidence: Annotated[Path | None, typer.Option(help="Consent evidence file.")] = None,
    evidence_sha256: Annotated[str | None, typer.Option(help="SHA-256 of evidence kept elsewhere.")] = None,
) -> None:
    """Record a new consent for an enrolled subject (the newest record is the one that counts)."""

    def body() -> None:
        from service import consent_ops

        digest = consent_ops.evidence_digest(_read(evidence, "evidence file") if evidence else None, evidence_sha256)
        with runtime() as rt:
            record = consent_ops.grant(
                rt,
                subject_id=subject,
                purposes=purpose,
                clients=client or [],
                expires_days=expires_days,
                evidence_sha256=digest,
                actor=actor(),
            )
        out.print(f"consent {record.id} for {shown(', '.join(record.purposes))} until {record.expires_at:%Y-%m-%d}")

    guarded(body)


@consent_app.command("revoke")
def revoke(
    subject: Annotated[str, typer.Argument(help="Subject id (subj_...).")],
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "revoked by the subject",
    consent: Annotated[str | None, typer.Option(help="A specific consent record (default: the current one).")] = None,
) -> None:
    """Revoke a subject's consent; the very next generation request is denied."""

    def body() -> None:
        from service import consent_ops

        with runtime() as rt:
            record = consent_ops.revoke(rt, subject_id=subject, reason=reason, actor=actor(), consent_id=consent)
        out.print(f"revoked consent {record.id} of {shown(subject)}")

    guarded(body)


@consent_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Subjects and their consent records."""

    def body() -> None:
        from safeguards.consent import list_consents, list_subjects

        with runtime() as rt, rt.session() as session:
            rows = []
            for s in list_subjects(session=session, limit=10_000):
                consents = list_consents(session=session, subject_id=s.id)
                rows.append(
                    {
                        "subject_id": s.id,
                        "name": s.display_name,
                        "consents": [
                            {
                                "id": c.id,
                                "purposes": c.purposes,
                                "clients": c.allowed_clients,
                                "expires_at": c.expires_at.isoformat(),
                                "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None,
                            }
                            for c in consents
                        ],
                    }
                )
        if as_json:
            emit(rows, True)
            return
        for r in rows:
            out.print(f"{shown(r['subject_id'])}  {shown(r['name'])}")
            for c in r["consents"]:
                state = f"revoked {c['revoked_at'][:10]}" if c["revoked_at"] else f"until {c['expires_at'][:10]}"
                purposes, clients = shown(", ".join(c["purposes"])), shown(",".join(c["clients"]))
                out.print(f"    {shown(c['id'])}  {purposes}  clients={clients}  {state}")
        if not rows:
            out.print("no subjects enrolled")

    guarded(body)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


@consent_app.command("block")
def block(
    photos: Annotated[list[Path], typer.Argument(help="Photos of protected people (one face each), or folders.")],
    label: Annotated[
        str | None, typer.Option(help="Who this is; default: each photo's file name (for seeding from a folder).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why they are protected.")] = "public figure",
) -> None:
    """Put protected identities (e.g. public figures) on the block list; matching photos are always denied.

    Seed a list from a folder of photos named after the people (`provatar consent block seed-photos/`); several
    photos of one person (same --label) make several entries and better recall.
    """

    def body() -> None:
        from service import consent_ops

        files: list[Path] = []
        for p in photos:
            if p.is_dir():
                files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            else:
                files.append(p)
        if not files:
            raise_invalid("no photos given (folders are searched for .jpg, .jpeg, .png, .webp)")
        contents = [(f, _read(f, "photo")) for f in files]
        with runtime() as rt:
            for f, content in contents:
                name = label or f.stem.replace("_", " ")
                entry = consent_ops.block(rt, photo=content, label=name, reason=reason, actor=actor())
                out.print(f"blocked {entry.id} ({shown(name)}) from {shown(f.name)}")

    guarded(body)


@consent_app.command("unblock")
def unblock(blocked_id: Annotated[str, typer.Argument(help="Block-list entry id (blk_...).")]) -> None:
    """Lift a block-list entry (kept in the history, marked removed)."""

    def body() -> None:
        from service import consent_ops

        with runtime() as rt:
            consent_ops.unblock(rt, blocked_id=blocked_id, actor=actor())
        out.print(f"unblocked {shown(blocked_id)}")

    guarded(body)


@consent_app.command("blocklist")
def blocklist(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The active block list."""

    def body() -> None:
        from safeguards.consent import list_blocked

        with runtime() as rt, rt.session() as session:
            rows = [
                {"id": b.id, "label": b.label, "reason": b.reason, "created_at": b.created_at.isoformat()}
                for b in list_blocked(session=session)
            ]
        if as_json:
            emit(rows, True)
            return
        for r in rows:
            out.print(f"{shown(r['id'])}  {shown(r['label'])}  ({shown(r['reason'])})")
        if not rows:
            out.print("the block list is empty")

    guarded(body)
