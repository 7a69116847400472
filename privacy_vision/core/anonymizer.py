"""Turn a confirmed track into a coarse, unlinkable record: keyed rotating ID, grid cell, size class, heading."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass

DIRECTIONS_8 = ("E", "NE", "N", "NW", "W", "SW", "S", "SE")
DIRECTIONS_4 = ("E", "N", "W", "S")
NO_DIRECTION = "none"
SIZE_CATEGORIES = ("small", "medium", "large")


@dataclass(frozen=True)
class AnonymizedRecord:
    """What leaves the anonymizer for one track and frame: a rotating ID, a grid cell, a size class, a heading."""

    privacy_id: str
    cell_x_m: float
    cell_y_m: float
    size_category: str
    direction: str


class RotatingKey:
    """A 32-byte HMAC key that lives only in memory and is replaced on schedule or on request.

    A plain hash of a tracker ID would be linkable forever (and brute-forceable: tracker IDs are
    small integers), so IDs are keyed and the key is thrown away at every rotation.
    """

    def __init__(self, rotation_interval_s: float, now_s: float) -> None:
        if rotation_interval_s <= 0:
            raise ValueError("rotation_interval_s must be > 0")
        self.rotation_interval_s = rotation_interval_s
        self.epoch = 0
        self._key = secrets.token_bytes(32)
        self._rotated_at = now_s

    def rotate(self, now_s: float) -> int:
        self._key = secrets.token_bytes(32)
        self._rotated_at = now_s
        self.epoch += 1
        return self.epoch

    def rotate_if_due(self, now_s: float) -> bool:
        if now_s - self._rotated_at >= self.rotation_interval_s:
            self.rotate(now_s)
            return True
        return False

    def pseudonym(self, track_id: int) -> str:
        digest = hmac.new(self._key, track_id.to_bytes(8, "big", signed=False), hashlib.sha256)
        return digest.hexdigest()[:32]

    def __repr__(self) -> str:  # never show the key
        return f"RotatingKey(epoch={self.epoch}, interval_s={self.rotation_interval_s})"


def quantize(value_m: float, grid_size_m: float) -> float:
    """Centre of the grid cell that holds value_m."""
    return (math.floor(value_m / grid_size_m) + 0.5) * grid_size_m


def round_time(stamp_s: float, precision_s: float) -> float:
    """Floor to the precision so that a rounded stamp never lies in the future of the event."""
    if precision_s <= 0:
        return stamp_s
    return math.floor(stamp_s / precision_s) * precision_s


def direction_sector(vx_mps: float, vy_mps: float, sectors: int, min_speed_mps: float) -> str:
    if math.hypot(vx_mps, vy_mps) < min_speed_mps:
        return NO_DIRECTION
    names = DIRECTIONS_8 if sectors == 8 else DIRECTIONS_4
    angle = math.atan2(vy_mps, vx_mps) % (2 * math.pi)
    width = 2 * math.pi / len(names)
    return names[int(((angle + width / 2) % (2 * math.pi)) // width)]


def size_category(box_height_fraction: float, thresholds: tuple[float, float]) -> str:
    """Classify by box height relative to the frame height (small < t0 ≤ medium < t1 ≤ large)."""
    small_max, medium_max = thresholds
    if box_height_fraction < small_max:
        return "small"
    if box_height_fraction < medium_max:
        return "medium"
    return "large"


@dataclass
class AnonymizerSettings:
    """How coarse the anonymised records are (grid, time, heading) and how often IDs rotate."""

    grid_size_m: float = 0.5
    time_precision_s: float = 5.0
    rotation_interval_s: float = 3600.0
    direction_sectors: int = 8
    min_speed_mps: float = 0.2
    size_thresholds: tuple[float, float] = (0.15, 0.3)

    def validate(self) -> None:
        if self.grid_size_m <= 0:
            raise ValueError("grid_size_m must be > 0")
        if self.time_precision_s < 0:
            raise ValueError("time_precision_s must be ≥ 0")
        if self.rotation_interval_s <= 0:
            raise ValueError("rotation_interval_s must be > 0")
        if self.direction_sectors not in (4, 8):
            raise ValueError("direction_sectors must be 4 or 8")
        if self.min_speed_mps < 0:
            raise ValueError("min_speed_mps must be ≥ 0")
        low, high = self.size_thresholds
        if not 0 < low < high:
            raise ValueError("size_thresholds must be two increasing fractions of the frame height > 0")


@dataclass(frozen=True)
class TrackSample:
    """One confirmed track in one frame, as the anonymizer takes it (no box, no pixels)."""

    track_id: int
    x_m: float
    y_m: float
    vx_mps: float
    vy_mps: float
    box_height_fraction: float


class Anonymizer:
    """The step after which no tracker ID exists: keyed rotating pseudonyms, grid cells, size class, heading, no speed."""

    def __init__(self, settings: AnonymizerSettings, now_s: float) -> None:
        settings.validate()
        self.settings = settings
        self.key = RotatingKey(settings.rotation_interval_s, now_s)

    def anonymize_frame(self, tracks: list[TrackSample]) -> list[AnonymizedRecord]:
        """Records of one frame's confirmed tracks, in the same order."""
        return [self.anonymize(t.track_id, t.x_m, t.y_m, t.vx_mps, t.vy_mps, t.box_height_fraction) for t in tracks]

    def forget(self, now_s: float) -> int:
        """Rotate now: every ID issued so far becomes unlinkable to what follows."""
        return self.key.rotate(now_s)

    def anonymize(
        self,
        track_id: int,
        x_m: float,
        y_m: float,
        vx_mps: float,
        vy_mps: float,
        box_height_fraction: float,
    ) -> AnonymizedRecord:
        s = self.settings
        return AnonymizedRecord(
            privacy_id=self.key.pseudonym(track_id),
            cell_x_m=quantize(x_m, s.grid_size_m),
            cell_y_m=quantize(y_m, s.grid_size_m),
            size_category=size_category(box_height_fraction, s.size_thresholds),
            direction=direction_sector(vx_mps, vy_mps, s.direction_sectors, s.min_speed_mps),
        )
