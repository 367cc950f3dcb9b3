"""Streaming generation: push audio chunks, get frames back with a bounded look-ahead.

Offline generation sees the whole audio; a stream cannot. The lips are driven by the audio around each frame (a
sliding window with `context_s` of history and `lookahead_s` of future, so coarticulation and smoothing still see
both sides); everything that is not audio-driven (blinks, head drift, gaze) comes from an idle track that is a function
of absolute time, made in fixed segments with their own seeds, so a long stream never repeats and never jumps.
Memory is bounded by the window, not the stream length.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields, replace

import numpy as np

from generation.generator import PreparedFace, TalkingFaceGenerator
from generation.media import AudioTrack
from generation.motion import MotionState

# Channels taken from the audio window; all others come from the idle track.
AUDIO_DRIVEN = ("jaw_open", "lip_width", "lip_round", "brow_l", "brow_r")


@dataclass(frozen=True)
class StreamConfig:
    """lookahead_s: audio needed after a frame before it is rendered (the latency floor).
    context_s: audio history the motion of new frames is computed with.
    idle_segment_s: length of each independently seeded idle-motion segment; idle_overlap_s: their crossfade.
    """

    lookahead_s: float = 0.12
    context_s: float = 2.0
    idle_segment_s: float = 10.0
    idle_overlap_s: float = 0.6


class StreamingSession:
    """One live stream for one prepared face. Not thread-safe: feed it from one task."""

    def __init__(
        self,
        generator: TalkingFaceGenerator,
        prepared: PreparedFace,
        *,
        sample_rate: int,
        config: StreamConfig | None = None,
    ) -> None:
        # Phone recognition needs whole utterances (and re-running it on every window would cost ~80 ms a chunk):
        # a stream always drives the lips acoustically.
        controls = replace(generator.config.effective_controls, lipsync="acoustic")
        self.generator = TalkingFaceGenerator(
            replace(generator.config, controls=controls), render=generator.render_config
        )
        self.prepared = prepared
        self.sample_rate = sample_rate
        self.config = config or StreamConfig()
        self.fps = generator.config.fps
        self._audio = np.zeros(0, dtype=np.float32)  # samples from absolute index _audio_start on
        self._audio_start = 0
        self._total_samples = 0
        self._next_frame = 0
        self._idle: dict[int, MotionState] = {}
        self._idle_tails: dict[int, MotionState] = {}
        self._finished = False
        # Warm up before audio arrives, so the first chunk pays only for its own frames.
        self._idle_segment(0)
        for _ in self.generator.render_motion(prepared, MotionState.neutral(1)):
            pass

    @property
    def frames_emitted(self) -> int:
        return self._next_frame

    @property
    def duration_s(self) -> float:
        return self._total_samples / self.sample_rate

    def push(self, samples: np.ndarray) -> list[np.ndarray]:
        """Add mono float32 samples in [-1, 1]; return the frames that are now fully determined."""
        if self._finished:
            raise RuntimeError("the stream is finished")
        chunk = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._audio = np.concatenate([self._audio, chunk])
        self._total_samples += len(chunk)
        ready = int(np.floor((self.duration_s - self.config.lookahead_s) * self.fps))
        return list(self._render_until(ready))

    def finish(self) -> list[np.ndarray]:
        """End of audio: render the remaining frames (ceil(duration * fps) in total, as offline)."""
        self._finished = True
        total = int(np.ceil(self.duration_s * self.fps - 1e-9))
        return list(self._render_until(total))

    # ------------------------------------------------------------------------------------------------ internals
    def _render_until(self, end_frame: int) -> Iterator[np.ndarray]:
        if end_frame <= self._next_frame:
            return
        motion = self._motion(self._next_frame, end_frame)
        self._next_frame = end_frame
        self._trim_audio()
        yield from self.generator.render_motion(self.prepared, motion)

    def _motion(self, start: int, end: int) -> MotionState:
        """Motion for frames [start, end): lips from the audio window, the rest from the idle track."""
        spf = self.sample_rate / self.fps  # samples per frame
        context_frames = int(round(self.config.context_s * self.fps))
        w0 = max(start - context_frames, int(np.ceil(self._audio_start / spf)))  # first frame of the window
        s0 = int(round(w0 * spf)) - self._audio_start
        window = self._audio[max(s0, 0) :]
        if self._finished:  # pad so the last frame has a full frame of audio
            window = np.concatenate([window, np.zeros(int(spf) + 1, np.float32)])
        audio_motion = self.generator.motion(AudioTrack(window, self.sample_rate))
        lo, hi = start - w0, end - w0
        if hi > len(audio_motion):  # rounding at the very end: hold the last frame
            audio_motion = _extend(audio_motion, hi)
        driven = audio_motion.slice(lo, hi)
        idle = self._idle_slice(start, end)
        values = {f.name: getattr(idle, f.name) for f in fields(MotionState)}
        for name in AUDIO_DRIVEN:
            values[name] = getattr(driven, name)
        return MotionState(**values)

    def _idle_slice(self, start: int, end: int) -> MotionState:
        seg = int(round(self.config.idle_segment_s * self.fps))
        parts = []
        for s in range(start // seg, (end - 1) // seg + 1):
            track = self._idle_segment(s)
            lo, hi = max(start, s * seg) - s * seg, min(end, (s + 1) * seg) - s * seg
            parts.append(track.slice(lo, hi))
        return MotionState(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(MotionState)})

    def _idle_segment(self, index: int) -> MotionState:
        """Idle motion for absolute segment `index`, its start crossfaded from the previous segment's tail."""
        if index not in self._idle:
            if index > 0 and (index - 1) not in self._idle_tails:
                self._idle_segment(index - 1)  # segments are made in order, so each can blend from its predecessor
            seg = int(round(self.config.idle_segment_s * self.fps))
            overlap = int(round(self.config.idle_overlap_s * self.fps))
            seeded = replace(self.generator.config, seed=(self.generator.config.seed * 1_000_003 + index) % 2**31)
            silence = np.zeros(int((seg + overlap) / self.fps * self.sample_rate), np.float32)
            track = _extend(TalkingFaceGenerator(seeded).motion(AudioTrack(silence, self.sample_rate)), seg + overlap)
            if index > 0:
                track = _crossfade(self._idle_tails[index - 1], track, overlap)
            self._idle[index] = track.slice(0, seg)
            self._idle_tails[index] = track.slice(seg, seg + overlap)
            for old in [k for k in self._idle if k < index - 1]:  # bounded memory on long streams
                del self._idle[old]
                self._idle_tails.pop(old, None)
        return self._idle[index]

    def _trim_audio(self) -> None:
        """Drop audio older than the context the next frames need."""
        spf = self.sample_rate / self.fps
        keep_from = int(max(0, (self._next_frame - (self.config.context_s + 0.5) * self.fps) * spf))
        drop = keep_from - self._audio_start
        if drop > 0:
            self._audio = self._audio[drop:]
            self._audio_start = keep_from


def _extend(motion: MotionState, n: int) -> MotionState:
    """Pad a motion to n frames by holding its last frame."""
    if len(motion) >= n:
        return motion
    pad = n - len(motion)
    return MotionState(
        **{
            f.name: np.concatenate([getattr(motion, f.name), np.repeat(getattr(motion, f.name)[-1:], pad)])
            for f in fields(MotionState)
        }
    )


def _crossfade(tail: MotionState, track: MotionState, overlap: int) -> MotionState:
    """Blend the previous segment's tail into the start of `track` (blinks: keep whichever is more closed)."""
    n = min(overlap, len(tail), len(track))
    w = np.linspace(0.0, 1.0, n + 2, dtype=np.float32)[1:-1]  # (n,)
    out = {}
    for f in fields(MotionState):
        a, b = getattr(tail, f.name)[:n], getattr(track, f.name).copy()
        if f.name.startswith("blink"):
            b[:n] = np.maximum(a, b[:n])
        else:
            b[:n] = (1 - w) * a + w * b[:n]
        out[f.name] = b
    return MotionState(**out)
