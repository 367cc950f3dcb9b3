"""A self-contained HTML report of one detection, for an analyst: verdict, per-cue bars, score over time, pulse and
mouth/loudness plots, the most suspicious face crops, the C2PA manifest tree and the watermark result.

Everything is inline (SVG plots, PNG crops as data: URIs, CSS in the page): the file opens offline and fetches
nothing. Every value from the file under test is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from safeguards.cues.track import FaceTrack

__all__ = ["render_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1c1e21}
main{max-width:980px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
.verdict{padding:16px 20px;border-radius:10px;color:#fff;margin:12px 0}
.v-provatar-generated{background:#7b2cbf}.v-likely-synthetic{background:#c2410c}.v-no-evidence{background:#4b5563}
.muted{color:#667} table{border-collapse:collapse;width:100%} td,th{padding:6px 8px;border-bottom:1px solid #e3e5e8;
text-align:left;vertical-align:top} .bar{background:#e5e7eb;border-radius:4px;height:12px;width:220px;position:relative}
.bar>span{position:absolute;left:0;top:0;bottom:0;border-radius:4px}
.crops img{width:160px;height:160px;border-radius:6px;margin:0 8px 8px 0;border:1px solid #ccd}
details{margin-left:14px} summary{cursor:pointer} code{font-size:12px}
.card{background:#fff;border:1px solid #e3e5e8;border-radius:10px;padding:12px 16px;margin:10px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _bar(value: float | None, colour: str) -> str:
    if value is None:
        return '<div class="bar"></div>'
    width = 100 * max(0.0, min(1.0, value))
    return f'<div class="bar"><span style="width:{width:.1f}%;background:{colour}"></span></div>'


def _polyline_svg(
    series: Sequence[tuple[str, Sequence[float], Sequence[float], str]],
    *,
    width: int = 900,
    height: int = 180,
    y_range: tuple[float, float] | None = None,
    hline: float | None = None,
    x_label: str = "seconds",
) -> str:
    """A small line plot: series of (label, xs, ys, colour)."""
    xs_all = [x for _, xs, _, _ in series for x in xs]
    ys_all = [y for _, _, ys, _ in series for y in ys]
    if not xs_all:
        return '<p class="muted">no data</p>'
    x0, x1 = min(xs_all), max(xs_all) if max(xs_all) > min(xs_all) else min(xs_all) + 1
    y0, y1 = y_range or (min(ys_all), max(ys_all) if max(ys_all) > min(ys_all) else min(ys_all) + 1)
    pad = 30

    def px(x: float) -> float:
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def py(y: float) -> float:
        return height - pad + (y - y0) / (y1 - y0) * (2 * pad - height)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="100%" role="img" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#999"/>',
             f'<text x="{width - pad}" y="{height - 8}" font-size="11" text-anchor="end" fill="#666">{_e(x_label)}'
             f" {x0:.1f}-{x1:.1f}</text>",
             f'<text x="4" y="{pad - 8}" font-size="11" fill="#666">{y1:.2f}</text>',
             f'<text x="4" y="{height - pad}" font-size="11" fill="#666">{y0:.2f}</text>']  # fmt: skip
    if hline is not None:
        parts.append(f'<line x1="{pad}" y1="{py(hline):.1f}" x2="{width - pad}" y2="{py(hline):.1f}" '
                     f'stroke="#c2410c" stroke-dasharray="5,4"/>')  # fmt: skip
    for i, (label, xs, ys, colour) in enumerate(series):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=False))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{pts}"/>')
        parts.append(f'<text x="{pad + 6 + 150 * i}" y="14" font-size="12" fill="{colour}">{_e(label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _png_data_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode() if ok else ""


def _suspicious_crops(report: dict[str, Any], track: FaceTrack | None, k: int = 4) -> list[tuple[str, np.ndarray]]:
    """Face crops from the segments the detector found most suspicious (the middle of each), highest first."""
    if track is None or not track.segments:
        return []
    timeline = report.get("timeline") or []
    order = sorted(range(len(track.segments)), key=lambda i: -(timeline[i]["synthetic"] if i < len(timeline) else 0))
    out = []
    for i in order:
        seg = track.segments[i]
        found = np.flatnonzero(seg.found)
        picks = found if len(found) else np.arange(len(seg.times))
        for j in picks[[len(picks) // 3, 2 * len(picks) // 3]] if len(picks) > 2 else picks:
            score = f" · segment score {timeline[i]['synthetic']:.2f}" if i < len(timeline) else ""
            out.append((f"t = {seg.times[j]:.1f} s{score}", seg.crops[j]))
            if len(out) >= k:
                return out
    return out


def _tree(value: Any, depth: int = 0) -> str:
    if isinstance(value, dict):
        items = "".join(
            f"<details{' open' if depth < 1 else ''}><summary>{_e(k)}</summary>{_tree(v, depth + 1)}</details>"
            if isinstance(v, dict | list) and v
            else f"<div><b>{_e(k)}</b>: <code>{_e(json.dumps(v) if not isinstance(v, str) else v)}</code></div>"
            for k, v in value.items()
        )
        return f"<div>{items}</div>"
    if isinstance(value, list):
        return "".join(f"<details><summary>[{i}]</summary>{_tree(v, depth + 1)}</details>" for i, v in enumerate(value))
    return f"<code>{_e(value)}</code>"


def render_html(report: dict[str, Any], *, file_name: str, track: FaceTrack | None = None) -> str:
    """The whole report page as one HTML string."""
    verdict = report["verdict"]
    prob = report.get("probability") or {}
    p, thr = prob.get("synthetic"), prob.get("threshold")
    fpr = prob.get("expected_false_positive_rate")
    media = report["media"]
    body: list[str] = [
        f"<h1>Detection report: {_e(file_name)}</h1>",
        f'<p class="muted">{_e(media.get("kind"))} {_e(media.get("width"))}x{_e(media.get("height"))}, '
        f'{_e(round(float(media.get("duration_s") or 0), 2))} s, {_e(media.get("frames_analyzed_by_cues", "?"))} '
        f'frames analysed, face found in {_e(round(100 * float(media.get("face_found_fraction") or 0)))} %</p>',
        f'<div class="verdict v-{_e(verdict)}"><div style="font-size:20px;font-weight:600">{_e(verdict)}</div>'
        + (f"<div>probability synthetic {p:.2f} (threshold {thr:.2f}"
           + (f", expected false-positive rate on real clips {100 * fpr:.0f} %" if fpr is not None else "")
           + ")</div>" if p is not None else "")
        + "</div>",
        "<ul>" + "".join(f"<li>{_e(r)}</li>" for r in report.get("reasons", [])) + "</ul>",
    ]  # fmt: skip

    body.append("<h2>Cues</h2><table><tr><th>cue</th><th>own score</th><th></th><th>contribution to log-odds</th>"
                "<th>evidence</th></tr>")  # fmt: skip
    for c in report.get("cues", []):
        if c["applies"] and c["score"] is None:
            ev = {k: v for k, v in c["evidence"].items() if not isinstance(v, dict | list) or k == "lag_s"}
            body.append(f"<tr><td><b>{_e(c['name'])}</b></td><td colspan=3 class=muted>{_e(c['reason'])}</td>"
                        f"<td><code>{_e(json.dumps(ev))}</code></td></tr>")  # fmt: skip
        elif c["applies"]:
            colour = "#c2410c" if (c["score"] or 0) >= 0.5 else "#15803d"
            ev = {k: v for k, v in c["evidence"].items() if not isinstance(v, dict | list) or k == "lag_s"}
            body.append(
                f"<tr><td><b>{_e(c['name'])}</b></td><td>{c['score']:.2f}</td><td>{_bar(c['score'], colour)}</td>"
                f"<td>{c['contribution']:+.2f}</td><td><code>{_e(json.dumps(ev))}</code></td></tr>"
            )
        else:
            body.append(f"<tr><td><b>{_e(c['name'])}</b></td><td colspan=3 class=muted>does not apply</td>"
                        f"<td class=muted>{_e(c['reason'])}</td></tr>")  # fmt: skip
    body.append("</table>")

    timeline = report.get("timeline") or []
    if timeline:
        xs = [t for seg in timeline for t in (seg["start_s"], seg["end_s"])]
        ys = [seg["synthetic"] for seg in timeline for _ in (0, 1)]
        body.append("<h2>Score over time</h2>")
        body.append(_polyline_svg([("probability synthetic per segment", xs, ys, "#c2410c")], y_range=(0, 1),
                                  hline=thr))  # fmt: skip
    cues = {c["name"]: c for c in report.get("cues", [])}
    pulse = (cues.get("rppg") or {}).get("evidence", {}).get("signal")
    if pulse:
        body.append("<h2>Pulse signal (forehead and cheeks, band-passed)</h2>")
        body.append(_polyline_svg([("skin pulse (POS)", pulse["t"], pulse["pulse"], "#b91c1c")]))
        ev = cues["rppg"]["evidence"]
        body.append(f'<p class="muted">estimated rate {_e(ev.get("estimated_bpm"))} bpm; region coherence '
                    f'{_e(ev.get("region_coherence"))}; SNR {_e(ev.get("pulse_snr_db"))} dB</p>')  # fmt: skip
    av = (cues.get("audio_visual") or {}).get("evidence", {}).get("series")
    if av:
        m = np.asarray(av["mouth"])
        loud = np.asarray(av["loudness_db"])
        norm = [(m - m.min()) / max(np.ptp(m), 1e-6), (loud - loud.min()) / max(np.ptp(loud), 1e-6)]
        body.append("<h2>Mouth opening and loudness</h2>")
        body.append(_polyline_svg([("mouth opening", av["t"], norm[0].tolist(), "#1d4ed8"),
                                   ("loudness", av["t"], norm[1].tolist(), "#a16207")], y_range=(0, 1)))  # fmt: skip
    crops = _suspicious_crops(report, track)
    if crops:
        body.append("<h2>Face crops from the most suspicious segments</h2><div class=crops>")
        for label, crop in crops:
            body.append(f'<figure style="display:inline-block;width:168px;margin:0 8px 8px 0;vertical-align:top">'
                        f'<img alt="face crop" '
                        f'src="{_png_data_uri(crop)}"><figcaption class=muted>{_e(label)}</figcaption>'
                        "</figure>")  # fmt: skip
        body.append("</div>")

    c2pa, wm = report["c2pa"], report["watermark"]
    body.append("<h2>Provenance (C2PA)</h2><div class=card>")
    body.append(_tree(c2pa) if c2pa.get("present") else "<p>No C2PA manifest in the file.</p>")
    body.append("</div><h2>Watermarks</h2><div class=card>")
    if wm.get("found"):
        body.append(f"<p><b>provatar watermark found</b>: payload {_e(wm['payload'])}, "
                    f"{100 * float(wm['frames_agreeing']):.0f} % of frames agree"
                    + (f"; generation {_e(wm['generation_id'])}" if wm.get("generation_id") else "")
                    + "</p>")  # fmt: skip
    else:
        body.append("<p>provatar watermark: not found.</p>")
    for k in report.get("known_watermarks") or []:
        body.append(f"<p>{_e(k.get('name'))}: {'found' if k.get('found') else 'not found'}</p>")
    body.append("</div>")
    body.append(f'<p class="muted">model {_e(prob.get("model"))}; prior {_e(prob.get("prior"))}. '
                "Cue scores are each cue's own probability; contributions are their terms in the fused log-odds. "
                "A probability is evidence, not proof: provenance and the watermark are the only proofs of "
                "origin.</p>")  # fmt: skip
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport "
            "content='width=device-width,initial-scale=1'><meta http-equiv=Content-Security-Policy "
            "content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
            f"<title>provatar detection: {_e(file_name)}</title><style>{_CSS}</style></head><body><main>"
            + "".join(body) + "</main></body></html>")  # fmt: skip
