"""Floor-plane geometry: image→floor homography and zone polygons in metres."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from shapely.geometry import Point, Polygon
from shapely.prepared import prep


class ConfigError(ValueError):
    """A configuration file is missing, malformed or semantically wrong."""


@dataclass(frozen=True)
class Homography:
    """Maps image pixels to floor metres (3x3, row-major)."""

    matrix: np.ndarray

    @classmethod
    def from_values(cls, values: list[float] | np.ndarray) -> Homography:
        matrix = np.asarray(values, dtype=np.float64).reshape(-1)
        if matrix.size != 9:
            raise ConfigError(f"a homography needs 9 values (3x3 row-major), got {matrix.size}")
        matrix = matrix.reshape(3, 3)
        if not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
            raise ConfigError(
                "the homography matrix is singular or not finite; refit it with 'privacy-vision calibrate'"
            )
        return cls(matrix)

    @classmethod
    def fit(cls, image_points: np.ndarray, floor_points: np.ndarray) -> tuple[Homography, float]:
        """Fit from ≥4 image↔floor pairs with RANSAC; returns the median reprojection error in metres."""
        image_points = np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
        floor_points = np.asarray(floor_points, dtype=np.float64).reshape(-1, 2)
        if len(image_points) < 4 or len(image_points) != len(floor_points):
            raise ConfigError("fitting a homography needs at least 4 matching image/floor point pairs")
        matrix, _ = cv2.findHomography(image_points, floor_points, cv2.RANSAC, 0.5)
        if matrix is None:
            raise ConfigError("OpenCV could not fit a homography to these points (collinear or degenerate?)")
        homography = cls(matrix)
        errors = np.linalg.norm(homography.project(image_points) - floor_points, axis=1)
        return homography, float(np.median(errors))

    def project(self, image_points: np.ndarray) -> np.ndarray:
        points = np.asarray(image_points, dtype=np.float64).reshape(-1, 1, 2)
        if points.size == 0:
            return np.zeros((0, 2))
        return cv2.perspectiveTransform(points, self.matrix).reshape(-1, 2)


def load_homography(path: str | Path) -> Homography:
    """Read `homography: [9 values]` or `pairs: [[u, v, x, y], ...]` from YAML."""
    data = _read_yaml(path)
    if "homography" in data:
        return Homography.from_values(data["homography"])
    if "pairs" in data:
        pairs = np.asarray(data["pairs"], dtype=np.float64)
        if pairs.ndim != 2 or pairs.shape[1] != 4:
            raise ConfigError(f"{path}: 'pairs' must be a list of [u, v, x_m, y_m] rows")
        return Homography.fit(pairs[:, :2], pairs[:, 2:])[0]
    raise ConfigError(f"{path}: expected a 'homography' (9 values) or 'pairs' ([u, v, x_m, y_m] rows) key")


@dataclass(frozen=True)
class Zone:
    """A named floor polygon in metres that the analytics count people in."""

    zone_id: str
    polygon: Polygon

    def __post_init__(self) -> None:
        object.__setattr__(self, "_prepared", prep(self.polygon))
        object.__setattr__(self, "_bounds", self.polygon.bounds)

    def contains(self, x_m: float, y_m: float) -> bool:
        min_x, min_y, max_x, max_y = self._bounds  # type: ignore[attr-defined]
        if not (min_x <= x_m <= max_x and min_y <= y_m <= max_y):  # cheap rejection: most zones are far away
            return False
        return self._prepared.contains(Point(x_m, y_m))  # type: ignore[attr-defined]

    def boundary_distance(self, x_m: float, y_m: float) -> float:
        return float(self.polygon.exterior.distance(Point(x_m, y_m)))


def load_zones(path: str | Path) -> list[Zone]:
    """Zones file: `zones: [{id: name, polygon: [[x, y], ...]}, ...]` in floor metres."""
    data = _read_yaml(path)
    if not data.get("zones"):
        raise ConfigError(
            f"{path}: no zones defined; add at least one entry under 'zones:' with an 'id' and a 'polygon' of [x, y] metres"
        )
    return _polygons(path, data, "zones")


def load_exclusions(path: str | Path) -> list[Zone]:
    """Staff exclusion areas of a zones file (`exclusions:`, same form as zones, optional): nothing inside one
    counts in any metric (a counter, a till, a back office)."""
    return _polygons(path, _read_yaml(path), "exclusions")


def _polygons(path: str | Path, data: dict, key: str) -> list[Zone]:
    entries = data.get(key) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: '{key}' must be a list of {{id, polygon}} entries")
    zones: list[Zone] = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "polygon" not in entry:
            raise ConfigError(f"{path}: {key} entry #{index} needs 'id' and 'polygon'")
        points = entry["polygon"]
        if not isinstance(points, list) or len(points) < 3:
            raise ConfigError(f"{path}: '{entry['id']}' is not a valid polygon: it needs at least 3 [x, y] points")
        try:
            polygon = Polygon([(float(x), float(y)) for x, y in points])
        except (TypeError, ValueError) as error:
            raise ConfigError(f"{path}: '{entry['id']}' polygon must be a list of [x, y] numbers ({error})") from None
        if not polygon.is_valid or polygon.area <= 0:
            raise ConfigError(
                f"{path}: '{entry['id']}' is not a valid polygon (≥3 points, no self-intersection, non-zero area)"
            )
        zones.append(Zone(str(entry["id"]), polygon))
    ids = [zone.zone_id for zone in zones]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{path}: {key} ids must be unique, got {ids}")
    return zones


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def overlapping_zones(zones: list[Zone]) -> list[tuple[str, str]]:
    """Pairs of zones that share area (refused: a person there would count twice at one instant)."""
    return [
        (a.zone_id, b.zone_id)
        for i, a in enumerate(zones)
        for b in zones[i + 1 :]
        if a.polygon.intersection(b.polygon).area > 0
    ]
