"""Where the camera is above the floor, from the image→floor homography: the floor→camera transform that the tracking
node publishes on /tf_static so that rviz and Foxglove can place the floor-frame topics and the camera.

A planar homography is floor→image G = H⁻¹ = λ K [r1 r2 t] (floor points (x, y, 0) in metres): the pose follows
once the intrinsics K are known. The project has no camera calibration, only the homography, so K is taken as
square pixels, no skew, the principal point a parameter (the image centre), and the focal length either a parameter
or, when 0, estimated from the homography itself (Zhang's constraints: r1 ⟂ r2 and |r1| = |r2|, least squares over
both). Written here because OpenCV's decomposeHomographyMat needs K and returns up to four candidate poses, and
cv2.calibrateCamera needs several views of a pattern; what is left is a few lines of linear algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from privacy_vision.core.geometry import ConfigError, Homography

FLOOR_FRAME = "floor"  # metres on the homography's plane; z = x × y (up when the camera is above the floor)
CAMERA_FRAME = "camera"  # the optical frame of REP 103: z along the optical axis, x right, y down in the image


@dataclass(frozen=True)
class CameraPose:
    """The camera in the floor frame: the transform floor→camera of tf (a camera-frame point p is R p + position)."""

    rotation: Rotation  # camera axes expressed in the floor frame
    position_m: np.ndarray  # the camera centre in floor metres (z: height above the floor)
    focal_px: float  # the focal length used (estimated when none was given)
    estimated_focal: bool

    def quaternion_xyzw(self) -> tuple[float, float, float, float]:
        x, y, z, w = self.rotation.as_quat()
        return float(x), float(y), float(z), float(w)


def estimate_focal(floor_to_image: np.ndarray, principal_point: tuple[float, float]) -> float:
    """The focal length (pixels) for which the homography's first two columns are orthogonal and of equal length."""
    centred = np.array([[1.0, 0.0, -principal_point[0]], [0.0, 1.0, -principal_point[1]], [0.0, 0.0, 1.0]])
    h1, h2 = (centred @ floor_to_image)[:, 0], (centred @ floor_to_image)[:, 1]
    # Each constraint is a * (1 / f²) + b = 0 in the unknown 1 / f².
    a = np.array([h1[0] * h2[0] + h1[1] * h2[1], h1[0] ** 2 + h1[1] ** 2 - h2[0] ** 2 - h2[1] ** 2])
    b = np.array([h1[2] * h2[2], h1[2] ** 2 - h2[2] ** 2])
    inverse_square = -(a @ b) / (a @ a) if a @ a > 0 else 0.0
    if not inverse_square > 0 or not np.isfinite(inverse_square):
        raise ConfigError(
            "the homography determines no focal length (the camera looks straight down, or the homography is not a "
            "camera's view): set the tracking node's camera_focal_px"
        )
    return float(1.0 / np.sqrt(inverse_square))


def camera_pose(homography: Homography, principal_point: tuple[float, float], focal_px: float = 0.0) -> CameraPose:
    """The camera's pose in the floor frame; ConfigError says why a homography determines none."""
    floor_to_image = np.linalg.inv(homography.matrix)
    estimated = focal_px <= 0
    focal = estimate_focal(floor_to_image, principal_point) if estimated else float(focal_px)
    intrinsics = np.array([[focal, 0.0, principal_point[0]], [0.0, focal, principal_point[1]], [0.0, 0.0, 1.0]])
    columns = np.linalg.inv(intrinsics) @ floor_to_image
    # The sign that puts the floor point seen at the principal point in front of the camera (positive depth).
    in_view = homography.matrix @ np.array([principal_point[0], principal_point[1], 1.0])
    scale = np.sign(in_view[2]) / np.sqrt(np.linalg.norm(columns[:, 0]) * np.linalg.norm(columns[:, 1]))
    r1, r2, translation = scale * columns[:, 0], scale * columns[:, 1], scale * columns[:, 2]
    # The nearest rotation to [r1 r2 r1×r2] (a fitted homography is never exactly a rotation's columns).
    u, _, vt = np.linalg.svd(np.column_stack([r1, r2, np.cross(r1, r2)]))
    floor_to_camera = u @ vt
    return CameraPose(
        rotation=Rotation.from_matrix(floor_to_camera.T),
        position_m=-floor_to_camera.T @ translation,
        focal_px=focal,
        estimated_focal=estimated,
    )
