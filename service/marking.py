"""Rendered head crops -> watermarked output frames, for either framing (the file pipeline and live streams alike).

Crop framing marks each crop whole. Full framing (the whole photo, up to 1920x1080) marks the still picture once and
then, per frame, only the window the head changes: `Watermarker.embed_window` gives exactly the pixels marking the
whole frame would, so every output frame carries the mark over its whole area (it survives crops and rescaling of
the full frame) at the cost of the window (measured at 1920x1080: about 3 ms instead of 30).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from generation.generator import PreparedFace
from safeguards.watermark import Watermarker

__all__ = ["FrameMarker"]


class FrameMarker:
    """Turns one prepared face's rendered crops into marked output frames. Safe to call from one thread at a time
    per instance (the marked still picture is shared read-only)."""

    def __init__(self, prepared: PreparedFace, marker: Watermarker) -> None:
        self.prepared = prepared
        self.marker = marker
        scene = prepared.scene
        self._marked_still: np.ndarray | None = None
        if scene is not None:
            self._marked_still = marker.embed(scene.still)
            self._marked_still.setflags(write=False)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the frames this yields."""
        return self.prepared.output_size

    def mark(self, crop: np.ndarray) -> np.ndarray:
        """The watermarked output frame for one rendered head crop: (H, W, 3) uint8, a new array."""
        scene = self.prepared.scene
        if scene is None or self._marked_still is None:
            return self.marker.embed(crop)
        y0, y1, x0, x1 = scene.window
        frame = self._marked_still.copy()
        window = scene.compose_window(crop)
        frame[y0:y1, x0:x1] = self.marker.embed_window(window, (y0, x0), frame.shape[:2])
        return frame

    def mark_all(self, crops: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Mark crops lazily, one at a time (flat memory on long videos)."""
        for crop in crops:
            yield self.mark(crop)
