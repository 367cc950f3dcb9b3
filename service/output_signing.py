"""The C2PA step of a generation: sign the watermarked video with the service's certificate, then read it back.

The manifest says what was generated, under which consent record and policy decision, with which watermark, from
which inputs (as ingredient hashes), and whether a consent officer approved a borderline likeness for the photo.
"""

from __future__ import annotations

from pathlib import Path

from policies import PolicyDecision
from policies.facts import GenerationFacts
from safeguards.provenance import ManifestSpec, ProvenanceReport, Signer, read_provenance, sign_mp4
from safeguards.watermark import WATERMARK_ALGORITHM, WatermarkPayload
from service.identity_reviews import human_review_summary
from service.runtime import Runtime

__all__ = ["VERSION", "sign_output"]

VERSION = "0.1.0"  # the software version the manifest names


def sign_output(
    rt: Runtime,
    *,
    unsigned: Path,
    signed: Path,
    title: str,
    generation_id: str,
    decision: PolicyDecision,
    facts: GenerationFacts,
    payload: WatermarkPayload,
    photo_path: Path,
    audio_path: Path,
) -> ProvenanceReport:
    """Sign `unsigned` into `signed` (the runtime's certificate chain and key, its timestamp authority if any) and
    return the provenance read back from `signed` against the runtime's trust anchors."""
    with Signer.from_files(
        rt.settings.cert_chain_path, rt.settings.signing_key_path, tsa_url=rt.settings.timestamp_authority_url
    ) as signer:
        sign_mp4(
            unsigned,
            signed,
            signer=signer,
            manifest=ManifestSpec(
                title=title,
                generation_id=generation_id,
                policy_decision_id=decision.decision_id,
                consent_record_id=facts.consent_record_id,
                policy_version=decision.policy_version,
                watermark_algorithm=WATERMARK_ALGORITHM,
                watermark_payload_hex=payload.to_hex(),
                software_version=VERSION,
                photo_path=photo_path,
                audio_path=audio_path,
                extra={
                    "policy_hash": decision.policy_hash,
                    "policy_decision": "allow",
                    # Whether a human approved a borderline likeness for this photo, and who.
                    "human_review": human_review_summary(facts),
                },
            ),
        )
    return read_provenance(signed, trust_anchors_pem=rt.trust_anchors_pem())
