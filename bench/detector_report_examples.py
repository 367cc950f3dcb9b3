"""Write the analyst's HTML report for one real and one synthetic shared clip (bench/out/reports/).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/detector_report_examples.py [REAL] [SYNTHETIC]

Defaults: the real interview that HyperLips re-synthesised, and a VASA-1 clip. Prints each report's verdict and
probability; open the files in a browser (they fetch nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.detector_corpus import MEDIA  # noqa: E402
from safeguards.classifier import SyntheticClipClassifier  # noqa: E402
from safeguards.cues import FaceTrack, FusionModel  # noqa: E402
from safeguards.detection import detect_media  # noqa: E402
from service.detect_report import render_html  # noqa: E402

OUT = ROOT / "bench" / "out" / "reports"
DEFAULTS = (
    MEDIA / "videos_real" / "interview_public_figure_hyperlips_video2.mp4",
    MEDIA / "synthetic" / "vasa1__l7_gt.mp4",
)


def main() -> None:
    paths = [Path(p) for p in sys.argv[1:3]] or list(DEFAULTS)
    clf, fusion = SyntheticClipClassifier.load_default(), FusionModel.load_default()
    OUT.mkdir(parents=True, exist_ok=True)
    for label, path in zip(("real", "synthetic"), paths, strict=False):
        kept: list[FaceTrack] = []
        report = detect_media(path, watermark_key=b"examples-key-0123456789abcdef012", trust_anchors_pem=None,
                              classifier=clf, fusion=fusion, resolve_tag=lambda tag: None, keep_track=kept)  # fmt: skip
        out = OUT / f"{label}__{path.stem}.html"
        out.write_text(render_html(report.to_dict(), file_name=path.name, track=kept[0]), encoding="utf-8")
        p = report.probability
        print(f"{out.relative_to(ROOT)}: verdict {report.verdict}, probability {p['synthetic']:.2f} "
              f"(threshold {p['threshold']:.2f}), cues applied {p['cues_applied']}")  # fmt: skip


if __name__ == "__main__":
    main()
