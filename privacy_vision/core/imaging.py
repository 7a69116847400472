"""numpy ↔ sensor_msgs/Image field conversion (ROS 2's cv_bridge is not installable from PyPI)."""

from __future__ import annotations

import array

import numpy as np

_CHANNELS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4}


class ImageFormatError(ValueError):
    """An Image message whose fields do not describe a decodable 8-bit frame."""


def frame_to_fields(frame: np.ndarray) -> dict:
    """Image fields whose data is a writable array.array (copied straight from the frame, no bytes object
    in between), so that the publisher can zero it after publishing (zero_message_data)."""
    if frame.dtype != np.uint8 or frame.ndim not in (2, 3):
        raise ImageFormatError(f"expected an 8-bit mono or 3-channel frame, got {frame.dtype} {frame.shape}")
    height, width = frame.shape[:2]
    channels = 1 if frame.ndim == 2 else frame.shape[2]
    encoding = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(channels)
    if encoding is None:
        raise ImageFormatError(f"unsupported channel count {channels}")
    data = array.array("B")
    if frame.flags.c_contiguous:
        data.frombytes(memoryview(frame).cast("B"))
    else:
        contiguous = np.ascontiguousarray(frame)
        data.frombytes(memoryview(contiguous).cast("B"))
        contiguous.fill(0)
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels,
        "data": data,
    }


def zero_message_data(message) -> None:
    """Zero an Image message's pixel array in place (it must be the array.array frame_to_fields made)."""
    np.frombuffer(message.data, dtype=np.uint8).fill(0)


def buffer_as_bgr(height: int, width: int, encoding: str, step: int, data) -> tuple[np.ndarray, np.ndarray]:
    """A BGR image for the detector plus the raw writable buffer behind the message; zero both after use
    (for mono8 and rgba8 the image is a converted copy, for the other encodings a view of the buffer)."""
    channels = _CHANNELS.get(encoding)
    if channels is None:
        raise ImageFormatError(f"unsupported encoding {encoding!r}; publish one of {sorted(_CHANNELS)}")
    if height <= 0 or width <= 0 or step < width * channels:
        raise ImageFormatError(f"inconsistent image geometry {width}x{height} step {step} for {encoding}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if raw.size != step * height:
        raise ImageFormatError(f"image data has {raw.size} bytes, expected step*height = {step * height}")
    rows = raw.reshape(height, step)[:, : width * channels]
    image = rows.reshape(height, width, channels) if channels > 1 else rows.reshape(height, width)
    if encoding == "mono8":
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif encoding == "rgb8":
        image = image[:, :, ::-1]
    elif encoding in ("bgra8", "rgba8"):
        image = image[:, :, [2, 1, 0]] if encoding == "rgba8" else image[:, :, :3]
    return image, raw
