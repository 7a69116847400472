"""Person detectors behind one interface: Ultralytics YOLO, TFLite SSD-MobileNet, OpenCV HOG."""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

BACKENDS = ("auto", "ultralytics", "tflite", "hog")
SHARED_TFLITE_MODEL = Path(__file__).resolve().parents[2].parent / "shared/models/ssd_mobilenet_v1_coco_quant/detect.tflite"


class DetectorError(RuntimeError):
    """A backend cannot be created (missing package or model file)."""


@dataclass
class DetectorSettings:
    backend: str = "auto"
    model: str = "yolov8n.pt"  # ultralytics weights path or a model YAML (random weights, for tests)
    tflite_model: str = ""  # empty: PRIVACY_VISION_TFLITE_MODEL, then ../shared/models
    conf: float = 0.1  # lowest score published; the tracker splits high/low scores itself (ByteTrack)
    iou: float = 0.5
    imgsz: int = 640
    device: str = "cpu"
    max_det: int = 100
    num_threads: int = 2


class PersonDetector(Protocol):
    name: str

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes x_min, y_min, x_max, y_max in pixels and (N,) scores, people only."""


class HogDetector:
    """OpenCV's built-in pedestrian HOG+SVM: no download, weak on small or occluded people."""

    name = "hog"

    def __init__(self, settings: DetectorSettings) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._conf = settings.conf
        self._iou = settings.iou

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rects, weights = self._hog.detectMultiScale(image_bgr, winStride=(8, 8), padding=(8, 8), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4)), np.zeros(0)
        rects = np.asarray(rects, dtype=np.float64)
        # SVM margins are unbounded; squash into (0, 1) so thresholds mean the same as for CNNs.
        scores = 1.0 / (1.0 + np.exp(-np.asarray(weights, dtype=np.float64).reshape(-1)))
        # The 64x128 detection window pads the person by about 15% left/right and 5% top/bottom; trim it so
        # that boxes (and foot points) fit the person, as the window's training crops did.
        x, y, w, h = rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3]
        boxes = np.column_stack([x + 0.15 * w, y + 0.05 * h, x + 0.85 * w, y + 0.95 * h])
        keep = scores >= self._conf
        return non_max_suppression(boxes[keep], scores[keep], self._iou)


class TfliteDetector:
    """COCO SSD-MobileNet v1 (uint8) through ai-edge-litert; 'person' is output class 0."""

    name = "tflite"

    def __init__(self, settings: DetectorSettings) -> None:
        path = resolve_tflite_model(settings.tflite_model)
        if importlib.util.find_spec("ai_edge_litert") is None:
            raise DetectorError("the tflite backend needs the 'ai-edge-litert' package (pip install ai-edge-litert)")
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(path), num_threads=settings.num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]
        self._outputs = self._interpreter.get_output_details()
        self._height, self._width = self._input["shape"][1:3]
        self._min_score = settings.conf
        self._max_det = settings.max_det
        self._iou = settings.iou

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rgb = cv2.cvtColor(cv2.resize(image_bgr, (self._width, self._height)), cv2.COLOR_BGR2RGB)
        self._interpreter.set_tensor(self._input["index"], rgb[None].astype(self._input["dtype"]))
        self._interpreter.invoke()
        boxes, classes, scores = (self._interpreter.get_tensor(self._outputs[i]["index"])[0] for i in range(3))
        rgb.fill(0)
        keep = (classes.astype(int) == 0) & (scores >= self._min_score)
        boxes, scores = boxes[keep][: self._max_det], scores[keep][: self._max_det]
        h, w = image_bgr.shape[:2]
        pixel_boxes = np.column_stack([boxes[:, 1] * w, boxes[:, 0] * h, boxes[:, 3] * w, boxes[:, 2] * h])
        return non_max_suppression(pixel_boxes.astype(np.float64), scores.astype(np.float64), self._iou)


class UltralyticsDetector:
    """YOLO restricted to the person class; the production backend where weights exist."""

    name = "ultralytics"

    def __init__(self, settings: DetectorSettings) -> None:
        if importlib.util.find_spec("ultralytics") is None:
            raise DetectorError("the ultralytics backend needs the 'ultralytics' package")
        model = settings.model
        if not model.endswith((".yaml", ".yml")) and not Path(model).is_file():
            raise DetectorError(
                f"YOLO weights {model!r} not found; this machine cannot download them: copy the .pt file here and set 'model' to its path"
            )
        from ultralytics import YOLO

        self._model = YOLO(model)
        self._settings = settings

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = self._settings
        result = self._model.predict(image_bgr, classes=[0], conf=s.conf, iou=s.iou, imgsz=s.imgsz,
                                     device=s.device, max_det=s.max_det, verbose=False)[0]
        boxes = result.boxes
        return boxes.xyxy.cpu().numpy().astype(np.float64), boxes.conf.cpu().numpy().astype(np.float64)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV NMS; SSD and HOG both emit nested duplicates of one person that would start extra tracks."""
    if len(boxes) == 0:
        return boxes, scores
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, iou), dtype=int).reshape(-1)
    return boxes[keep], scores[keep]


def resolve_tflite_model(configured: str) -> Path:
    candidates = [configured, os.environ.get("PRIVACY_VISION_TFLITE_MODEL", ""), str(SHARED_TFLITE_MODEL)]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise DetectorError(
        "no TFLite model found: set the detection parameter 'tflite_model' or PRIVACY_VISION_TFLITE_MODEL "
        f"to detect.tflite (looked in {[c for c in candidates if c]})"
    )


def create_detector(settings: DetectorSettings) -> tuple[PersonDetector, list[str]]:
    """The requested backend, or for 'auto' the best that works here; also why others were skipped."""
    factories = {"ultralytics": UltralyticsDetector, "tflite": TfliteDetector, "hog": HogDetector}
    if settings.backend not in BACKENDS:
        raise DetectorError(f"backend must be one of {BACKENDS}, got {settings.backend!r}")
    if settings.backend != "auto":
        return factories[settings.backend](settings), []
    skipped: list[str] = []
    for name in ("ultralytics", "tflite"):
        try:
            return factories[name](settings), skipped
        except DetectorError as error:
            skipped.append(f"{name}: {error}")
    return HogDetector(settings), skipped
