"""Homography fitting and zones."""

from __future__ import annotations

import numpy as np
import pytest

from privacy_vision.core.calibration import calibrate_from_mot
from privacy_vision.core.geometry import ConfigError, Homography, load_homography, load_zones


def test_fit_recovers_a_known_homography():
    truth = np.array([[0.02, 0.001, -3.0], [0.0005, 0.03, -1.0], [0.0, 0.0004, 1.0]])
    image = np.random.default_rng(1).uniform(0, 700, size=(40, 2))
    floor = Homography(truth).project(image)
    fitted, error = Homography.fit(image, floor)
    assert error < 1e-6
    assert np.allclose(fitted.project(image), floor, atol=1e-6)


def test_pets_calibration_reprojects_within_ten_centimetres(pets_gt, tmp_path):
    report = calibrate_from_mot(pets_gt, tmp_path / "h.yaml")
    assert report["pairs"] > 4000
    assert report["median_error_m"] < 0.05 and report["p90_error_m"] < 0.1
    homography = load_homography(tmp_path / "h.yaml")
    assert homography.matrix.shape == (3, 3)


def test_homography_from_pairs_and_bad_files(tmp_path):
    good = tmp_path / "pairs.yaml"
    good.write_text("pairs: [[0, 0, 0, 0], [100, 0, 1, 0], [100, 100, 1, 1], [0, 100, 0, 1], [50, 50, 0.5, 0.5]]\n")
    assert np.allclose(load_homography(good).project(np.array([[50.0, 0.0]])), [[0.5, 0.0]], atol=1e-6)
    for text, message in [
        ("homography: [1, 2, 3]\n", "9 values"),
        ("homography: [0,0,0,0,0,0,0,0,0]\n", "singular"),
        ("something: 1\n", "expected a 'homography'"),
        ("[1, 2\n", "not valid YAML"),
    ]:
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_homography(path)
    with pytest.raises(ConfigError, match="not found"):
        load_homography(tmp_path / "absent.yaml")


def test_zones_load_and_contain(tmp_path):
    path = tmp_path / "zones.yaml"
    path.write_text("zones:\n  - id: a\n    polygon: [[0, 0], [2, 0], [2, 2], [0, 2]]\n")
    (zone,) = load_zones(path)
    assert zone.contains(1, 1) and not zone.contains(3, 1)
    assert zone.boundary_distance(1, 1) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no zones defined"),
        ("zones: []\n", "no zones defined"),
        ("zones:\n  - id: a\n", "needs 'id' and 'polygon'"),
        ("zones:\n  - id: a\n    polygon: [[0, 0], [1, 1]]\n", "not a valid polygon"),
        ("zones:\n  - id: a\n    polygon: [[0, 0], [1, 1], [1, 0], [0, 1]]\n", "not a valid polygon"),
        ("zones:\n  - id: a\n    polygon: [[0, 0], [x, 1], [1, 0]]\n", "list of \\[x, y\\] numbers"),
        (
            "zones:\n  - {id: a, polygon: [[0, 0], [1, 0], [1, 1]]}\n  - {id: a, polygon: [[0, 0], [1, 0], [1, 1]]}\n",
            "unique",
        ),
    ],
)
def test_bad_zones_files_are_explained(tmp_path, text, message):
    path = tmp_path / "zones.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_zones(path)
