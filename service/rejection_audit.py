"""Audit repeated rejections (failed authentication, rate limiting) without one signed entry per attempt.

Per kind and source address, the first rejection of a window is audited in full at once; later ones in the same
window are counted and written as one `<kind>.summary` entry (count, codes, claimed actors, paths) when the
window closes. A flood of bad requests thus costs at most two audit entries per source per window instead of
one each, and a single failure is still on the record immediately. Counts are per process.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit import AuditLog

_MAX_LISTED = 10  # distinct actors/paths kept per window summary


@dataclass
class _Window:
    started: float
    started_at: datetime
    count: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    actors: Counter[str] = field(default_factory=Counter)
    paths: Counter[str] = field(default_factory=Counter)


class RejectionAudit:
    def __init__(self, audit: AuditLog, *, window_seconds: float = 60.0) -> None:
        self.audit = audit
        self.window_seconds = window_seconds
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(
        self,
        *,
        kind: str,
        source: str,
        actor: str,
        outcome: str,
        details: dict[str, Any],
        request_id: str | None = None,
    ) -> None:
        """One rejection of `kind` (e.g. `auth.failed`) from `source` (the client address)."""
        self.flush()
        now = time.monotonic()
        with self._lock:
            window = self._windows.get((kind, source))
            if window is not None:
                window.count += 1
                window.codes[str(details.get("code"))] += 1
                window.actors[actor] += 1
                window.paths[str(details.get("path") or details.get("endpoint"))] += 1
                return
            self._windows[(kind, source)] = _Window(now, datetime.now(UTC))
        self.audit.append(
            action=kind,
            actor=actor,
            outcome=outcome,
            request_id=request_id,
            details={**details, "source": source, "summary_window_s": self.window_seconds},
        )

    def flush(self, *, force: bool = False) -> int:
        """Write the summaries of closed windows (all windows with `force`); returns how many were written."""
        now = time.monotonic()
        with self._lock:
            closed = [k for k, w in self._windows.items() if force or now - w.started >= self.window_seconds]
            windows = [(k, self._windows.pop(k)) for k in closed]
        written = 0
        for (kind, source), w in windows:
            if w.count == 0:
                continue
            self.audit.append(
                action=f"{kind}.summary",
                actor=f"source:{source}",
                outcome="denied",
                details={
                    "source": source,
                    "count": w.count,
                    "since": w.started_at.isoformat(),
                    "until": datetime.now(UTC).isoformat(),
                    "codes": dict(w.codes),
                    "actors": dict(w.actors.most_common(_MAX_LISTED)),
                    "paths": dict(w.paths.most_common(_MAX_LISTED)),
                },
            )
            written += 1
        return written

    def start(self) -> None:
        """Flush closed windows in the background, so a summary is written even when the flood stops."""

        def loop() -> None:
            while not self._stop.wait(max(1.0, self.window_seconds / 4)):
                self.flush()

        self._thread = threading.Thread(target=loop, name="provatar-rejection-audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.flush(force=True)
