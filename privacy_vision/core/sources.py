"""Frame sources: video file (optionally looping), image folder, V4L2 device, RTSP/GStreamer URL."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
RECONNECT_MAX_DELAY_S = 30.0


class SourceError(RuntimeError):
    """The source cannot be opened or read."""


@dataclass
class Frame:
    """One frame read from a source, with its index in the source."""

    image: np.ndarray
    index: int


def classify_source(source: str) -> str:
    if re.fullmatch(r"\d+", source) or source.startswith("/dev/video"):
        return "device"
    if re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE) or "!" in source:
        return "stream"
    path = Path(source)
    if path.is_dir():
        return "folder"
    if path.is_file():
        return "file"
    raise SourceError(
        f"source {source!r} is neither an existing file or folder, a /dev/video device, a camera index, nor a URL"
    )


class FrameSource:
    """Iterates frames; corrupt images in a folder are skipped and counted, not fatal."""

    def __init__(self, source: str, loop: bool = False, resize_width: int = 0) -> None:
        self.source = source
        self.kind = classify_source(source)
        self.loop = loop and self.kind in ("file", "folder")
        self.resize_width = resize_width
        self.skipped_corrupt = 0
        self.source_fps = 0.0
        self._files: list[Path] = []
        self._capture: cv2.VideoCapture | None = None
        if self.kind == "folder":
            self._files = sorted(p for p in Path(source).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise SourceError(f"folder {source!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        else:
            self._capture = self._open_capture()

    @property
    def is_live(self) -> bool:
        return self.kind in ("device", "stream")

    def _open_capture(self) -> cv2.VideoCapture:
        if self.kind == "device":
            target = int(self.source) if self.source.isdigit() else self.source
            capture = cv2.VideoCapture(target, cv2.CAP_V4L2)
        elif self.kind == "stream" and "!" in self.source:
            capture = cv2.VideoCapture(self.source, cv2.CAP_GSTREAMER)
        else:
            capture = cv2.VideoCapture(self.source)
        if not capture.isOpened():
            raise SourceError(f"cannot open {self.kind} source {self.source!r}: OpenCV could not open or decode it")
        self.source_fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        if self.kind == "file":
            ok, _ = capture.read()
            if not ok:
                raise SourceError(
                    f"cannot read any frame from video {self.source!r}: the file is empty, truncated or not a video"
                )
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        return capture

    def reopen(self) -> None:
        """Reconnect a live source after it dropped."""
        if self._capture is not None:
            self._capture.release()
        self._capture = self._open_capture()

    def frames(self) -> Iterator[Frame]:
        index = 0
        while True:
            produced = False
            for image in self._folder_images() if self.kind == "folder" else self._capture_images():
                produced = True
                yield Frame(self._resize(image), index)
                index += 1
            if not (self.loop and produced):
                return
            if self._capture is not None:
                self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def _folder_images(self) -> Iterator[np.ndarray]:
        for path in self._files:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.skipped_corrupt += 1
                continue
            yield image

    def _capture_images(self) -> Iterator[np.ndarray]:
        assert self._capture is not None
        while True:
            ok, image = self._capture.read()
            if not ok or image is None:
                return
            yield image

    def _resize(self, image: np.ndarray) -> np.ndarray:
        if self.resize_width <= 0 or image.shape[1] == self.resize_width:
            return image
        height = round(image.shape[0] * self.resize_width / image.shape[1])
        resized = cv2.resize(image, (self.resize_width, height), interpolation=cv2.INTER_AREA)
        image.fill(0)  # the decoded full-size frame held pixels too
        return resized

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


@dataclass
class CaptureSettings:
    """What the camera node and the detection node's in-process capture both take (same parameters)."""

    source: str = ""
    loop: bool = False
    fps: float = 0.0  # rate limit; 0 = the file's own rate, as fast as possible for live sources
    max_frames: int = 0  # 0 = no limit
    resize_width: int = 0


class CaptureLoop:
    """Paces a source, stamps each frame (media time for recordings, wall time for live sources) and
    reconnects live sources with exponential backoff; `handle(image, stamp)` owns the frame and must
    zero it. One implementation for the camera node and for in-process capture in the detection node."""

    def __init__(
        self, settings: CaptureSettings, log: Callable[[str, str], None], on_dropped: Callable[[int], None]
    ) -> None:
        if not settings.source:
            raise SourceError("parameter 'source' is empty: set it to a video file, image folder, device or URL")
        self.settings = settings  # shared with the node: live 'loop', 'fps' and 'max_frames' changes apply at once
        self.source = FrameSource(settings.source, loop=settings.loop, resize_width=settings.resize_width)
        self.stop = threading.Event()
        self.delivered = 0
        self.skipped_late = 0  # recorded frames dropped because the handler was a period or more behind their pace
        self._log = log  # (level 'info' | 'warning' | 'error', message)
        self._on_dropped = on_dropped  # reconnect attempt number, for the node's diagnostics

    def set_loop(self, loop: bool) -> None:
        self.settings.loop = loop
        self.source.loop = loop and not self.source.is_live

    def frame_period(self) -> float:
        rate = self.settings.fps or (0.0 if self.source.is_live else self.source.source_fps)
        return 1.0 / rate if rate > 0 else 0.0

    def limit_reached(self) -> bool:
        return 0 < self.settings.max_frames <= self.delivered + self.skipped_late

    def run(self, handle: Callable[[np.ndarray, float], None]) -> None:
        """Until the end of a recording, the frame limit or stop; live sources are reopened when they drop."""
        attempt = 0
        while not self.stop.is_set():
            try:
                self._stream(handle)
            except SourceError as error:
                self._log("error", str(error))
            if not self.source.is_live or self.stop.is_set() or self.limit_reached():
                break
            attempt += 1
            delay = min(RECONNECT_MAX_DELAY_S, 0.5 * 2**attempt)
            self._log("warning", f"live source dropped; reconnecting in {delay:.1f} s (attempt {attempt})")
            self._on_dropped(attempt)
            if self.stop.wait(delay):
                break
            try:
                self.source.reopen()
                attempt = 0
            except SourceError as error:
                self._log("error", str(error))
        self._log(
            "info",
            f"end of stream after {self.delivered} frames ({self.skipped_late} dropped behind the source's pace, "
            f"{self.source.skipped_corrupt} unreadable images skipped)",
        )

    def _stream(self, handle: Callable[[np.ndarray, float], None]) -> None:
        start_wall = time.time()
        next_due = time.monotonic()
        skipped_before = self.source.skipped_corrupt
        for frame in self.source.frames():
            if self.stop.is_set() or self.limit_reached():
                frame.image.fill(0)
                return
            if self.source.skipped_corrupt != skipped_before:
                skipped_before = self.source.skipped_corrupt
                self._log("warning", f"skipped an unreadable image ({skipped_before} so far)")
            period = self.frame_period()
            if period:
                delay = next_due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif -delay >= period and not self.source.is_live:
                    # The handler (in-process inference) fell a whole period behind a recording's pace: this
                    # frame's moment has passed, as a camera frame's would, so it is dropped, not queued behind.
                    frame.image.fill(0)
                    self.skipped_late += 1
                    next_due += period
                    continue
                elif self.source.is_live:
                    next_due = time.monotonic()
                next_due += period
            if self.source.is_live or not self.source.source_fps:
                stamp = time.time()
            else:
                # Recorded sources carry media time so windows match the recording, whatever the playback speed.
                stamp = start_wall + frame.index / self.source.source_fps
            handle(frame.image, stamp)
            self.delivered += 1

    def close(self) -> None:
        self.stop.set()
        self.source.close()
