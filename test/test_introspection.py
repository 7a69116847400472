"""The camera's pose from the homography (what /tf_static carries) and the lost-frame counter (what /diagnostics
reports), in the pure-Python core; the node and CLI tests are in test_introspection_graph.py and test_ros2cli.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from privacy_vision.core.camera_pose import camera_pose
from privacy_vision.core.frame_loss import BREAK_PERIODS, FrameLossCounter
from privacy_vision.core.geometry import ConfigError, Homography, load_homography
from testkit.core import CONFIG, REPO

PRINCIPAL_POINT = (384.0, 288.0)


def synthetic_homography(yaw_deg: float, tilt_deg: float, position: np.ndarray, focal: float) -> Homography:
    """The image→floor homography of a pinhole camera at `position` (floor metres), looking `tilt_deg` below the
    horizon towards heading `yaw_deg`."""
    # Camera axes in the floor frame (z up): optical axis forward and down, x to the right, y down in the image.
    looking = Rotation.from_euler("ZX", [yaw_deg, -(90.0 + tilt_deg)], degrees=True)
    camera_in_floor = looking.as_matrix()
    floor_to_camera = camera_in_floor.T
    translation = -floor_to_camera @ position
    intrinsics = np.array([[focal, 0, PRINCIPAL_POINT[0]], [0, focal, PRINCIPAL_POINT[1]], [0, 0, 1.0]])
    floor_to_image = intrinsics @ np.column_stack([floor_to_camera[:, 0], floor_to_camera[:, 1], translation])
    return Homography(np.linalg.inv(floor_to_image)), camera_in_floor


@settings(max_examples=60, deadline=None)
@given(
    yaw=st.floats(-180, 180),
    tilt=st.floats(15, 75),
    x=st.floats(-30, 30),
    y=st.floats(-30, 30),
    height=st.floats(2, 15),
    focal=st.floats(300, 3000),
)
def test_the_pose_of_a_pinhole_camera_is_recovered_from_its_homography(yaw, tilt, x, y, height, focal):
    position = np.array([x, y, height])
    homography, camera_in_floor = synthetic_homography(yaw, tilt, position, focal)
    estimated = camera_pose(homography, PRINCIPAL_POINT)
    assert estimated.estimated_focal and estimated.focal_px == pytest.approx(focal, rel=1e-6)
    np.testing.assert_allclose(estimated.position_m, position, atol=1e-6)
    np.testing.assert_allclose(estimated.rotation.as_matrix(), camera_in_floor, atol=1e-8)
    given_focal = camera_pose(homography, PRINCIPAL_POINT, focal_px=focal)
    assert not given_focal.estimated_focal
    np.testing.assert_allclose(given_focal.position_m, position, atol=1e-6)


@pytest.mark.parametrize(
    "values",
    [
        [1, 0, 0, 0, 1, 0, 0, 0, 1],  # the default: pixels are metres, no camera
        [0.02, 0.001, -3, -0.001, 0.02, 5, 0, 0, 1],  # affine: a camera looking straight down, focal unknown
    ],
)
def test_a_homography_that_determines_no_focal_length_says_so(values):
    with pytest.raises(ConfigError, match="camera_focal_px"):
        camera_pose(Homography.from_values(values), PRINCIPAL_POINT)


def test_the_shipped_pets_homography_puts_the_camera_seven_metres_up_and_reprojects():
    """The figures docs/ros-tools.md gives. The square-pixel pinhole at that pose reproduces the fitted homography over
    a 9x9 grid of pixels within 28 px (median 10 px): close enough to place the camera in rviz or Foxglove (the tracks
    themselves use the homography)."""
    homography = load_homography(CONFIG / "homography_pets.yaml")
    pose = camera_pose(homography, PRINCIPAL_POINT)
    np.testing.assert_allclose(pose.position_m, [-28.88, -20.01, 7.03], atol=0.01)
    assert pose.focal_px == pytest.approx(1191, abs=1)
    pixels = np.array([[u, v] for u in np.linspace(0, 767, 9) for v in np.linspace(0, 575, 9)])
    floor = np.column_stack([homography.project(pixels), np.zeros(len(pixels))])
    in_camera = pose.rotation.inv().apply(floor - pose.position_m)
    assert np.all(in_camera[:, 2] > 0)  # in front of the camera
    errors = np.linalg.norm(pose.focal_px * in_camera[:, :2] / in_camera[:, 2:] + PRINCIPAL_POINT - pixels, axis=1)
    assert errors.max() < 30.0 and np.median(errors) < 11.0, (errors.max(), np.median(errors))


def test_the_tf2_msgs_built_here_has_upstream_type_hash():
    """Wire compatibility with a ROS installation's tf2_msgs: the RIHS01 hash of upstream's TFMessage (as
    `ros2 topic info -v /tf` shows on Jazzy) is the hash of the copy that scripts/setup.sh builds."""
    description = json.loads((REPO / ".venv/share/tf2_msgs/msg/TFMessage.json").read_text())
    hashes = {entry["type_name"]: entry["hash_string"] for entry in description["type_hashes"]}
    assert hashes["tf2_msgs/msg/TFMessage"] == (
        "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087"
    )


@settings(max_examples=200, deadline=None)
@given(
    period=st.floats(0.01, 1.0),
    start=st.floats(0, 2e9),
    losses=st.lists(st.integers(0, 5), min_size=3, max_size=300),
)
def test_every_frame_lost_between_received_ones_is_counted(period, start, losses):
    """Losses in at most one gap of three (the median gap stays the period): each lost frame is counted once."""
    losses = [lost if i % 3 == 2 else 0 for i, lost in enumerate(losses)]
    counter = FrameLossCounter(window_frames=10_000)
    frame = 0
    counted = [counter.observe(start + frame * period)]
    for lost in losses:
        frame += lost + 1
        counted.append(counter.observe(start + frame * period))
    assert counted == [0, *losses]
    assert counter.lost == sum(losses) and counter.received == len(losses) + 1 and counter.breaks == 0
    assert counter.lost_fraction() == pytest.approx(sum(losses) / (frame + 1))


def test_a_restarted_or_paused_stream_is_a_break_not_lost_frames():
    counter = FrameLossCounter()
    for i in range(10):
        counter.observe(100.0 + i * 0.1)
    assert counter.observe(100.0) == 0  # a looped recording or a respawned source starts again
    for i in range(1, 10):
        counter.observe(100.0 + i * 0.1)
    assert counter.observe(100.9 + (BREAK_PERIODS + 1) * 0.1) == 0  # a pause longer than BREAK_PERIODS periods
    assert counter.observe(100.9 + (BREAK_PERIODS + 3) * 0.1) == 1  # the stream goes on at its rate
    assert (counter.lost, counter.breaks) == (1, 2)


def test_the_lost_fraction_is_over_the_recent_window_only():
    counter = FrameLossCounter(window_frames=20)
    kept = [*range(20), *(frame for frame in range(20, 60) if frame % 4)]  # then one frame in four lost
    for frame in kept:
        counter.observe(frame * 0.1)
    recent = np.diff(kept)[-20:] - 1
    assert counter.lost == 10 and counter.lost_fraction() == pytest.approx(recent.sum() / (recent.sum() + 20))
    for frame in range(60, 80):
        counter.observe(frame * 0.1)
    assert counter.lost_fraction() == 0.0 and counter.lost == 10
    with pytest.raises(ValueError, match="window_frames"):
        FrameLossCounter(window_frames=0)
