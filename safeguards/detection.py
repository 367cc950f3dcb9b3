"""Is this clip ours, whose generation was it, and does it look synthetic? Independent lines of evidence:

1. C2PA provenance (stripped by any re-encode, but cryptographically strong when present),
2. the invisible watermark (survives re-encoding; resolves to a generation through `resolve_tag`),
3. cues that work on talking-head media of any origin (`safeguards.cues`: pulse, audio-visual coupling, temporal
   consistency, spatial noise and spectrum, a learned CNN), fused into one calibrated probability.

Provenance and the watermark can prove a clip is ours; the cues can only make "synthetic" more or less likely, and
the report says how likely, against which threshold, with which expected false-positive rate, and why.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from generation.media import is_still_image, load_frames_for_detection, load_image, probe_video
from safeguards.classifier import SyntheticClipClassifier
from safeguards.cues import FaceTrack, FusionModel, default_cues, measure_all, track_image, track_video
from safeguards.cues.fusion import FusedScore
from safeguards.known_watermarks import check_known_watermarks
from safeguards.learned_model import load_learned_model
from safeguards.provenance import read_provenance
from safeguards.watermark import WatermarkDetector

Verdict = str  # "provatar-generated" | "likely-synthetic" | "no-evidence"
TagResolver = Callable[[int], dict[str, Any] | None]

WATERMARK_FRAMES = 48
KNOWN_WATERMARK_FRAMES = 12  # open marks are per-image (no temporal vote): a few frames say as much as many


@dataclass
class DetectionReport:
    media: dict[str, Any]
    c2pa: dict[str, Any]
    watermark: dict[str, Any]
    classifier: dict[str, Any]
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)
    cues: list[dict[str, Any]] = field(default_factory=list)
    probability: dict[str, Any] = field(default_factory=dict)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    known_watermarks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_media(
    path: Path,
    *,
    watermark_key: bytes,
    trust_anchors_pem: str | None,
    classifier: SyntheticClipClassifier,
    resolve_tag: TagResolver,
    fusion: FusionModel | None = None,
    any_generator: SyntheticClipClassifier | None = None,
    max_image_pixels: int = 50_000_000,
    max_seconds: float | None = None,
    keep_track: list[FaceTrack] | None = None,
) -> DetectionReport:
    """Analyse an image or video file. Raises InvalidVideo for undecodable input, VideoTooLong past
    ``max_seconds`` (from the header, before decoding).

    ``keep_track``, when given, receives the analysed face track (the HTML report draws crops from it)."""
    fusion = fusion or FusionModel.load_default()
    any_generator = any_generator or _default_any_generator()
    if is_still_image(path):
        sampled = [load_image(path, max_pixels=max_image_pixels)]
        h, w = sampled[0].shape[:2]
        media: dict[str, Any] = {"kind": "image", "width": w, "height": h, "frames": 1, "duration_s": 0.0}
        track = track_image(sampled[0])
    else:
        info = probe_video(path)
        track = track_video(path, max_seconds=max_seconds)
        # The watermark votes over frames the cues already decoded (one pass over the file, not two); a clip
        # too short for the tracker to keep any falls back to reading frames itself.
        sampled = track.sample_frames or load_frames_for_detection(path, max_frames=WATERMARK_FRAMES)
        media = {
            "kind": "video",
            "width": info.width,
            "height": info.height,
            "frames": info.frames,
            "duration_s": info.duration_s,
            "has_audio": info.audio_codec is not None,
        }
    media["frames_analyzed"] = len(sampled)
    media["frames_analyzed_by_cues"] = track.frames_analyzed
    media["face_found_fraction"] = round(track.face_fraction, 3)
    if keep_track is not None:
        keep_track.append(track)

    prov = read_provenance(path, trust_anchors_pem=trust_anchors_pem)
    c2pa = {
        "present": prov.present,
        "state": prov.state,
        "ai_generated": prov.ai_generated,
        "signer": prov.signer,
        "generation_id": prov.generation_id,
        "errors": prov.errors,
        "signer_issuer": prov.signer_issuer,
        "claim_generator": prov.claim_generator,
        "ai_assertions": prov.ai_assertions,
        "trusted": prov.trusted,
        "trust_list": prov.trust_list,
    }

    wm = WatermarkDetector(watermark_key).detect(sampled)
    resolved = resolve_tag(wm.tag) if wm.found and wm.tag is not None else None
    watermark = {
        "found": wm.found,
        "payload": f"{wm.tag:08x}" if wm.found and wm.tag is not None else None,
        "confidence": round(wm.confidence, 4),
        "frames_agreeing": round(wm.frames_agreeing, 4),
        "frames_decoded": wm.frames_decoded,
        "algorithm": wm.algorithm,
        "scale": wm.scale,
        "generation_id": (resolved or {}).get("generation_id"),
        "consent_record_id": (resolved or {}).get("consent_record_id"),
        "audit_seq": (resolved or {}).get("audit_seq"),
        "subject_id": (resolved or {}).get("subject_id"),
        "created_at": (resolved or {}).get("created_at"),
        "stored_manifest": (resolved or {}).get("manifest"),
    }

    # Other parties' open marks (Stable Diffusion's invisible-watermark bytes, ...), each by name.
    known = [asdict(k) for k in check_known_watermarks(sampled[:KNOWN_WATERMARK_FRAMES])]

    cues = default_cues(classifier, any_generator)
    fused = fusion.fuse(measure_all(track, cues))
    learned = next((c for c in fused.cues if c.name == "learned"), None)
    # The renderer CNN's own calibrated score, as before (a still has no motion evidence and scores 0.5).
    cnn_score = classifier.probability(learned.features["logit"]) if learned and learned.applies else 0.5
    classifier_out = {
        "score": round(cnn_score, 4),
        "threshold": classifier.threshold,
        "windows": len(track.triplets),
        "model": classifier.name,
    }
    probability = {
        "synthetic": round(fused.probability, 4),
        "threshold": round(fused.threshold, 4),
        "expected_false_positive_rate": None if fused.expected_fpr != fused.expected_fpr else fused.expected_fpr,
        "model": fusion.version,
        "prior": "even (calibrated for clips as likely fake as real)",
        "cues_applied": sum(c.applies and c.score is not None for c in fused.cues),
        "held_out_mean_auc": fused.held_out_auc,
    }
    timeline = segment_timeline(track, cues, fusion) if track.kind == "video" and len(track.segments) > 1 else []
    verdict, reasons = decide(c2pa, watermark, classifier_out, fused, known)
    return DetectionReport(
        media, c2pa, watermark, classifier_out, verdict, reasons, cue_dicts(fused), probability, timeline, known
    )


@functools.cache
def _default_any_generator() -> SyntheticClipClassifier:
    return load_learned_model()


def cue_dicts(fused: FusedScore) -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "applies": c.applies,
            "score": None if c.score is None else round(c.score, 4),
            "contribution": round(c.contribution, 4),
            "features": {k: round(v, 4) for k, v in c.features.items()},
            "evidence": c.evidence,
            "reason": c.reason,
        }
        for c in fused.cues
    ]


def segment_timeline(track: FaceTrack, cues: list[Any], fusion: FusionModel) -> list[dict[str, Any]]:
    """The fused probability of each analysed segment on its own (the report's score over time)."""
    out = []
    for sub in track.per_segment():
        fused = fusion.fuse(measure_all(sub, cues))
        seg = sub.segments[0]
        out.append({"start_s": round(float(seg.times[0]), 2), "end_s": round(float(seg.times[-1]), 2),
                    "synthetic": round(fused.probability, 4)})  # fmt: skip
    return out


def decide(
    c2pa: dict[str, Any],
    watermark: dict[str, Any],
    classifier: dict[str, Any],
    fused: FusedScore | None = None,
    known_watermarks: list[dict[str, Any]] | None = None,
) -> tuple[Verdict, list[str]]:
    """Combine the evidence. Our own cryptographic marks decide first; the cues alone only say "likely"."""
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
            by = f", claim generator {c2pa['claim_generator']}" if c2pa.get("claim_generator") else ""
            trust = "on our trust list" if c2pa.get("trusted") else "not on our trust list"
            reasons.append(f"C2PA manifest present (state {state}, signer {c2pa.get('signer')}, {trust}{by})")
        if c2pa.get("ai_generated"):
            declared = "; ".join(c2pa.get("ai_assertions") or []) or "trainedAlgorithmicMedia"
            reasons.append(f"the C2PA manifest declares AI-generated content ({declared})")
    else:
        reasons.append("no C2PA manifest (never signed, or stripped by re-encoding)")
    if fused is None:
        synthetic = classifier["score"] >= classifier["threshold"]
        reasons.append(
            f"classifier score {classifier['score']:.2f} "
            + ("at or above" if synthetic else "below")
            + f" the synthetic threshold {classifier['threshold']:.2f}"
        )
    else:
        synthetic = fused.probability >= fused.threshold
        applied = [c for c in fused.cues if c.applies and c.score is not None]
        top = sorted(applied, key=lambda c: -abs(c.contribution))[:3]
        why = ", ".join(f"{c.name} {c.contribution:+.2f}" for c in top) or "no cue applied"
        reasons.append(
            f"probability synthetic {fused.probability:.2f} "
            + ("at or above" if synthetic else "below")
            + f" the threshold {fused.threshold:.2f} ({len(applied)} of {len(fused.cues)} cues scored; "
            + f"largest contributions to the log-odds: {why})"
        )
        if not ours and fused.held_out_auc is not None and fused.held_out_auc < 0.8:
            reasons.append(
                f"caution: on generators held out in validation these cues separated fakes from real footage "
                f"with mean AUC {fused.held_out_auc:.2f} only; below the threshold is not evidence of authenticity"
            )
    others_marks = [k for k in known_watermarks or [] if k.get("found")]
    for k in others_marks:
        reasons.append(
            f"{k['name']} watermark found ({k['bit_agreement']:.0%} of its bits agree; chance on unmarked content "
            f"{k['false_alarm_p']:.1e}): that generator marks its output"
        )
    if ours:
        return "provatar-generated", reasons
    if others_marks:
        return "likely-synthetic", reasons
    if synthetic or c2pa.get("ai_generated"):
        return "likely-synthetic", reasons
    return "no-evidence", reasons
