"""Frame sources, Image conversion and the three detector backends on real frames."""

from __future__ import annotations

import time

import numpy as np
import pytest

from privacy_vision.core.detectors import DetectorError, DetectorSettings, create_detector
from privacy_vision.core.imaging import ImageFormatError, buffer_as_bgr, frame_to_fields
from privacy_vision.core.sources import CaptureLoop, CaptureSettings, FrameSource, SourceError, classify_source


def test_video_source_reads_and_resizes(vtest_video):
    source = FrameSource(str(vtest_video), resize_width=384)
    frames = [frame for frame, _ in zip(source.frames(), range(5))]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert frames[0].image.shape == (288, 384, 3)
    assert source.source_fps == pytest.approx(10.0)


def test_resizing_zeroes_the_decoded_frame(vtest_video, vtest_frames):
    source = FrameSource(str(vtest_video), resize_width=384)
    decoded = vtest_frames[0].copy()
    resized = source._resize(decoded)
    assert resized.shape == (288, 384, 3) and resized.any() and not decoded.any()
    source.close()


def test_looping_restarts_a_short_folder(tmp_path, vtest_frames):
    import cv2

    for index in range(3):
        cv2.imwrite(str(tmp_path / f"{index:03d}.png"), vtest_frames[index])
    frames = [frame for frame, _ in zip(FrameSource(str(tmp_path), loop=True).frames(), range(7))]
    assert [f.index for f in frames] == list(range(7))
    assert np.array_equal(frames[3].image, frames[0].image)


def test_a_slow_handler_drops_the_recorded_frames_whose_moment_passed(vtest_video):
    """In-process capture at a recording's pace: a frame that came due while inference ran is dropped and zeroed
    (as a camera's would be), so latency does not pile up; the frames handled keep their media-time stamps."""
    handled: list[tuple[int, float]] = []
    dropped_images = []

    def slow_handler(image: np.ndarray, stamp: float) -> None:
        handled.append((len(handled), stamp))
        time.sleep(0.55 if len(handled) == 3 else 0.0)  # the third frame takes five and a half periods

    loop = CaptureLoop(
        CaptureSettings(source=str(vtest_video), fps=10.0, max_frames=20), lambda *_: None, lambda _: None
    )
    original_frames = loop.source.frames
    loop.source.frames = lambda: (dropped_images.append(f.image) or f for f in original_frames())
    started = time.monotonic()
    loop.run(slow_handler)
    elapsed = time.monotonic() - started
    assert loop.skipped_late >= 4 and loop.delivered + loop.skipped_late == 20  # max_frames counts the source's frames
    assert elapsed < 2.0 + 0.3  # the pace of 20 frames at 10 fps; queueing behind the stall would take 2.55 s or more
    gaps = np.diff([stamp for _, stamp in handled])
    assert (
        gaps[1] == pytest.approx(0.1, abs=1e-3) and gaps[2] >= 0.5 - 1e-3
    )  # media-time stamps; the frames in the stall are gone
    assert np.allclose(gaps / 0.1, np.round(gaps / 0.1), atol=1e-2)
    assert not any(image.any() for image in dropped_images[3 : 3 + loop.skipped_late])
    loop.close()


def test_source_errors_are_explained(tmp_path):
    with pytest.raises(SourceError, match="neither an existing file"):
        FrameSource(str(tmp_path / "missing.avi"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no images"):
        FrameSource(str(tmp_path / "empty"))
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match=r"truncated\.avi"):
        FrameSource(str(truncated))
    assert classify_source("0") == "device" and classify_source("rtsp://cam/stream") == "stream"
    assert classify_source("videotestsrc ! appsink") == "stream"


def test_image_fields_round_trip_and_reject_malformed(vtest_frames):
    fields = frame_to_fields(vtest_frames[0])
    image, raw = buffer_as_bgr(
        fields["height"], fields["width"], fields["encoding"], fields["step"], bytearray(fields["data"])
    )
    assert np.array_equal(image, vtest_frames[0])
    raw.fill(0)
    assert not image.any()  # the detector's view is the message buffer itself: zeroing reaches it
    rgb, _ = buffer_as_bgr(1, 2, "rgb8", 6, bytes([1, 2, 3, 4, 5, 6]))
    assert rgb.tolist() == [[[3, 2, 1], [6, 5, 4]]]
    with pytest.raises(ImageFormatError, match="expected step\\*height"):
        buffer_as_bgr(10, 10, "bgr8", 30, bytes(10))
    with pytest.raises(ImageFormatError, match="unsupported encoding"):
        buffer_as_bgr(10, 10, "yuv422", 20, bytes(200))


@pytest.mark.parametrize("backend, minimum_people", [("yolox", 4), ("tflite", 3), ("hog", 1)])
def test_offline_backends_find_people_on_pets(backend, minimum_people, vtest_frames, tflite_model):
    detector, _ = create_detector(DetectorSettings(backend=backend, tflite_model=str(tflite_model)))
    counts = []
    for frame in vtest_frames[:5]:
        boxes, scores = detector.detect(frame)
        assert boxes.shape[1] == 4 and len(boxes) == len(scores)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(scores <= 1.0)
        counts.append(int((scores >= 0.5).sum()))
    assert np.median(counts) >= minimum_people, counts


def test_ultralytics_code_path_with_a_yaml_model(vtest_frames):
    detector, _ = create_detector(DetectorSettings(backend="ultralytics", model="yolov8n.yaml", imgsz=320))
    boxes, scores = detector.detect(vtest_frames[0])  # random weights: the count is meaningless, the path is not
    assert boxes.shape == (len(scores), 4)


def test_auto_skips_missing_weights_and_says_why(tflite_model):
    detector, skipped = create_detector(
        DetectorSettings(backend="auto", model="absent-weights.pt", tflite_model=str(tflite_model))
    )
    assert detector.name == "yolox"
    assert any("absent-weights.pt" in reason and "cannot download" in reason for reason in skipped)
    with pytest.raises(DetectorError, match="not found"):
        create_detector(DetectorSettings(backend="ultralytics", model="absent-weights.pt"))
    with pytest.raises(DetectorError, match="backend must be one of"):
        create_detector(DetectorSettings(backend="magic"))
