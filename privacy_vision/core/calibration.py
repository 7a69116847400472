"""Fit the image→floor homography from MOT ground truth with calibrated ground-plane columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from privacy_vision.core.geometry import ConfigError, Homography


def load_mot_ground_points(gt_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Foot points (bottom centre of each box) and their world x, y from a MOT gt.txt."""
    path = Path(gt_path)
    if not path.is_file():
        raise ConfigError(f"{path}: ground-truth file not found")
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    if rows.shape[1] < 9:
        raise ConfigError(f"{path}: expected MOT rows frame,id,x,y,w,h,conf,wx,wy[,wz]")
    calibrated = rows[(rows[:, 7] != -1) | (rows[:, 8] != -1)]
    if len(calibrated) < 4:
        raise ConfigError(f"{path}: fewer than 4 rows carry ground-plane coordinates; this sequence is not calibrated")
    feet = np.column_stack([calibrated[:, 2] + calibrated[:, 4] / 2.0, calibrated[:, 3] + calibrated[:, 5]])
    return feet, calibrated[:, 7:9]


def calibrate_from_mot(gt_path: str | Path, output_path: str | Path) -> dict:
    feet, world = load_mot_ground_points(gt_path)
    homography, median_error = Homography.fit(feet, world)
    errors = np.linalg.norm(homography.project(feet) - world, axis=1)
    report = {
        "source": str(gt_path),
        "pairs": int(len(feet)),
        "median_error_m": round(median_error, 4),
        "p90_error_m": round(float(np.percentile(errors, 90)), 4),
    }
    document = {
        "homography": [round(float(v), 10) for v in homography.matrix.reshape(-1)],
        "fit": report,
    }
    Path(output_path).write_text(
        "# Image pixels -> floor metres, fitted by 'privacy-vision calibrate' from MOT ground truth.\n"
        + yaml.safe_dump(document, sort_keys=False)
    )
    return report
