"""Is this clip ours, whose generation was it, and does it look synthetic? Three independent lines of evidence:

1. C2PA provenance (stripped by any re-encode, but cryptographically strong when present),
2. the invisible watermark (survives re-encoding; resolves to a generation through `resolve_tag`),
3. a pixel-only classifier (works when both of the above are gone).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generation.media import is_still_image, load_frames_for_detection, load_image, probe_video
from safeguards.classifier import SyntheticClipClassifier
from safeguards.provenance import read_provenance
from safeguards.watermark import WatermarkDetector

Verdict = str  # "provatar-generated" | "likely-synthetic" | "no-evidence"
TagResolver = Callable[[int], dict[str, Any] | None]

WATERMARK_FRAMES = 48


@dataclass
class DetectionReport:
    media: dict[str, Any]
    c2pa: dict[str, Any]
    watermark: dict[str, Any]
    classifier: dict[str, Any]
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_media(
    path: Path,
    *,
    watermark_key: bytes,
    trust_anchors_pem: str | None,
    classifier: SyntheticClipClassifier,
    resolve_tag: TagResolver,
    max_image_pixels: int = 50_000_000,
) -> DetectionReport:
    """Analyse an image or video file. Raises InvalidVideo for undecodable input."""
    if is_still_image(path):
        sampled = [load_image(path, max_pixels=max_image_pixels)]
        h, w = sampled[0].shape[:2]
        media: dict[str, Any] = {"kind": "image", "width": w, "height": h, "frames": 1, "duration_s": 0.0}
    else:
        info = probe_video(path)
        sampled = load_frames_for_detection(path, max_frames=WATERMARK_FRAMES)
        media = {
            "kind": "video",
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": info.duration_s,
        }
    media["frames_analyzed"] = len(sampled)

    prov = read_provenance(path, trust_anchors_pem=trust_anchors_pem)
    c2pa = {
        "present": prov.present,
        "state": prov.state,
        "ai_generated": prov.ai_generated,
        "signer": prov.signer,
        "generation_id": prov.generation_id,
        "errors": prov.errors,
    }

    wm = WatermarkDetector(watermark_key).detect(sampled)
    resolved = resolve_tag(wm.tag) if wm.found and wm.tag is not None else None
    watermark = {
        "found": wm.found,
        "payload": f"{wm.tag:08x}" if wm.found and wm.tag is not None else None,
        "confidence": round(wm.confidence, 4),
        "frames_agreeing": round(wm.frames_agreeing, 4),
        "frames_decoded": wm.frames_decoded,
        "generation_id": (resolved or {}).get("generation_id"),
        "consent_record_id": (resolved or {}).get("consent_record_id"),
        "audit_seq": (resolved or {}).get("audit_seq"),
        "subject_id": (resolved or {}).get("subject_id"),
        "created_at": (resolved or {}).get("created_at"),
        "stored_manifest": (resolved or {}).get("manifest"),
    }

    # Windows spread over the whole video (a still has no motion evidence and scores 0.5).
    cls = classifier.score_frames(sampled) if media["kind"] == "image" else classifier.score_video(path)
    classifier_out = {
        "score": round(cls.score, 4),
        "threshold": cls.threshold,
        "windows": cls.windows,
        "model": cls.model,
    }

    verdict, reasons = decide(c2pa, watermark, classifier_out)
    return DetectionReport(media, c2pa, watermark, classifier_out, verdict, reasons)


def decide(c2pa: dict[str, Any], watermark: dict[str, Any], classifier: dict[str, Any]) -> tuple[Verdict, list[str]]:
    """Combine the evidence. Our own cryptographic marks decide first; the classifier alone only says "likely"."""
    reasons: list[str] = []
    ours = False
    if watermark["found"]:
        ours = True
        gen = watermark.get("generation_id")
        share = f"{watermark['frames_agreeing']:.0%}"
        reasons.append(
            f"provatar watermark found (payload {watermark['payload']}, {share} of frames agree)"
            + (f"; it resolves to generation {gen}" if gen else "; no generation with that tag in this installation")
        )
    if c2pa["present"]:
        state = c2pa["state"]
        if c2pa.get("generation_id") and state == "Trusted":
            ours = True
            reasons.append(
                f"C2PA manifest signed by a trusted provatar signer names generation {c2pa['generation_id']}"
            )
        elif state == "Invalid":
            reasons.append("a C2PA manifest is present but does not validate (the file was altered after signing)")
        else:
            reasons.append(f"C2PA manifest present (state {state}, signer {c2pa.get('signer')})")
        if c2pa.get("ai_generated"):
            reasons.append("the C2PA manifest declares AI-generated content (trainedAlgorithmicMedia)")
    else:
        reasons.append("no C2PA manifest (never signed, or stripped by re-encoding)")
    synthetic = classifier["score"] >= classifier["threshold"]
    reasons.append(
        f"classifier score {classifier['score']:.2f} "
        + ("at or above" if synthetic else "below")
        + f" the synthetic threshold {classifier['threshold']:.2f}"
    )
    if ours:
        return "provatar-generated", reasons
    if synthetic or c2pa.get("ai_generated"):
        return "likely-synthetic", reasons
    return "no-evidence", reasons
