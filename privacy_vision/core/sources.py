"""Frame sources: video file (optionally looping), image folder, V4L2 device, RTSP/GStreamer URL."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


class SourceError(RuntimeError):
    """The source cannot be opened or read."""


@dataclass
class Frame:
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
    raise SourceError(f"source {source!r} is neither an existing file or folder, a /dev/video device, a camera index, nor a URL")


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
                raise SourceError(f"cannot read any frame from video {self.source!r}: the file is empty, truncated or not a video")
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
            for image in (self._folder_images() if self.kind == "folder" else self._capture_images()):
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
        return cv2.resize(image, (self.resize_width, height), interpolation=cv2.INTER_AREA)

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
