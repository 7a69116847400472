"""Person detectors behind one interface: Ultralytics YOLO, YOLOX (ONNX, onnxruntime; YOLOX-nano ships
with the package), TFLite SSD-MobileNet, OpenCV HOG."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

BACKENDS = ("auto", "ultralytics", "yolox", "tflite", "hog")
AUTO_ORDER = ("ultralytics", "yolox", "tflite")  # then HOG, which needs nothing
PACKAGE = "privacy_vision"
BUNDLED_ONNX_MODEL = Path("models/yolox_nano/yolox_nano.onnx")  # relative to the repository or the package's share dir
REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
SHARED_TFLITE_MODEL = REPOSITORY_ROOT.parent / "shared/models/ssd_mobilenet_v1_coco_quant/detect.tflite"
YOLOX_STRIDES = (8, 16, 32)
YOLOX_PAD_VALUE = 114
YOLOX_INPUT_SIZES = range(32, 2048 + 1, 32)  # input sides a YOLOX graph can be re-shaped to (stride 32 divides them)


class DetectorError(RuntimeError):
    """A backend cannot be created (missing package or model file)."""


@dataclass
class DetectorSettings:
    """Which person detector runs and how (backend, model, thresholds, threads)."""

    backend: str = "auto"
    model: str = "yolov8n.pt"  # ultralytics weights path or a model YAML (random weights, for tests)
    onnx_model: str = ""  # YOLOX-format ONNX export; empty: the YOLOX-nano shipped with the package
    tflite_model: str = ""  # empty: PRIVACY_VISION_TFLITE_MODEL, then ../shared/models
    conf: float = 0.1  # lowest score published; the tracker splits high/low scores itself (ByteTrack)
    iou: float = 0.5
    imgsz: int = 640
    device: str = "cpu"
    max_det: int = 100
    num_threads: int = 2  # CPU threads of the onnxruntime and TFLite backends
    input_size: int = 0  # YOLOX input side in pixels, a multiple of 32; 0 = the export's own (416 for YOLOX-nano)


class PersonDetector(Protocol):
    """What every detector backend offers, so that the node does not care which one runs."""

    name: str

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) boxes x_min, y_min, x_max, y_max in pixels and (N,) scores, people only."""


class HogDetector:
    """OpenCV's built-in pedestrian HOG+SVM: no download, weak on small or occluded people. It reports
    windows with a non-negative SVM margin only, so its scores start at 0.5 and a 'conf' below that has no effect."""

    name = "hog"

    def __init__(self, settings: DetectorSettings) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self._settings = settings  # shared with the node: live 'conf', 'iou' and 'max_det' changes apply at once

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
        keep = scores >= self._settings.conf
        return limit_detections(
            *non_max_suppression(boxes[keep], scores[keep], self._settings.iou), self._settings.max_det
        )


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
        self._settings = settings  # shared with the node: live 'conf', 'iou' and 'max_det' changes apply at once

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        resized = cv2.resize(image_bgr, (self._width, self._height))
        rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
        resized.fill(0)
        try:
            self._interpreter.set_tensor(self._input["index"], rgb[None].astype(self._input["dtype"], copy=False))
            self._interpreter.invoke()
            boxes, classes, scores = (self._interpreter.get_tensor(self._outputs[i]["index"])[0] for i in range(3))
        finally:
            rgb.fill(0)
            self._interpreter.set_tensor(
                self._input["index"], rgb[None].astype(self._input["dtype"], copy=False)
            )  # the interpreter's copy
        keep = (classes.astype(int) == 0) & (scores >= self._settings.conf)
        boxes, scores = boxes[keep], scores[keep]
        h, w = image_bgr.shape[:2]
        pixel_boxes = np.column_stack([boxes[:, 1] * w, boxes[:, 0] * h, boxes[:, 3] * w, boxes[:, 2] * h])
        kept = non_max_suppression(pixel_boxes.astype(np.float64), scores.astype(np.float64), self._settings.iou)
        return limit_detections(*kept, self._settings.max_det)


