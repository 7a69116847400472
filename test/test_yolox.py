"""YOLOX-nano shipped with the package: found from the repository and from an installed layout, decoded
correctly on a PETS frame with ground truth, clear errors for bad files, live thresholds in every backend."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from privacy_vision.core.detectors import (
    BUNDLED_ONNX_MODEL,
    REPOSITORY_ROOT,
    DetectorError,
    DetectorSettings,
    bundled_onnx_model,
    create_detector,
    fallback_warning,
)
from privacy_vision.core.tracking import iou_matrix

PETS_FRAMES = (1, 60, 120, 180, 240, 300)


def test_auto_picks_the_shipped_yolox_from_the_repository():
    assert bundled_onnx_model() == REPOSITORY_ROOT / BUNDLED_ONNX_MODEL
    settings = DetectorSettings(backend="auto", model="absent-weights.pt")
    detector, skipped = create_detector(settings)
    assert detector.name == "yolox"
    assert [reason.split(":")[0] for reason in skipped] == ["ultralytics"]
    assert fallback_warning(settings, detector, skipped) == ""


def test_yolox_is_found_through_the_ament_index_when_installed(tmp_path):
    """setup.py's own data_files into a prefix (what colcon does), the Python package elsewhere, no repository."""
    prefix, site = tmp_path / "install", tmp_path / "site"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "install_data", "--install-dir", str(prefix)],
        cwd=REPOSITORY_ROOT,
        check=True,
        capture_output=True,
    )
    shutil.copytree(
        REPOSITORY_ROOT / "privacy_vision", site / "privacy_vision", ignore=shutil.ignore_patterns("__pycache__")
    )
    probe = (
        "from privacy_vision.core import detectors as d\n"
        "s = d.DetectorSettings(backend='auto', model='absent.pt')\n"
        "detector, _ = d.create_detector(s)\n"
        "print(d.__file__, d.bundled_onnx_model(), detector.name)"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "AMENT_PREFIX_PATH": str(prefix)}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    module, model, name = result.stdout.split()
    assert module.startswith(str(site))
    assert Path(model) == prefix / "share/privacy_vision" / BUNDLED_ONNX_MODEL
    assert name == "yolox"
    assert (prefix / "share/privacy_vision/models/yolox_nano/LICENSE-Apache-2.0.txt").is_file()


def test_missing_or_corrupt_onnx_is_a_clear_error_and_auto_warns(tmp_path, tflite_model):
    missing = tmp_path / "missing.onnx"
    with pytest.raises(DetectorError, match=str(missing)):
        create_detector(DetectorSettings(backend="yolox", onnx_model=str(missing)))
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model" * 10)
    with pytest.raises(DetectorError, match=f"cannot load the YOLOX ONNX model {corrupt}"):
        create_detector(DetectorSettings(backend="yolox", onnx_model=str(corrupt)))
    settings = DetectorSettings(
        backend="auto", model="absent.pt", onnx_model=str(corrupt), tflite_model=str(tflite_model)
    )
    detector, skipped = create_detector(settings)
    assert detector.name == "tflite"
    warning = fallback_warning(settings, detector, skipped)
    assert "weaker 'tflite'" in warning and str(corrupt) in warning


def _pets_ground_truth(gt_path: Path) -> dict[int, np.ndarray]:
    rows = np.loadtxt(gt_path, delimiter=",")
    rows = rows[rows[:, 6] == 1]
    return {
        int(f): np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]])
        for f in PETS_FRAMES
        for r in [rows[rows[:, 0] == f]]
    }


@pytest.mark.parametrize("input_size", [0, 640])
def test_yolox_finds_the_annotated_people_on_pets(input_size, pets_frames_dir, pets_gt):
    """The shipped 416 x 416 graph and the same weights re-shaped to a 640 x 640 input at load time."""
    import cv2

    detector, _ = create_detector(DetectorSettings(backend="yolox", conf=0.3, input_size=input_size))
    assert detector._height == detector._width == (input_size or 416)
    truth = _pets_ground_truth(pets_gt)
    matched = total = 0
    for frame in PETS_FRAMES:
        image = cv2.imread(str(pets_frames_dir / f"{frame:06d}.jpg"))
        boxes, scores = detector.detect(image)
        assert np.all(scores >= 0.3) and np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        assert (
            np.all(boxes >= 0)
            and np.all(boxes[:, [0, 2]] <= image.shape[1])
            and np.all(boxes[:, [1, 3]] <= image.shape[0])
        )
        overlap = iou_matrix(truth[frame], boxes)
        rows, cols = linear_sum_assignment(-overlap)
        matched += int((overlap[rows, cols] >= 0.5).sum())
        total += len(truth[frame])
    assert total >= 30
    assert matched / total >= 0.8, f"{matched} of {total} annotated people matched at IoU 0.5"


@pytest.mark.parametrize("backend", ["yolox", "tflite", "hog"])
def test_a_live_conf_change_reaches_the_backend(backend, vtest_frames, tflite_model):
    """The node changes the shared DetectorSettings on `ros2 param set /detection conf ...`."""
    settings = DetectorSettings(backend=backend, conf=0.1, tflite_model=str(tflite_model))
    detector, _ = create_detector(settings)
    frame = vtest_frames[10]
    _, low_scores = detector.detect(frame)
    assert len(low_scores) >= 2, low_scores
    settings.conf = float(np.max(low_scores))
    _, high_scores = detector.detect(frame)
    assert 1 <= len(high_scores) < len(low_scores) and np.all(high_scores >= settings.conf)
    settings.max_det = 1
    settings.conf = 0.1
    assert len(detector.detect(frame)[1]) == 1


def test_input_size_is_validated_and_a_graph_that_fixes_its_size_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    for size in (100, 16, 4096):
        with pytest.raises(DetectorError, match="multiple of 32"):
            create_detector(DetectorSettings(backend="yolox", input_size=size))
    with pytest.raises(DetectorError, match="multiple of 32"):
        create_detector(DetectorSettings(backend="hog", input_size=100))  # refused whatever the backend
    fixed = tmp_path / "fixed.onnx"  # a graph whose Reshape hard-codes the 64 x 64 input it was exported for
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["output"])],
        "fixed",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 12288])],
        [helper.make_tensor("shape", TensorProto.INT64, [2], [1, 12288])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)]), fixed)
    with pytest.raises(DetectorError, match="cannot be re-shaped to a 128x128 input"):
        create_detector(DetectorSettings(backend="yolox", onnx_model=str(fixed), input_size=128))
