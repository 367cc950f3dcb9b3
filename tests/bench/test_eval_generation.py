"""The generator evaluation's acceptance logic: which clips count toward the blink criterion."""

from __future__ import annotations

from bench.eval_generation import ClipReport, acceptance, blinks_measurable


def _report(name: str, blinks: float, ratio: float | None, kind: str = "generated", silence: float | None = None,
            closed_gap: float | None = None) -> ClipReport:  # fmt: skip
    return ClipReport(
        name=name, kind=kind, frames=250, fps=25.0, face_found=1.0, identity_mean=0.2, identity_max=0.3,
        corr_envelope=0.5, av_offset_ms=0.0, corr_at_offset=0.5, silence_frames=10, silence_gap_median=silence,
        silence_gap_p90=silence, speech_gap_median=0.05, speech_gap_p90=0.1, blinks_per_min=blinks,
        blink_ms_median=200.0, blink_ms_min=120.0, blink_ms_max=280.0, head_deg_per_frame=0.7,
        ear_closed_ratio=ratio, closed_gap=closed_gap,
    )  # fmt: skip


def _blink_row(generated: list[ClipReport]) -> tuple[str, bool | None, str]:
    real = [_report("real", 15.0, None, kind="real")]
    return next(row for row in acceptance(generated, real) if row[0].startswith("10-32 blinks"))


def test_faces_whose_closed_lids_ear_cannot_see_are_named_not_counted() -> None:
    seen = _report("photo__speech", 14.0, 0.35)
    blind = _report("anime__speech", 0.0, 0.92)
    assert blinks_measurable(seen) and not blinks_measurable(blind)
    _, passed, evidence = _blink_row([seen, blind])
    assert passed is True
    assert "over 1 clips" in evidence and "anime" in evidence


def test_blink_rate_out_of_range_fails_on_measurable_faces() -> None:
    _, passed, _ = _blink_row([_report("photo__speech", 4.0, 0.3), _report("photo__other", 6.0, 0.3)])
    assert passed is False


def test_no_measurable_face_is_not_a_pass() -> None:
    _, passed, evidence = _blink_row([_report("anime__speech", 0.0, 0.9)])
    assert passed is None and "not measurable" in evidence


def test_silence_criterion_names_faces_whose_closed_lips_read_open() -> None:
    real = [_report("real", 15.0, None, kind="real", silence=0.05)]
    fine = _report("photo__speech", 14.0, 0.3, silence=0.02, closed_gap=0.01)
    yawn = _report("yawn__speech", 14.0, 0.3, silence=0.09, closed_gap=0.09)
    row = next(r for r in acceptance([fine, yawn], real) if r[0].startswith("mouth opening in silence"))
    assert row[1] is True and "yawn (0.090)" in row[2] and "over 1 clips" in row[2]
    open_mouth = _report("photo__speech", 14.0, 0.3, silence=0.08, closed_gap=0.01)
    row = next(r for r in acceptance([open_mouth], real) if r[0].startswith("mouth opening in silence"))
    assert row[1] is False


def test_blink_durations_judged_by_clip_medians() -> None:
    ok = _report("photo__speech", 14.0, 0.3)  # medians 200 ms, single events 120-280 ms
    ok.blink_ms_min = 80.0  # one shallow event read short
    _, passed, evidence = _blink_row([ok])
    assert passed is True and "single events 80-280 ms" in evidence
    short = _report("photo__speech", 14.0, 0.3)
    short.blink_ms_median = 80.0
    assert _blink_row([short])[1] is False


def test_single_frame_dips_are_not_blinks() -> None:
    import numpy as np

    from bench.eval_generation import _blinks

    ear = np.full(100, 0.3)
    ear[20] = 0.1  # one frame: landmark jitter
    ear[60:64] = [0.25, 0.12, 0.1, 0.24]  # a blink
    assert _blinks(ear, 25.0) == [(60, 63)]
