"""Measure every cue on every corpus clip (bench/detector_corpus.py) and cache the features.

The cache (bench/out/detector_features.jsonl) is keyed by file, size and the cue code's version, so changing a cue
re-measures everything and adding clips measures only those.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/detector_features.py [--variant original crf28]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_corpus import Clip, build  # noqa: E402
from safeguards.classifier import SyntheticClipClassifier  # noqa: E402
from safeguards.cues import default_cues, measure_all, track_video  # noqa: E402

CACHE = ROOT / "bench" / "out" / "detector_features.jsonl"


# The modules whose code decides the measured features (fusion and wiring do not; the any-generator CNN's feature
# comes from its out-of-fold logits, see below).
MEASURING = ("track", "geometry", "base", "rppg", "audiovisual", "temporal", "spatial", "learned")
OOF = ROOT / "bench" / "out" / "learned_oof.jsonl"


def cue_code_version() -> str:
    h = hashlib.sha256()
    for name in MEASURING:
        h.update((ROOT / "safeguards" / "cues" / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


def any_generator_oof() -> dict[tuple[str, str], float]:
    """(clip path, variant) -> the any-generator CNN's logit from the fold that held out the clip's generator
    and source (written by bench/train_learned_cue.py). The shipped CNN saw every clip, so its own logits would
    leak the answer into a held-out evaluation."""
    if not OOF.exists():
        return {}
    rows = map(json.loads, OOF.read_text().splitlines())
    return {(r["path"], r["variant"]): float(r["logit"]) for r in rows}


def _key(clip: Clip, version: str) -> str:
    return f"{clip.path}:{clip.path.stat().st_size}:{version}"


def load_cache() -> dict[str, dict]:
    if not CACHE.exists():
        return {}
    return {r["key"]: r for r in map(json.loads, CACHE.read_text().splitlines())}


def measure(clips: list[Clip], variant: str, verbose: bool = True) -> list[dict]:
    version = cue_code_version()
    cache = load_cache()
    oof = any_generator_oof()
    cues = default_cues(SyntheticClipClassifier.load_default())
    rows = []
    for clip in clips:
        key = _key(clip, version)
        if key not in cache:
            t0 = time.perf_counter()
            track = track_video(clip.path)
            measured = measure_all(track, cues)
            cache[key] = {
                "key": key,
                "cues": {n: m.features for n, m in measured.items() if m.applies},
                "reasons": {n: m.reason for n, m in measured.items() if not m.applies},
                "seconds": round(time.perf_counter() - t0, 2),
            }
            CACHE.parent.mkdir(parents=True, exist_ok=True)
            with CACHE.open("a") as fp:
                fp.write(json.dumps(cache[key]) + "\n")
            if verbose:
                print(f"{variant:8s} {clip.generator:15s} {clip.name:45s} {cache[key]['seconds']:5.1f}s "
                      f"{sorted(cache[key]['cues'])}", flush=True)  # fmt: skip
        r = cache[key]
        cues = dict(r["cues"])
        if (str(clip.path), variant) in oof:
            cues["any_generator_cnn"] = {"logit": oof[(str(clip.path), variant)]}
        rows.append({"name": clip.name, "variant": variant, "generator": clip.generator, "label": clip.label,
                     "source": clip.source, "cues": cues, "reasons": r["reasons"]})  # fmt: skip
    return rows


def all_rows(variants: tuple[str, ...] = ("original", "crf28")) -> list[dict]:
    return [row for v in variants for row in measure(build(v), v)]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", nargs="+", default=["original", "crf28"])
    args = ap.parse_args()
    rows = all_rows(tuple(args.variant))
    print(f"{len(rows)} rows")
