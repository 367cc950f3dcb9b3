"""What every cue looks at: the main face tracked through a few segments of the clip, and the clip's audio.

A clip is analysed in up to ``max_segments`` contiguous segments spread over its length (a whole short clip is one
segment), at about ``analysis_fps`` frames per second. Per analysed frame we keep a face-centred crop (so small faces
in 1080p frames are measured at a usable size), the 478-point face mesh inside that crop, and a small copy of the
whole frame. A few full-resolution frames are kept for the spatial cues, which need the camera's own pixels.

Faces are found with mediapipe's full-range face detector (small and distant faces too) and meshed with mediapipe's
face mesh in tracking mode on the crop. The largest face wins. Segments are decoded by seeking, so a 60 s clip costs
about as much as an 18 s one.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np

from generation.errors import InvalidVideo, VideoTooLong
from generation.face import native_stderr_silenced

if TYPE_CHECKING:
    from safeguards.classifier import FaceCropper
from generation.media import AudioTrack, load_audio, load_image, probe_video

__all__ = ["FaceTrack", "Segment", "TrackConfig", "track_image", "track_video"]

CROP = 256  # side of the face crop the mesh and the pixel cues see
CROP_SCALE = 2.0  # crop side / detector box side: the whole head, some hair, neck and background
THUMB_SIDE = 256  # longer side of the small whole-frame copies kept per analysed frame


@dataclass(frozen=True)
class TrackConfig:
    """How much of a clip is analysed.

    Args:
        analysis_fps: target rate of analysed frames (rPPG needs >= 8; lip motion >= 10).
        segment_s: length of one contiguous segment in seconds.
        max_segments: segments spread over a long clip (a clip shorter than segment_s * max_segments is read
            from the start in segment_s pieces).
        full_frames: full-resolution frames kept for the spatial cues.
        audio_rate: sample rate of the decoded audio.
    """

    analysis_fps: float = 15.0
    segment_s: float = 6.0
    max_segments: int = 3
    full_frames: int = 6
    triplets_per_segment: int = 4
    # Native-resolution frames kept for the watermark detector (so it needs no second decode of the whole clip).
    sample_frames: int = 48
    # Frames larger than this are scaled down as they are decoded: memory stays bounded whatever the file declares
    # (a 32 kB 8192x8192 MP4 decodes to 200 MB a frame), and a 1080p face is already far above what the cues need.
    max_frame_pixels: int = 1920 * 1088
    full_frame_max_side: int = 1280
    audio_rate: int = 16000


@dataclass
class Segment:
    """One contiguous run of analysed frames. Arrays are indexed by analysed frame."""

    start_s: float
    times: np.ndarray  # (T,) seconds from the clip's start
    crops: np.ndarray  # (T, CROP, CROP, 3) uint8 RGB face crops
    landmarks: np.ndarray  # (T, 478, 3) float32 in crop pixels; NaN where no face was found
    boxes: np.ndarray  # (T, 3) crop box (x0, y0, side) in frame pixels
    thumbs: list[np.ndarray]  # small whole frames (longer side at most THUMB_SIDE), RGB

    @property
    def found(self) -> np.ndarray:
        return ~np.isnan(self.landmarks[:, 0, 0])

    @property
    def fps(self) -> float:
        if len(self.times) < 2:
            return 0.0
        return float((len(self.times) - 1) / max(self.times[-1] - self.times[0], 1e-6))


@dataclass
class FaceTrack:
    kind: str  # "video" | "image"
    width: int
    height: int
    fps: float
    duration_s: float
    segments: list[Segment]
    full_frames: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) RGB, at most full_frame_max_side
    full_landmarks: list[np.ndarray | None] = field(default_factory=list)  # (478, 3) in full_frames' pixels
    audio: AudioTrack | None = None
    # Runs of three consecutive frames (at most 640 px) for the learned frame-difference model.
    triplets: list[list[np.ndarray]] = field(default_factory=list)
    # Up to TrackConfig.sample_frames analysed frames at the file's own resolution, spread over the segments.
    sample_frames: list[np.ndarray] = field(default_factory=list)
    # The triplets' face crops, cut once (`window_crops`) and shared by every CNN cue and every segment's score.
    _window_crops: np.ndarray | None = field(default=None, repr=False)

    def window_crops(self) -> np.ndarray:
        """(N, 3, CROP, CROP) grey face crops of the triplets, as the CNN cues take them (computed once)."""
        if self._window_crops is None:
            from safeguards.classifier import CROP as CNN_CROP

            cropper = _cnn_cropper()
            crops = [cropper.crops(t) for t in self.triplets]
            self._window_crops = np.stack(crops) if crops else np.zeros((0, 3, CNN_CROP, CNN_CROP), np.uint8)
        return self._window_crops

    @property
    def frames_analyzed(self) -> int:
        return int(sum(len(s.times) for s in self.segments))

    @property
    def face_fraction(self) -> float:
        """Share of analysed frames in which a face was meshed."""
        n = self.frames_analyzed
        return float(sum(int(s.found.sum()) for s in self.segments)) / n if n else 0.0

    def per_segment(self) -> list[FaceTrack]:
        """One track per segment (for a score over time), each with the full frames and triplets nearest to it."""
        out = []
        n = max(len(self.segments), 1)
        per = max(1, len(self.triplets) // n)
        k = max(1, len(self.full_frames) // n)
        for i, seg in enumerate(self.segments):
            full = self.full_frames[i * k : (i + 1) * k] or self.full_frames[-1:]
            lms = self.full_landmarks[i * k : (i + 1) * k] or self.full_landmarks[-1:]
            trip = self.triplets[i * per : (i + 1) * per]
            sub = FaceTrack(self.kind, self.width, self.height, self.fps, self.duration_s, [seg], full, lms,
                            self.audio, trip)  # fmt: skip
            if self._window_crops is not None:
                sub._window_crops = self._window_crops[i * per : (i + 1) * per]
            out.append(sub)
        return out


@functools.cache
def _cnn_cropper() -> FaceCropper:
    """One face cropper per process: its detector graph is slow to build and guarded by a lock."""
    from safeguards.classifier import FaceCropper

    return FaceCropper()


class _FaceFinder:
    """Full-range face detection on a downscaled frame, then the mesh on a face-centred crop (tracking mode)."""

    def __init__(self) -> None:
        import mediapipe as mp

        with native_stderr_silenced():
            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=0.5
            )
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=False, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
            )
            self._still_mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, max_num_faces=1, refine_landmarks=True, min_detection_confidence=0.5
            )
            blank = np.zeros((64, 64, 3), np.uint8)
            for graph in (self._detector, self._mesh, self._still_mesh):
                graph.process(blank)

    def close(self) -> None:
        for graph in (self._detector, self._mesh, self._still_mesh):
            graph.close()

    def box(self, frame: np.ndarray) -> tuple[float, float, float] | None:
        """(x0, y0, side) of the square crop around the largest face, in frame pixels; None without a face."""
        h, w = frame.shape[:2]
        scale = min(1.0, 640.0 / max(h, w))
        small = cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        result = self._detector.process(np.ascontiguousarray(small))
        if not result.detections:
            return None
        best = max(
            result.detections,
            key=lambda d: d.location_data.relative_bounding_box.width * d.location_data.relative_bounding_box.height,
        )
        b = best.location_data.relative_bounding_box
        bw, bh = b.width * w, b.height * h
        side = max(CROP_SCALE * max(bw, bh), 32.0)
        cx, cy = b.xmin * w + bw / 2, b.ymin * h + bh / 2 - 0.05 * bh
        return cx - side / 2, cy - side / 2, side

    def mesh(self, crop: np.ndarray, *, still: bool = False) -> np.ndarray | None:
        """(478, 3) landmarks in crop pixels; ``still`` for an unrelated frame (no tracking state)."""
        result = (self._still_mesh if still else self._mesh).process(np.ascontiguousarray(crop))
        if not result.multi_face_landmarks:
            return None
        pts = result.multi_face_landmarks[0].landmark
        return np.array([(p.x * CROP, p.y * CROP, p.z * CROP) for p in pts], dtype=np.float32)  # (478, 3)


def crop_square(frame: np.ndarray, box: tuple[float, float, float], size: int = CROP) -> np.ndarray:
    """(size, size, 3) crop of ``box`` (x0, y0, side); outside the frame is edge-replicated."""
    x0, y0, side = box
    a = size / side
    m = np.array([[a, 0, -x0 * a], [0, a, -y0 * a]], dtype=np.float32)
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (size, size), flags=interp, borderMode=cv2.BORDER_REPLICATE)


def limit_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame itself when its longer side is at most ``max_side``, else an area-averaged downscale to it."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    s = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def _decode(frame: av.VideoFrame, max_pixels: int) -> np.ndarray:
    """RGB array of a decoded frame, scaled down by swscale (before any full-size copy) to at most max_pixels."""
    w, h = frame.width, frame.height
    if w * h <= max_pixels:
        return frame.to_ndarray(format="rgb24")
    s = math.sqrt(max_pixels / (w * h))
    return frame.reformat(width=max(2, int(w * s) // 2 * 2), height=max(2, int(h * s) // 2 * 2),
                          format="rgb24").to_ndarray()  # fmt: skip


def _segment_starts(duration: float, cfg: TrackConfig) -> list[float]:
    if duration <= cfg.segment_s * cfg.max_segments:
        n = max(1, math.ceil(duration / cfg.segment_s - 1e-6))
        return [i * cfg.segment_s for i in range(min(n, cfg.max_segments))]
    span = duration - cfg.segment_s
    return [span * i / (cfg.max_segments - 1) for i in range(cfg.max_segments)]


class _SegmentBuilder:
    def __init__(self, start_s: float, finder: _FaceFinder) -> None:
        self.start_s, self.finder = start_s, finder
        self.times: list[float] = []
        self.crops: list[np.ndarray] = []
        self.landmarks: list[np.ndarray] = []
        self.boxes: list[tuple[float, float, float]] = []
        self.thumbs: list[np.ndarray] = []
        self._box: tuple[float, float, float] | None = None
        self._misses = 0

    def add(self, t: float, frame: np.ndarray) -> None:
        if self._box is None or self._misses >= 3:
            self._box = self.finder.box(frame) or self._box
            self._misses = 0
        h, w = frame.shape[:2]
        box = self._box or (w / 2 - 0.4 * min(h, w), h / 2 - 0.4 * min(h, w), 0.8 * min(h, w))
        crop = crop_square(frame, box)
        lm = self.finder.mesh(crop) if self._box is not None else None
        if lm is None:
            self._misses += 1
            lm = np.full((478, 3), np.nan, np.float32)
        else:
            self._misses = 0
            # Re-centre the crop on the meshed face when it drifts (head moves, camera pans), not every frame:
            # a crop that jumps would add motion of its own.
            lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
            centre = (lo + hi) / 2 / CROP
            extent = float((hi - lo).max()) / CROP
            if abs(centre[0] - 0.5) > 0.08 or abs(centre[1] - 0.5) > 0.08 or not 0.3 < extent < 0.7:
                x0, y0, side = box
                cx, cy = x0 + centre[0] * side, y0 + centre[1] * side
                new_side = max(side * extent / 0.5, 32.0)
                self._box = (cx - new_side / 2, cy - new_side / 2, new_side)
        self.times.append(t)
        self.crops.append(crop)
        self.landmarks.append(lm)
        self.boxes.append(box)
        self.thumbs.append(limit_side(frame, THUMB_SIDE))

    def build(self) -> Segment:
        return Segment(
            start_s=self.start_s,
            times=np.asarray(self.times, np.float64),
            crops=np.stack(self.crops) if self.crops else np.zeros((0, CROP, CROP, 3), np.uint8),
            landmarks=np.stack(self.landmarks) if self.landmarks else np.zeros((0, 478, 3), np.float32),
            boxes=np.asarray(self.boxes, np.float64).reshape(-1, 3),
            thumbs=self.thumbs,
        )


def _full_landmarks(finder: _FaceFinder, frame: np.ndarray) -> np.ndarray | None:
    box = finder.box(frame)
    if box is None:
        return None
    lm = finder.mesh(crop_square(frame, box), still=True)
    if lm is None:
        return None
    x0, y0, side = box
    return lm * np.float32(side / CROP) + np.array([x0, y0, 0], np.float32)


def track_image(image: np.ndarray | Path, *, max_pixels: int = 50_000_000) -> FaceTrack:
    """A still image as a one-frame track (only the cues that need no motion apply)."""
    frame = load_image(image, max_pixels=max_pixels) if isinstance(image, Path) else image
    finder = _FaceFinder()
    try:
        seg = _SegmentBuilder(0.0, finder)
        seg.add(0.0, frame)
        full = limit_side(frame, TrackConfig.full_frame_max_side)
        lms = [_full_landmarks(finder, full)]
    finally:
        finder.close()
    h, w = frame.shape[:2]
    return FaceTrack("image", w, h, 0.0, 0.0, [seg.build()], [full], lms, None)


def track_video(path: Path, config: TrackConfig | None = None, *, max_seconds: float | None = None) -> FaceTrack:
    """Decode the analysed segments of a video, track its main face, and load its audio (None without audio).

    Raises:
        InvalidVideo: the file cannot be decoded or holds no frame.
        VideoTooLong: the header declares more than ``max_seconds`` (checked before any decoding).
    """
    cfg = config or TrackConfig()
    info = probe_video(path)
    if max_seconds is not None and info.duration_s > max_seconds:
        raise VideoTooLong(info.duration_s, max_seconds)
    fps = info.fps or 25.0
    duration = info.duration_s or (info.frames / fps if info.frames else 0.0)
    step = max(1, round(fps / cfg.analysis_fps))
    starts = _segment_starts(duration, cfg) if duration > 0 else [0.0]
    full_times = set(np.linspace(0, max(duration - 0.5, 0), cfg.full_frames).round(2).tolist()) if duration else {0}
    segments: list[Segment] = []
    full: list[tuple[float, np.ndarray]] = []
    triplets: list[list[np.ndarray]] = []
    samples: list[np.ndarray] = []
    covered = min(duration, cfg.segment_s * len(starts)) if duration else cfg.segment_s
    sample_every = max(1, math.ceil(covered * fps / step / max(cfg.sample_frames, 1)))
    analysed = 0
    finder = _FaceFinder()
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # Frame threading keeps a decoded frame per thread in flight: for huge frames that is hundreds of MB
            # each, so those decode on one thread (slower, bounded memory).
            if info.width * info.height <= cfg.max_frame_pixels:
                stream.thread_type = "AUTO"
            else:
                stream.thread_count = 1
            tb = float(stream.time_base or 1 / 90000)
            offset = float(stream.start_time or 0) * tb
            for start in starts:
                builder = _SegmentBuilder(start, finder)
                if start > 0:
                    container.seek(int((start + offset) / tb), stream=stream, backward=True, any_frame=False)
                end = start + cfg.segment_s
                per_segment = int(cfg.segment_s * fps)
                triplet_at = {int(per_segment * (i + 0.5) / cfg.triplets_per_segment)
                              for i in range(cfg.triplets_per_segment)}  # fmt: skip
                run: list[np.ndarray] = []
                k = 0
                for frame in container.decode(stream):
                    t = (float(frame.pts) * tb - offset) if frame.pts is not None else start + k / fps
                    if t < start - 0.5 / fps:
                        continue
                    if t >= end:
                        break
                    if k in triplet_at or run:
                        run.append(limit_side(_decode(frame, cfg.max_frame_pixels), 640))
                        if len(run) == 3:
                            triplets.append(run)
                            run = []
                    if k % step == 0:
                        rgb = _decode(frame, cfg.max_frame_pixels)
                        builder.add(t, rgb)
                        if analysed % sample_every == 0 and len(samples) < cfg.sample_frames:
                            samples.append(rgb)
                        analysed += 1
                        due = [ft for ft in full_times if abs(ft - t) <= step / fps / 2 + 1e-6]
                        if due and len(full) < cfg.full_frames:
                            full.append((t, limit_side(rgb, cfg.full_frame_max_side)))
                            full_times.discard(due[0])
                    k += 1
                if builder.times:
                    segments.append(builder.build())
        if not segments:
            raise InvalidVideo("no frame of the video could be decoded")
        if len(full) < 2:  # the planned times fell between analysed frames: take the middle of each segment
            full = [(0.0, segments[i].thumbs[len(segments[i].thumbs) // 2]) for i in range(len(segments))]
        full_frames = [f for _, f in sorted(full, key=lambda x: x[0])]
        full_lms = [_full_landmarks(finder, f) for f in full_frames]
    except av.FFmpegError as exc:
        raise InvalidVideo(f"the video is corrupt: {exc}") from exc
    finally:
        finder.close()
    audio = None
    if info.audio_codec is not None:
        try:
            audio = load_audio(Path(path), sample_rate=cfg.audio_rate, max_seconds=max_seconds)
        except Exception:  # noqa: BLE001  (a broken audio track only means the audio cues do not apply)
            audio = None
    height, width = samples[0].shape[:2] if samples else (info.height, info.width)  # the analysed pixels
    return FaceTrack(
        "video", width, height, fps, duration, segments, full_frames, full_lms, audio, triplets, samples
    )

