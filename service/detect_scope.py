"""What a detection report may show its caller: the one place that scopes a report (API JSON, HTML report, console).

Anyone allowed to detect sees the evidence: the verdict, provenance (present, valid, signer, trust), whether our
watermark was found and its payload (both read from the file itself), the classifier, the cues and the probability.
The links from a watermark or manifest to one of this installation's generations (generation id, subject id, consent
record id, audit sequence number, creation time, the stored C2PA manifest with its consent and subject assertions)
are another client's business: they are shown only to the generation's owner, to clients with `audit:read`, and to
the local operator (the CLI, which holds the data dir anyway).
"""

from __future__ import annotations

import copy
from typing import Any

from sqlmodel import col, select

from service.auth import Principal
from service.models import Generation
from service.runtime import Runtime

AUDIT_SCOPE = "audit:read"
# Watermark fields that link a clip to a generation of this installation.
LINK_FIELDS = ("generation_id", "consent_record_id", "audit_seq", "subject_id", "created_at", "stored_manifest")
HIDDEN_NOTE = (
    "this clip is linked to a generation of another client: its generation, subject, consent and audit identifiers "
    "are shown only to that client and to auditors (audit:read)"
)
_HIDDEN_NAME = "(another client's generation)"


def linked_generation_ids(report: dict[str, Any]) -> set[str]:
    """The generation ids a report links the clip to (through the watermark or the C2PA manifest)."""
    ids = {report.get("watermark", {}).get("generation_id"), report.get("c2pa", {}).get("generation_id")}
    return {i for i in ids if isinstance(i, str) and i}


def hidden_generation_ids(rt: Runtime, report: dict[str, Any], viewer: Principal | None) -> set[str]:
    """The linked generations this viewer may not see: this installation's, owned by another client. A generation
    id the file names but this installation does not know is only what the file says, and stays."""
    ids = linked_generation_ids(report)
    if viewer is None or AUDIT_SCOPE in viewer.scopes or not ids:
        return set()
    with rt.session() as session:
        owners = session.exec(
            select(Generation.id, Generation.client_id).where(col(Generation.id).in_(sorted(ids)))
        ).all()
    return {gen_id for gen_id, owner in owners if owner != viewer.client_id}


def scoped_report(rt: Runtime, report: dict[str, Any], viewer: Principal | None) -> dict[str, Any]:
    """The report as `viewer` may see it (None: the local operator, who sees everything). Returns a new dict with
    `links_hidden` saying whether anything was withheld."""
    hidden = hidden_generation_ids(rt, report, viewer)
    scoped = copy.deepcopy(report)
    scoped["links_hidden"] = bool(hidden)
    if not hidden:
        return scoped
    identifiers = set(hidden)
    watermark = scoped.get("watermark", {})
    if watermark.get("generation_id") in hidden:
        for name in LINK_FIELDS:
            value = watermark.get(name)
            if isinstance(value, str) and name != "created_at":
                identifiers.add(value)
            if name in watermark:
                watermark[name] = None
    c2pa = scoped.get("c2pa", {})
    if c2pa.get("generation_id") in hidden:
        c2pa["generation_id"] = None
    # Wherever else an identifier was written (the reasons' sentences, a field added later), it is replaced too.
    scrubbed: dict[str, Any] = _scrub(scoped, identifiers)
    scrubbed["reasons"] = [*scrubbed.get("reasons", []), HIDDEN_NOTE]
    return scrubbed


def _scrub(value: Any, identifiers: set[str]) -> Any:
    if isinstance(value, str):
        for ident in identifiers:
            value = value.replace(ident, _HIDDEN_NAME)
        return value
    if isinstance(value, dict):
        return {k: _scrub(v, identifiers) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v, identifiers) for v in value]
    return value
