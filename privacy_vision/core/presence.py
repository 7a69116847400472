"""Presence weights: how many people a track stands for right now, a calibrated number in [0, 1].

Starting a track and counting a person are separate decisions. The tracker starts and confirms tracks with its
score thresholds (ByteTrack); a count that takes only confirmed tracks misses every person whose scores stay
below the thresholds, every new person's first frames and every person hidden for a moment. A presence weight is
instead the probability, measured on annotated video, that a live track sits on an annotated person whom no other
track covers, given what the track shows now:

- detected this frame and confirmed: a curve of the detection's score;
- detected this frame and tentative (not yet confirmed, or started by a low score): another curve of the score;
- lost (not detected this frame): a curve of the seconds since its last detection.

The sum of the weights of one frame's tracks is the expected number of people in it. Each weight lies in [0, 1],
so one track never counts more than one person. Curves are isotonic regressions (scipy), monotone by
construction: non-decreasing in the score, non-increasing in the seconds lost. They are fitted per detector
backend by `bench/tune_tracker.py --write-calibration` and shipped in presence_calibration.json beside this module, with the
command, the data and the matching rule that made them. A backend without curves (Ultralytics: no weights to
calibrate here) counts as before: 1 for a confirmed track, 0 otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import isotonic_regression

CALIBRATION_FILE = Path(__file__).with_name("presence_calibration.json")
CURVES = ("detected_confirmed", "detected_tentative", "lost")
KNOT_DECIMALS = 4  # scores and seconds are fitted and stored at this precision


@dataclass(frozen=True)
class MonotoneCurve:
    """A piecewise-linear curve through knots (x ascending, y in [0, 1]), flat beyond the end knots."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=float), np.asarray(self.y, dtype=float)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError("a curve needs as many y as x knots, at least one")
        if np.any(np.diff(x) < 0) or np.any(y < 0) or np.any(y > 1):
            raise ValueError("curve knots need ascending x and y in [0, 1]")
        if np.any(np.diff(y) < 0) and np.any(np.diff(y) > 0):
            raise ValueError("a presence curve must be monotone")

    def __call__(self, value: float | np.ndarray) -> float | np.ndarray:
        return np.interp(value, self.x, self.y)


def fit_monotone_curve(x: np.ndarray, matched: np.ndarray, increasing: bool = True) -> MonotoneCurve:
    """Isotonic regression of 0/1 outcomes on x rounded to KNOT_DECIMALS (the share matched, pooled until
    monotone), as knots at the ends of each pooled block: flat within a block, linear between blocks."""
    x, matched = np.round(np.asarray(x, dtype=float), KNOT_DECIMALS), np.asarray(matched, dtype=float)
    if len(x) == 0:
        raise ValueError("no samples to calibrate on")
    order = np.argsort(x, kind="stable")
    x, matched = x[order], matched[order]
    values, counts = np.unique(x, return_counts=True)
    means = np.add.reduceat(matched, np.r_[0, np.cumsum(counts)[:-1]]) / counts
    fitted = np.clip(isotonic_regression(means, weights=counts, increasing=increasing).x, 0.0, 1.0)
    knots_x, knots_y = [], []
    for start in np.flatnonzero(np.r_[True, np.diff(fitted) != 0]):
        end = start
        while end + 1 < len(fitted) and fitted[end + 1] == fitted[start]:
            end += 1
        knots_x += [values[start], values[end]] if end > start else [values[start]]
        knots_y += [fitted[start]] * (2 if end > start else 1)
    return MonotoneCurve(tuple(float(v) for v in knots_x), tuple(round(float(v), KNOT_DECIMALS) for v in knots_y))


@dataclass(frozen=True)
class PresenceCurves:
    """One backend's three curves (see the module docstring)."""

    detected_confirmed: MonotoneCurve
    detected_tentative: MonotoneCurve
    lost: MonotoneCurve

    def weight(self, confirmed: bool, detected_score: float | None, seconds_lost: float) -> float:
        if detected_score is None:
            return float(self.lost(seconds_lost))
        curve = self.detected_confirmed if confirmed else self.detected_tentative
        return float(curve(detected_score))


def load_calibration(path: Path = CALIBRATION_FILE) -> dict[str, PresenceCurves]:
    """Backend name -> its curves, from the JSON that `bench/tune_tracker.py --write-calibration` writes."""
    try:
        document = json.loads(path.read_text())
        return {
            backend: PresenceCurves(
                **{name: MonotoneCurve(tuple(entry[name]["x"]), tuple(entry[name]["y"])) for name in CURVES}
            )
            for backend, entry in document["backends"].items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"presence calibration {path} is unreadable: {error}; regenerate it with bench/tune_tracker.py --write-calibration"
        ) from error


def curves_to_json(curves: PresenceCurves) -> dict:
    return {name: {"x": list(getattr(curves, name).x), "y": list(getattr(curves, name).y)} for name in CURVES}
