"""TalkingFaceGenerator: photo + audio -> a stream of RGB frames, one per 1/fps second of audio.

The head is always rendered as a square crop; with ``framing="full"`` the crops are composited into the whole
(still) photo by ``generation.framing``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from generation.audio_features import AudioFeatureConfig, AudioFeatures, extract_features
from generation.controls import Controls
from generation.face import FaceAnalysis, FaceConfig, analyze_face
from generation.framing import FramingMode, FullFrameScene, check_crop_size, prepare_full_frame
from generation.media import AudioTrack, frame_count
from generation.motion import MotionConfig, MotionState, motion_from_audio
from generation.phonemes import PhoneRecognizer
from generation.render import FaceRig, RenderConfig, Renderer, build_rig
from generation.visemes import LipTrack, lips_from_acoustics, lips_from_phones

__all__ = ["GenerationConfig", "PreparedFace", "TalkingFaceGenerator"]


@dataclass(frozen=True)
class GenerationConfig:
    """Args:
    size: the head crop's side in pixels (even, 128..1024): the output side with framing "crop"; with "full", the
        most the head region is rendered at. fps: frame rate.
    seed: blinks/head-motion randomness (same seed, same video).
    device: torch device ("cpu", "cuda", "cuda:1"). motion_intensity: scales head, brow and gaze motion.
    batch_frames: frames rendered per batch (memory stays bounded by this); None = 1 on CPU (measured fastest,
        cache-friendly) and 8 on CUDA (fewer kernel launches).
    controls: gaze, head distance, emotion, lip-sync path (generation.controls.Controls); its seed and
        motion_intensity, when set, override the two plain fields above. None = neutral controls.
    framing: "crop" (size x size around the face) or "full" (the whole photo, up to 1920x1080, its own aspect
        ratio; generation.framing).
    """

    size: int = 512
    fps: int = 25
    seed: int = 0
    device: str = "cpu"
    motion_intensity: float = 1.0
    batch_frames: int | None = None
    controls: Controls | None = None
    framing: FramingMode = "crop"

    @property
    def effective_controls(self) -> Controls:
        """The controls with seed and motion intensity resolved (controls win over the plain fields)."""
        c = self.controls or Controls()
        seed = self.seed if c.seed is None else c.seed
        intensity = self.motion_intensity if c.motion_intensity is None else c.motion_intensity
        return Controls(
            gaze_x=c.gaze_x,
            gaze_y=c.gaze_y,
            head_distance=c.head_distance,
            emotion=c.emotion,
            emotion_intensity=c.emotion_intensity,
            motion_intensity=intensity,
            seed=seed,
            lipsync=c.lipsync,
        )


@dataclass(frozen=True)
class PreparedFace:
    """A photo analysed once and rigged for rendering; reuse it for many audio tracks.

    scene: with full framing, the still picture the head crops are composited into; None for crop framing.
    """

    face: FaceAnalysis
    rig: FaceRig
    scene: FullFrameScene | None = None

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames ``TalkingFaceGenerator.frames`` yields for this face."""
        if self.scene is not None:
            return self.scene.size
        side = self.face.image.shape[0]
        return side, side

    def compose(self, crop: np.ndarray) -> np.ndarray:
        """The output frame for one rendered head crop: the crop itself, or the full frame showing it."""
        return crop if self.scene is None else self.scene.compose(crop)

    @property
    def warnings(self) -> list[str]:
        """What could not be animated as usual on this photo (e.g. a mouth covered by a hand), in plain words:
        the job result and the CLI report them; the video is still made."""
        return self.rig.warnings


class TalkingFaceGenerator:
    """Generates talking-face frames from one photo and one audio track, on CPU or CUDA."""

    def __init__(self, config: GenerationConfig | None = None, *, render: RenderConfig | None = None) -> None:
        self.config = config or GenerationConfig()
        self.device = torch.device(self.config.device)
        self.render_config = render or RenderConfig()
        self.controls = self.config.effective_controls  # validated once, here
        check_crop_size(self.config.size)
        if self.config.framing not in ("crop", "full"):
            raise ValueError(f"framing must be 'crop' or 'full', got {self.config.framing!r}")
        self._phones = PhoneRecognizer()

    def prepare(self, photo_rgb: np.ndarray) -> PreparedFace:
        """Find, crop and mesh the face (slow part, done once); with full framing also place the crop in the
        still picture. Raises NoFaceFound."""
        if self.config.framing == "full":
            face, scene = prepare_full_frame(photo_rgb, self.config.size)
            return PreparedFace(face=face, rig=build_rig(face, self.render_config, self.device), scene=scene)
        face = analyze_face(photo_rgb, FaceConfig(size=self.config.size))
        return PreparedFace(face=face, rig=build_rig(face, self.render_config, self.device))

    def frame_count(self, audio: AudioTrack) -> int:
        """Frames the video for ``audio`` has: ceil(duration * fps)."""
        return frame_count(audio.duration_s, self.config.fps)

    def motion(self, audio: AudioTrack, *, head_limit_deg: float | None = None) -> MotionState:
        """The per-frame motion for ``audio`` (exposed for inspection, tests and the evaluation harness).

        head_limit_deg: soft limit of the head angles; None = MotionConfig's (20 degrees).
        """
        features = extract_features(audio, AudioFeatureConfig(fps=self.config.fps))
        motion_config = MotionConfig(fps=self.config.fps)
        if head_limit_deg is not None:
            motion_config = MotionConfig(fps=self.config.fps, max_head_deg=head_limit_deg)
        lips = self.lips(audio, features)
        return motion_from_audio(features, motion_config, lips=lips, controls=self.controls)

    def lips(self, audio: AudioTrack, features: AudioFeatures) -> LipTrack:
        """The lip track by the configured path: "phonemes", "acoustic", or "auto" (phones when pocketsphinx is
        installed and its output looks like speech, acoustic otherwise). "phonemes" raises PhonemesUnavailable
        when pocketsphinx is missing."""
        mode = self.controls.lipsync
        if mode == "acoustic" or (mode == "auto" and not PhoneRecognizer.available()):
            return lips_from_acoustics(features)
        transcript = self._phones.recognize(audio)
        if mode == "auto" and transcript.plausibility < 0.5:
            return lips_from_acoustics(features)
        return lips_from_phones(transcript, features)

    def frames(self, prepared: PreparedFace, audio: AudioTrack) -> Iterator[np.ndarray]:
        """Yield exactly frame_count(audio) output frames, (H, W, 3) uint8 RGB (``prepared.output_size``)."""
        for crop in self.crops(prepared, audio):
            yield prepared.compose(crop)

    def crops(self, prepared: PreparedFace, audio: AudioTrack) -> Iterator[np.ndarray]:
        """Yield exactly frame_count(audio) rendered head crops, (size, size, 3) uint8 RGB, a batch at a time
        (the output frames themselves with crop framing)."""
        # An occluded face turns as far as a clear one: an occluder on the face turns with the head, a held one
        # stays (RenderConfig.occluder_follows_head; bench/occluder_turns.py shows both at +-20 degrees).
        yield from self.render_motion(prepared, self.motion(audio))

    @torch.no_grad()
    def render_motion(self, prepared: PreparedFace, motion: MotionState) -> Iterator[np.ndarray]:
        """Render the head crops of a given MotionState (e.g. edited or streamed), batch by batch."""
        renderer = Renderer(prepared.rig)
        step = self.config.batch_frames or (8 if self.device.type == "cuda" else 1)
        for start in range(0, len(motion), step):
            batch = renderer.render(motion.slice(start, min(start + step, len(motion))))  # (B, H, W, 3)
            yield from batch
