"""Streaming: same frame count as offline, bounded memory, continuous idle motion, lips closed in silence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from generation import GenerationConfig, TalkingFaceGenerator, load_audio, load_image
from generation.streaming import StreamConfig, StreamingSession


@pytest.fixture(scope="module")
def rig(example_photo: Path) -> tuple[TalkingFaceGenerator, object]:
    gen = TalkingFaceGenerator(GenerationConfig(size=256))
    return gen, gen.prepare(load_image(example_photo, max_pixels=10**8))


def _feed(session: StreamingSession, samples: np.ndarray, chunk: int) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for i in range(0, len(samples), chunk):
        frames += session.push(samples[i : i + chunk])
    return frames + session.finish()


def test_stream_gives_the_offline_frame_count_with_bounded_lookahead(rig, example_audio: Path) -> None:  # type: ignore[no-untyped-def]
    gen, prepared = rig
    audio = load_audio(example_audio).head(2.3)
    session = StreamingSession(gen, prepared, sample_rate=audio.sample_rate)
    first = session.push(audio.samples[:3200])  # 200 ms
    # Frames are released once lookahead_s of audio follows them: (0.2 - 0.12) * 25 = 2 frames.
    assert len(first) == 2 and first[0].shape == (256, 256, 3)
    rest = _feed(session, audio.samples[3200:], 1600)
    assert len(first) + len(rest) == gen.frame_count(audio) == 58
    with pytest.raises(RuntimeError):
        session.push(audio.samples[:10])


def test_memory_is_bounded_and_idle_motion_is_continuous(rig) -> None:  # type: ignore[no-untyped-def]
    gen, prepared = rig
    cfg = StreamConfig(idle_segment_s=2.0, idle_overlap_s=0.4)
    session = StreamingSession(gen, prepared, sample_rate=16000, config=cfg)
    rng = np.random.default_rng(0)
    yaw: list[float] = []
    for _ in range(60):  # 12 s of low noise in 200 ms chunks, crossing five idle segments
        before = session.frames_emitted
        session.push((rng.normal(0, 0.001, 3200)).astype(np.float32))
        motion = session._idle_slice(before, session.frames_emitted) if session.frames_emitted > before else None
        if motion is not None:
            yaw += list(motion.yaw)
        assert len(session._audio) <= int((cfg.context_s + 1.0) * 16000) + 3200
        assert len(session._idle) <= 2
    steps = np.abs(np.diff(np.asarray(yaw)))
    assert steps.max() < 0.02  # radians per frame: no jump at segment joins