class YoloxDetector:
    """A YOLOX-format ONNX export (any size) through onnxruntime; the shipped YOLOX-nano by default.
    Pre/post-processing as in models/yolox_nano/README.md: BGR letterbox padded with 114, no
    normalisation, grid/stride decoding, person score = objectness x class 0, OpenCV NMS."""

    name = "yolox"

    def __init__(self, settings: DetectorSettings) -> None:
        path = resolve_onnx_model(settings.onnx_model)
        if importlib.util.find_spec("onnxruntime") is None:
            raise DetectorError("the yolox backend needs the 'onnxruntime' package (pip install onnxruntime)")
        import onnxruntime
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = settings.num_threads
        options.inter_op_num_threads = 1
        model = reshaped_yolox(path, settings.input_size) if settings.input_size else str(path)
        try:
            self._session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except (
            ort_state.Fail,
            ort_state.InvalidProtobuf,
            ort_state.InvalidGraph,
            ort_state.InvalidArgument,
            ort_state.NoSuchFile,
            ort_state.NotImplemented,
        ) as error:
            raise DetectorError(f"cannot load the YOLOX ONNX model {path}: {error}") from error
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        shape = inputs[0].shape if len(inputs) == 1 else []
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]) or shape[1] != 3:
            raise DetectorError(
                f"{path} is not a YOLOX export: expected one input of shape (1, 3, H, W), got "
                f"{[(i.name, i.shape) for i in inputs]}"
            )
        self._input_name = inputs[0].name
        self._height, self._width = int(shape[2]), int(shape[3])
        self._grid, self._strides = yolox_grid(self._height, self._width)
        rows = outputs[0].shape[1] if len(outputs) == 1 and len(outputs[0].shape) == 3 else None
        if rows != len(self._grid) or not isinstance(outputs[0].shape[2], int) or outputs[0].shape[2] < 6:
            raise DetectorError(
                f"{path} is not a YOLOX export: expected one output of shape (1, {len(self._grid)}, 5 + classes) "
                f"for a {self._width}x{self._height} input, got {[(o.name, o.shape) for o in outputs]}"
            )
        # Reused for every frame and zeroed after each: the letterboxed copy and the network input hold pixels.
        self._letterbox = np.zeros((self._height, self._width, 3), dtype=np.uint8)
        self._blob = np.zeros((1, 3, self._height, self._width), dtype=np.float32)
        self._settings = settings  # shared with the node: live 'conf', 'iou' and 'max_det' changes apply at once

    def detect(self, image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image_bgr.shape[:2]
        ratio = min(self._height / h, self._width / w)
        new_w, new_h = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
        resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        try:
            self._letterbox.fill(YOLOX_PAD_VALUE)
            self._letterbox[:new_h, :new_w] = resized
            self._blob[0] = self._letterbox.transpose(2, 0, 1)
            output = self._session.run(None, {self._input_name: self._blob})[0][0]
        finally:
            resized.fill(0)
            self._letterbox.fill(0)
            self._blob.fill(0)
        return self._decode(output, ratio, w, h)

    def _decode(self, output: np.ndarray, ratio: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        s = self._settings
        scores = output[:, 4] * output[:, 5]
        keep = np.flatnonzero(scores >= s.conf)
        rows, strides = output[keep], self._strides[keep, None]
        centres = (rows[:, 0:2] + self._grid[keep]) * strides
        sizes = np.exp(rows[:, 2:4]) * strides
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1) / ratio
        np.clip(boxes, 0, [width, height, width, height], out=boxes)
        kept = non_max_suppression(boxes.astype(np.float64), scores[keep].astype(np.float64), s.iou)
        return limit_detections(*kept, s.max_det)


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
        result = self._model.predict(
            image_bgr,
            classes=[0],
            conf=s.conf,
            iou=s.iou,
            imgsz=s.imgsz,
            device=s.device,
            max_det=s.max_det,
            verbose=False,
        )[0]
        boxes = result.boxes
        return boxes.xyxy.cpu().numpy().astype(np.float64), boxes.conf.cpu().numpy().astype(np.float64)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV NMS; SSD and HOG both emit nested duplicates of one person that would start extra tracks."""
    if len(boxes) == 0:
        return boxes, scores
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    keep = np.asarray(cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, iou), dtype=int).reshape(-1)
    return boxes[keep], scores[keep]


def limit_detections(boxes: np.ndarray, scores: np.ndarray, max_det: int) -> tuple[np.ndarray, np.ndarray]:
    """The max_det best; NMS returns its survivors by falling score."""
    return boxes[:max_det], scores[:max_det]


def yolox_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell (x, y) and stride of every output row: strides 8, 16, 32, row-major within each."""
    cells, strides = [], []
    for stride in YOLOX_STRIDES:
        ys, xs = np.mgrid[0 : height // stride, 0 : width // stride]
        cells.append(np.column_stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(xs.size, stride))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def validate_input_size(size: int) -> None:
    """0 (the export's own input) or a side the strides 8, 16 and 32 all divide, within YOLOX_INPUT_SIZES."""
    if size != 0 and size not in YOLOX_INPUT_SIZES:
        raise DetectorError(
            f"input_size must be 0 (the model's own) or a multiple of 32 from {YOLOX_INPUT_SIZES.start} to "
            f"{YOLOX_INPUT_SIZES.stop - 1}, got {size}"
        )


def reshaped_yolox(path: Path, size: int) -> bytes:
    """The YOLOX export at `path` with a size x size input, serialised for onnxruntime.

    YOLOX is fully convolutional and its export takes no shape from the input (the three Reshapes use -1, the
    two Resizes use scales), so only the declared input and output shapes change; ONNX's strict shape inference
    checks that the whole graph agrees with the new input, and refuses a graph that hard-codes its size.
    """
    import onnx
    from google.protobuf.message import DecodeError

    validate_input_size(size)
    try:
        model = onnx.load(str(path))
    except (DecodeError, OSError) as error:
        raise DetectorError(f"cannot load the YOLOX ONNX model {path}: {error}") from error
    graph = model.graph
    if len(graph.input) != 1 or len(graph.output) != 1 or len(graph.input[0].type.tensor_type.shape.dim) != 4:
        raise DetectorError(f"{path} is not a YOLOX export: expected one (1, 3, H, W) input and one output")
    input_dims = graph.input[0].type.tensor_type.shape.dim
    input_dims[2].dim_value = input_dims[3].dim_value = size
    grid, _ = yolox_grid(size, size)
    output_dims = graph.output[0].type.tensor_type.shape.dim
    output_dims[1].dim_value = len(grid)
    del graph.value_info[:]  # shapes inferred for the old size
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as error:
        raise DetectorError(f"{path} cannot be re-shaped to a {size}x{size} input: {error}") from error
    return model.SerializeToString()


def bundled_onnx_model(repository_root: Path = REPOSITORY_ROOT) -> Path | None:
    """The shipped YOLOX-nano: the repository's models/ when run from source, else the package's share
    directory found through the ament index (colcon/setup.py install it there)."""
    from_source = repository_root / BUNDLED_ONNX_MODEL
    if from_source.is_file():
        return from_source
    if importlib.util.find_spec("ament_index_python") is None:
        return None
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        installed = Path(get_package_share_directory(PACKAGE)) / BUNDLED_ONNX_MODEL
    except PackageNotFoundError:
        return None
    return installed if installed.is_file() else None


def resolve_onnx_model(configured: str) -> Path:
    if configured:
        if not Path(configured).is_file():
            raise DetectorError(f"YOLOX ONNX model {configured!r} not found (parameter 'onnx_model')")
        return Path(configured)
    bundled = bundled_onnx_model()
    if bundled is None:
        raise DetectorError(
            f"the shipped YOLOX-nano model was not found (looked for {REPOSITORY_ROOT / BUNDLED_ONNX_MODEL} and "
            f"share/{PACKAGE}/{BUNDLED_ONNX_MODEL} through the ament index); set 'onnx_model' to a YOLOX .onnx file"
        )
    return bundled


def resolve_tflite_model(configured: str) -> Path:
    if configured and not Path(configured).is_file():  # a path given and missing is an error, never a silent swap
        raise DetectorError(f"TFLite model {configured!r} not found (parameter 'tflite_model')")
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
    factories = {
        "ultralytics": UltralyticsDetector,
        "yolox": YoloxDetector,
        "tflite": TfliteDetector,
        "hog": HogDetector,
    }
    if settings.backend not in BACKENDS:
        raise DetectorError(f"backend must be one of {BACKENDS}, got {settings.backend!r}")
    validate_input_size(settings.input_size)
    if settings.backend != "auto":
        return factories[settings.backend](settings), []
    skipped: list[str] = []
    for name in AUTO_ORDER:
        try:
            return factories[name](settings), skipped
        except DetectorError as error:
            skipped.append(f"{name}: {error}")
    return HogDetector(settings), skipped


def fallback_warning(settings: DetectorSettings, detector: PersonDetector, skipped: list[str]) -> str:
    """Non-empty when 'auto' fell back past YOLOX to a weaker detector: say so loudly, with the reasons."""
    if settings.backend != "auto" or detector.name not in ("tflite", "hog"):
        return ""
    reasons = "; ".join(reason for reason in skipped if not reason.startswith("ultralytics:"))
    return f"detector fell back to the weaker '{detector.name}' backend because YOLOX could not be used ({reasons})"
