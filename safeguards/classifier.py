"""A small trained classifier that scores how likely a clip is synthetic (a face animated from one still photo).

It looks only at pixels, never at metadata or the watermark, so it still works on a re-encoded, stripped copy.
v2 is a small CNN (`ClipNet`, ~0.1 M parameters) on face-centred grey crops of three consecutive frames: the
middle frame and the two frame differences. One-photo animation leaves tell-tale traces there: the face texture
is resampled (bilinear warp) from the same photo in every frame, the mouth interior is painted, and the
frame-to-frame change is a smooth warp of frozen texture rather than fresh light, shading and sensor noise.
Scores of windows sampled over the clip are averaged in logit space and mapped to a calibrated probability
(Platt scaling fitted on a calibration split by `bench/train_classifier.py`). Weights ship in the package as
`safeguards/models/synthetic_clip_v2.npz` (plain arrays plus a JSON metadata string: no pickle anywhere).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from torch import nn

from generation.media import probe_video

__all__ = [
    "CROP",
    "MIN_FRAMES",
    "ClassifierScore",
    "ClipNet",
    "FaceCropper",
    "SyntheticClipClassifier",
    "save_model",
    "triplet_input",
]

CROP = 128  # side of the face crop the network sees
CROP_SCALE = 1.6  # crop side / face-detector box side (forehead to chin plus some hair and neck)
MIN_FRAMES = 3  # one window: the middle frame and its two neighbours
DEFAULT_MODEL = "synthetic_clip_v2.npz"
DEFAULT_WINDOWS = 16


@dataclass(frozen=True)
class ClassifierScore:
    score: float  # calibrated probability that the clip is synthetic
    threshold: float
    windows: int
    model: str

    @property
    def synthetic(self) -> bool:
        return self.score >= self.threshold


class ClipNet(nn.Module):
    """Five 3x3 conv blocks (the first at full resolution, where resampling traces live), then average and max
    pooling over space so the decision is a vote of local evidence rather than a judgement of the whole face."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        chans = [3, width, 2 * width, 3 * width, 4 * width, 6 * width]
        layers: list[nn.Module] = []
        for i in range(5):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=1 if i == 0 else 2, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * chans[-1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, CROP, CROP) from `triplet_input`. Returns (B,) logits (synthetic > 0)."""
        f = self.features(x)  # (B, C, CROP/16, CROP/16)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)  # (B, 2C)
        return self.head(pooled)[:, 0]


def triplet_input(crops: np.ndarray) -> np.ndarray:
    """Network input from three consecutive grey crops.

    Args:
        crops: (..., 3, CROP, CROP) uint8 or float in 0..255, frames t-1, t, t+1.
    Returns:
        (..., 3, CROP, CROP) float32: centred frame t, and the two frame differences (amplified: they are small).
    """
    c = crops.astype(np.float32) / 255.0
    mid = c[..., 1, :, :] - 0.5
    d0 = (c[..., 1, :, :] - c[..., 0, :, :]) * 8.0
    d1 = (c[..., 2, :, :] - c[..., 1, :, :]) * 8.0
    return np.stack([mid, d0, d1], axis=-3)


class FaceCropper:
    """Face-centred square grey crops: mediapipe's face detector finds the face once per window, and all frames of
    the window are cut at the same place (so camera and head motion stay visible). Without a face: centre crop.

    mediapipe graphs are not re-entrant, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._detector: object | None = None

    def face_box(self, frame_rgb: np.ndarray) -> tuple[float, float, float]:
        """(cx, cy, side) in pixels of the square crop around the most confident face, or a centre crop."""
        h, w = frame_rgb.shape[:2]
        with self._lock:
            if self._detector is None:
                import mediapipe as mp

                from generation.face import native_stderr_silenced

                # The graph prints start-up chatter on fd 2 with its first frame; keep the CLI's output clean.
                with native_stderr_silenced():
                    self._detector = mp.solutions.face_detection.FaceDetection(
                        model_selection=1, min_detection_confidence=0.5
                    )
                    result = self._detector.process(np.ascontiguousarray(frame_rgb))  # type: ignore[attr-defined]
            else:
                result = self._detector.process(np.ascontiguousarray(frame_rgb))  # type: ignore[attr-defined]
        if not result.detections:
            return w / 2, h / 2, 0.8 * min(h, w)
        best = max(result.detections, key=lambda d: d.score[0])
        box = best.location_data.relative_bounding_box
        bw, bh = box.width * w, box.height * h
        side = CROP_SCALE * max(bw, bh)
        return (box.xmin * w + bw / 2), (box.ymin * h + bh / 2), max(side, 16.0)

    @staticmethod
    def crop(frame_rgb: np.ndarray, box: tuple[float, float, float]) -> np.ndarray:
        """(CROP, CROP) uint8 grey crop of ``box``; outside the frame is edge-replicated."""
        cx, cy, side = box
        gray = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2GRAY)
        h, w = gray.shape
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        s = int(round(side))
        pad = max(0, -x0, -y0, x0 + s - w, y0 + s - h)
        if pad:
            gray = cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            x0, y0 = x0 + pad, y0 + pad
        roi = gray[y0 : y0 + s, x0 : x0 + s]
        interp = cv2.INTER_AREA if s > CROP else cv2.INTER_LINEAR
        return cv2.resize(roi, (CROP, CROP), interpolation=interp)

    def crops(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(T, CROP, CROP) uint8 crops of consecutive frames, all at the face box of the middle frame."""
        box = self.face_box(frames[len(frames) // 2])
        return np.stack([self.crop(f, box) for f in frames])


def save_model(path: Path, net: ClipNet, meta: dict[str, object]) -> None:
    """Write weights and metadata as one .npz (loaded with allow_pickle=False: nothing executable in the file)."""
    arrays = {f"w/{k}": v.detach().cpu().numpy() for k, v in net.state_dict().items()}
    np.savez_compressed(Path(path), meta=np.array(json.dumps(meta)), **arrays)


def _window_starts(n_frames: int, windows: int) -> list[int]:
    """Start indices of up to ``windows`` evenly spread 3-frame windows in a clip of ``n_frames``."""
    last = n_frames - MIN_FRAMES
    if last < 0:
        return []
    k = min(windows, last + 1)
    return sorted({int(round(i * last / max(k - 1, 1))) for i in range(k)})


class SyntheticClipClassifier:
    """`ClipNet` over sampled 3-frame windows, mean logit, Platt-calibrated probability."""

    def __init__(
        self,
        net: ClipNet,
        *,
        platt_a: float,
        platt_b: float,
        threshold: float,
        name: str,
        windows: int = DEFAULT_WINDOWS,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.platt_a, self.platt_b = platt_a, platt_b
        self.threshold, self.name, self.windows = threshold, name, windows
        self.cropper = FaceCropper()

    @classmethod
    def load(cls, path: Path, *, device: str | torch.device = "cpu") -> SyntheticClipClassifier:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            state = {k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith("w/")}
        if meta.get("input") != f"face-crop-gray-triplet-{CROP}":
            raise ValueError(f"{path}: model was trained on another input ({meta.get('input')})")
        net = ClipNet(width=int(meta["width"]))
        net.load_state_dict(state)
        return cls(
            net,
            platt_a=float(meta["platt_a"]),
            platt_b=float(meta["platt_b"]),
            threshold=float(meta["threshold"]),
            name=str(meta["name"]),
            windows=int(meta.get("windows", DEFAULT_WINDOWS)),
            device=device,
        )

    @classmethod
    def load_default(cls, *, device: str | torch.device = "cpu") -> SyntheticClipClassifier:
        with resources.as_file(resources.files("safeguards") / "models" / DEFAULT_MODEL) as p:
            return cls.load(p, device=device)

    @torch.no_grad()
    def logits(self, triplets: np.ndarray) -> np.ndarray:
        """Raw network logits. triplets: (B, 3, CROP, CROP) grey crops. Returns (B,) float64."""
        x = torch.from_numpy(triplet_input(triplets)).to(self.device)
        return self.net(x).double().cpu().numpy()

    def probability(self, mean_logit: float) -> float:
        """Calibrated probability of "synthetic" for a clip's mean window logit."""
        return 1.0 / (1.0 + math.exp(-(self.platt_a * mean_logit + self.platt_b)))

    def _score_windows(self, windows: list[Sequence[np.ndarray]]) -> ClassifierScore:
        if not windows:
            # A still image (or under 3 frames) carries no motion evidence: no opinion either way.
            return ClassifierScore(0.5, self.threshold, 0, self.name)
        triplets = np.stack([self.cropper.crops(w) for w in windows])  # (N, 3, CROP, CROP)
        z = float(self.logits(triplets).mean())
        return ClassifierScore(self.probability(z), self.threshold, len(windows), self.name)

    def score_frames(self, frames: Sequence[np.ndarray]) -> ClassifierScore:
        """Score consecutive RGB frames (any size), sampling up to ``self.windows`` windows evenly."""
        return self._score_windows([frames[s : s + MIN_FRAMES] for s in _window_starts(len(frames), self.windows)])

    def score_video(self, path: Path) -> ClassifierScore:
        """Score a whole video file, windows spread over its full length. Only the sampled frames are converted
        to RGB (decoding itself is sequential: H.264 keyframes are too far apart for seeking to pay off)."""
        n = probe_video(path).frames
        starts = _window_starts(n, self.windows) if n else [0]
        wanted = {s + k: i for i, s in enumerate(starts) for k in range(MIN_FRAMES)}
        windows: list[list[np.ndarray]] = [[] for _ in starts]
        last = max(wanted) if wanted else -1
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    windows[wanted[index]].append(frame.to_ndarray(format="rgb24"))
                if index >= last:
                    break
        return self._score_windows([w for w in windows if len(w) == MIN_FRAMES])
