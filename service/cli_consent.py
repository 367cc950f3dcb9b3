"""`provatar consent ...`: enroll subjects with consent, revoke, erase, list, keep the block list, and decide identity
reviews (the borderline likeness a consent officer approves or rejects with a justification); `provatar purge`, the
output lifecycle sweep that consent and retention drive."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

# The registry modules (SQLModel, the face models) are imported inside the commands: `provatar --help` stays fast.
from service.cli import actor, app, consent_app, emit, err, guarded, out, raise_invalid, runtime, shown


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
    review_justification: Annotated[
        str | None,
        typer.Option(
            help="Consent officer's reason to enroll a photo that is close to (not a match of) a blocked identity; "
            "audited. A certain match is refused regardless."
        ),
    ] = None,
    new_consent_after_erasure: Annotated[
        bool,
        typer.Option(
            "--new-consent-after-erasure",
            help="Confirm that this person, erased before, gave a new consent (its evidence must be new); audited.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Enroll a subject from reference photos and record their consent (several photos: better matching)."""

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
                review_justification=review_justification,
                new_consent_after_erasure=new_consent_after_erasure,
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


@consent_app.command("erase")
def erase(
    subject: Annotated[str, typer.Argument(help="Subject id (subj_...).")],
    yes: Annotated[bool, typer.Option("--yes", help="Confirm without a prompt (erasure cannot be undone).")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Erase a subject (GDPR Art. 17): embeddings, photo hashes and photos, reviews, their videos and uploads, their
    name. Consent is revoked; the audit log stays intact. The same photo enrolls again only with a new consent."""

    def body() -> None:
        from service import erasure

        if not yes:
            if not sys.stdin.isatty():
                raise_invalid("erasure cannot be undone: pass --yes to confirm", code="confirmation_required")
            if not typer.confirm(f"Erase subject {subject} and delete their data for good?"):
                raise_invalid("not confirmed; nothing was erased", code="confirmation_required")
        with runtime() as rt:
            report = erasure.erase_subject(rt, subject, actor=actor())
        data = report.to_dict()
        if as_json:
            emit(data, True)
            return
        if report.already_erased:
            out.print(f"{shown(subject)} was already erased on {report.erased_at:%Y-%m-%d}; nothing changed")
            return
        out.print(
            f"erased {shown(subject)}: {report.references_deleted} reference embedding(s), "
            f"{report.reference_photos_deleted} stored photo(s), {report.reviews_deleted} review(s), "
            f"{len(report.generations_erased)} generation(s) ({report.outputs_deleted} video(s), "
            f"{report.uploads_deleted} upload(s) deleted); {report.consents_revoked} consent(s) revoked; "
            f"audit entry #{report.audit_seq}"
        )
        if report.outputs_outside_data_dir:
            err.print(
                f"note: {report.outputs_outside_data_dir} video(s) were written by `provatar generate -o` outside the "
                "data dir; they are yours to delete"
            )
        if report.generations_still_running:
            err.print(
                f"note: {len(report.generations_still_running)} job(s) were running and were told to stop; anything "
                "they write is deleted by the next sweep (`provatar purge`)"
            )

    guarded(body)


@app.command("purge")
def purge(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Delete videos past PROVATAR_OUTPUT_RETENTION_DAYS and erased subjects' leftovers, and notify clients of videos
    withheld because consent expired (the worker does this periodically too)."""

    def body() -> None:
        from dataclasses import asdict

        from service.retention import purge_outputs

        with runtime() as rt:
            report = purge_outputs(rt, actor=actor())
            days = rt.settings.output_retention_days
        if as_json:
            emit({"retention_days": days, **asdict(report)}, True)
            return
        policy = f"retention {days:g} days" if days is not None else "no retention period set"
        out.print(
            f"{policy}: {len(report.expired)} expired video(s) purged, {len(report.erased_leftovers)} erased "
            f"subject leftover(s) removed, {len(report.withdrawn)} video(s) newly withheld for lack of consent"
        )

    guarded(body)


@consent_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Subjects and their consent records."""

    def body() -> None:
        from safeguards.consent_records import list_consents
        from safeguards.subjects import list_subjects

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
        str | None,
        typer.Option(
            help="Who this is: all photos become ONE entry of this person. Default: one entry per photo, "
            "named after the file (for seeding from a folder of different people)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why they are protected.")] = "public figure",
    add_to: Annotated[
        str | None, typer.Option("--add-to", help="Add the photos to this existing entry (blk_...) instead.")
    ] = None,
) -> None:
    """Put protected identities (e.g. public figures) on the block list; matching photos are always denied.

    Several photos of one person (`--label NAME a.jpg b.jpg c.jpg`, or `--add-to blk_...`) make one entry matched
    by its nearest photo and by the mean of its photos: better recall than one photo.
    """

    def body() -> None:
        from service import blocklist_ops

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
            if add_to:
                total = blocklist_ops.add_block_photos(
                    rt, blocked_id=add_to, photos=[c for _, c in contents], actor=actor()
                )
                out.print(f"added {len(contents)} photo(s) to {shown(add_to)}; it has {total} now")
            elif label:
                entry = blocklist_ops.block(
                    rt, photos=[c for _, c in contents], label=label, reason=reason, actor=actor()
                )
                out.print(f"blocked {entry.id} ({shown(label)}) from {len(contents)} photo(s)")
            else:
                for f, content in contents:
                    name = f.stem.replace("_", " ")
                    entry = blocklist_ops.block(rt, photos=[content], label=name, reason=reason, actor=actor())
                    out.print(f"blocked {entry.id} ({shown(name)}) from {shown(f.name)}")

    guarded(body)


@consent_app.command("unblock")
def unblock(blocked_id: Annotated[str, typer.Argument(help="Block-list entry id (blk_...).")]) -> None:
    """Lift a block-list entry (kept in the history, marked removed)."""

    def body() -> None:
        from service import blocklist_ops

        with runtime() as rt:
            blocklist_ops.unblock(rt, blocked_id=blocked_id, actor=actor())
        out.print(f"unblocked {shown(blocked_id)}")

    guarded(body)


@consent_app.command("blocklist")
def blocklist(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The active block list."""

    def body() -> None:
        from safeguards.blocklist import list_blocked

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


def _review_row(review: object) -> dict[str, object]:
    from safeguards.reviews import IdentityReviewPublic

    return IdentityReviewPublic.model_validate(review, from_attributes=True).model_dump(mode="json")


@consent_app.command("reviews")
def reviews(
    status: Annotated[str | None, typer.Option(help="pending | approved | rejected (default: all)")] = "pending",
    all_: Annotated[bool, typer.Option("--all", help="Every review, whatever its status.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The identity-review queue: borderline matches denied and waiting for a consent officer."""

    def body() -> None:
        from safeguards.reviews import ReviewStatus, list_reviews

        wanted: ReviewStatus | None = None
        if not all_ and status:
            if status not in {s.value for s in ReviewStatus}:
                raise_invalid(f"unknown status {status!r}: use pending, approved or rejected")
            wanted = ReviewStatus(status)
        with runtime() as rt, rt.session() as session:
            rows = [_review_row(r) for r in list_reviews(session=session, status=wanted, limit=10_000)]
        if as_json:
            emit(rows, True)
            return
        for r in rows:
            target = r["blocked_identity_id"] or r["subject_id"]
            out.print(
                f"{r['id']}  {r['status']:8s}  {r['reason']}  {target}  distance {r['distance']:.3f} "
                f"in ({r['match_threshold']:.2f}, {r['review_threshold']:.2f}]  photo {str(r['photo_sha256'])[:12]}"
                f"  {','.join(r['quality_issues']) or 'good photo'}"  # type: ignore[arg-type]
            )
        if not rows:
            out.print("no reviews")

    guarded(body)


@consent_app.command("review")
def review(
    review_id: Annotated[str, typer.Argument(help="Review id (rev_...).")],
) -> None:
    """One review in full (JSON)."""

    def body() -> None:
        from safeguards.reviews import get_review

        with runtime() as rt, rt.session() as session:
            emit(_review_row(get_review(session=session, review_id=review_id)), True)

    guarded(body)


def _decide(review_id: str, approve: bool, justification: str) -> None:
    def body() -> None:
        from service import identity_reviews

        with runtime() as rt:
            decided = identity_reviews.decide(
                rt, review_id=review_id, approve=approve, justification=justification, actor=actor()
            )
        until = f" until {decided.expires_at:%Y-%m-%d}" if decided.expires_at else ""
        out.print(f"{decided.status} {decided.id} ({decided.reason}) for photo {decided.photo_sha256[:12]}{until}")

    guarded(body)


@consent_app.command("approve")
def approve(
    review_id: Annotated[str, typer.Argument(help="Review id (rev_...).")],
    justification: Annotated[str, typer.Option(help="What you compared and why you conclude (audited).")],
) -> None:
    """Approve a borderline match for that photo only (same file, subject and blocked identity); audited."""
    _decide(review_id, True, justification)


@consent_app.command("reject")
def reject(
    review_id: Annotated[str, typer.Argument(help="Review id (rev_...).")],
    justification: Annotated[str, typer.Option(help="Why the request stays denied (audited).")],
) -> None:
    """Reject a borderline match: the photo stays denied (final, audited)."""
    _decide(review_id, False, justification)
