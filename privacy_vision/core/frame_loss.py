"""Frames lost between two nodes, counted by the receiving node from the stamps of the per-frame messages.

ROS 2 headers carry no sequence number, but each per-frame message (image, detections, tracks) keeps the frame's
stamp, and a recorded source stamps frame i at start + i / fps: a gap of k frame periods between two stamps that
arrive one after the other is k - 1 frames that the link lost (a best-effort image topic whose reader is busy, a
full queue, a respawn). The period is the median of the recent gaps, so that losses do not bend it. Live sources
are stamped with the wall clock: there a gap of over half a period of jitter reads as a lost frame.

What stamps cannot tell: a link that loses every other frame from the first one looks like a source at half the rate;
a stamp that goes back (a looped recording, a respawned source) or a gap of more than BREAK_PERIODS periods (a
paused source, an upstream node restarting) is a new stream, counted as a break, not as lost frames.
"""

from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field

PERIOD_SAMPLES = 15  # gaps whose median is the frame period
BREAK_PERIODS = 50  # a longer gap is a new stream (5 s at 10 frames/s), not frames lost
WINDOW_FRAMES = 200  # the recent window of the lost fraction, in frames received (20 s at 10 frames/s)


@dataclass
class FrameLossCounter:
    """Counts lost frames on one link; `lost_fraction()` over the last `window_frames` frames received."""

    window_frames: int = WINDOW_FRAMES
    received: int = 0
    lost: int = 0
    breaks: int = 0
    _last_stamp: float | None = None
    _gaps: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=PERIOD_SAMPLES))
    _window: collections.deque[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.window_frames < 1:
            raise ValueError(f"window_frames must be at least 1, got {self.window_frames}")
        self._window = collections.deque(maxlen=self.window_frames)

    def observe(self, stamp_s: float) -> int:
        """A frame stamped `stamp_s` arrived: returns how many frames were lost just before it."""
        previous, self._last_stamp = self._last_stamp, stamp_s
        self.received += 1
        missing = 0
        if previous is not None and stamp_s > previous:
            gap = stamp_s - previous
            period = statistics.median([*self._gaps, gap])
            if gap > BREAK_PERIODS * period:
                self.breaks += 1
            else:
                self._gaps.append(gap)
                missing = max(0, int(gap / period + 0.5) - 1)
        elif previous is not None and stamp_s < previous:
            self.breaks += 1
            self._gaps.clear()  # a new stream may run at another rate
        self.lost += missing
        self._window.append(missing)
        return missing

    def lost_fraction(self) -> float:
        """Lost / (lost + received) over the recent window; 0 before any frame."""
        window = list(self._window)  # one C-level copy: the report timer may run while a frame is counted
        return sum(window) / (sum(window) + len(window)) if window else 0.0
