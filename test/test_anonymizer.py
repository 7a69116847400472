"""Anonymisation: quantisation, heading, size, time rounding, keyed rotating IDs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from privacy_vision.core.anonymizer import (
    Anonymizer,
    AnonymizerSettings,
    RotatingKey,
    TrackSample,
    direction_sector,
    quantize,
    round_time,
    size_category,
)


@given(st.floats(-1e4, 1e4), st.sampled_from([0.1, 0.25, 0.5, 1.0, 2.0]))
def test_quantized_value_is_the_centre_of_its_cell(value, grid):
    cell = quantize(value, grid)
    assert abs(cell - value) <= grid / 2 + 1e-9
    assert math.isclose((cell / grid - 0.5) % 1.0, 0.0, abs_tol=1e-6) or math.isclose(
        (cell / grid - 0.5) % 1.0, 1.0, abs_tol=1e-6
    )


@given(st.floats(0, 1e9), st.sampled_from([1.0, 5.0, 60.0]))
def test_rounded_time_never_lies_in_the_future(stamp, precision):
    rounded = round_time(stamp, precision)
    assert rounded <= stamp and stamp - rounded < precision


@pytest.mark.parametrize(
    "vx, vy, sectors, expected",
    [
        (1, 0, 8, "E"),
        (0, 1, 8, "N"),
        (-1, 0, 8, "W"),
        (0, -1, 8, "S"),
        (1, 1, 8, "NE"),
        (-1, -1, 8, "SW"),
        (1, 0.3, 4, "E"),
        (-0.2, 1, 4, "N"),
        (0.05, 0.05, 8, "none"),
    ],
)
def test_direction_sectors(vx, vy, sectors, expected):
    assert direction_sector(vx, vy, sectors, min_speed_mps=0.2) == expected


def test_size_categories():
    assert [size_category(f, (0.15, 0.3)) for f in (0.1, 0.2, 0.5)] == ["small", "medium", "large"]


def test_ids_are_stable_within_a_key_period_and_unlinkable_across():
    key = RotatingKey(rotation_interval_s=60, now_s=0)
    first = {track: key.pseudonym(track) for track in range(100)}
    assert first == {track: key.pseudonym(track) for track in range(100)}
    assert len(set(first.values())) == 100
    assert not key.rotate_if_due(59.0)
    assert key.rotate_if_due(60.0) and key.epoch == 1
    second = {track: key.pseudonym(track) for track in range(100)}
    assert not set(first.values()) & set(second.values())


def test_two_devices_never_share_ids():
    assert RotatingKey(60, 0).pseudonym(7) != RotatingKey(60, 0).pseudonym(7)


def test_key_never_appears_in_repr():
    key = RotatingKey(60, 0)
    assert key._key.hex() not in repr(key) and "epoch=0" in repr(key)


def test_anonymize_drops_speed_and_exact_position():
    anonymizer = Anonymizer(AnonymizerSettings(), now_s=0)
    record = anonymizer.anonymize(3, x_m=1.26, y_m=-0.74, vx_mps=1.4, vy_mps=0.0, box_height_fraction=0.2)
    assert (record.cell_x_m, record.cell_y_m) == (1.25, -0.75)
    assert record.direction == "E" and record.size_category == "medium"
    assert set(vars(record)) == {"privacy_id", "cell_x_m", "cell_y_m", "size_category", "direction"}
    before = record.privacy_id
    assert anonymizer.forget(now_s=1) == 1
    assert anonymizer.anonymize(3, 1.26, -0.74, 1.4, 0.0, 0.2).privacy_id != before


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid_size_m": 0}, "grid_size_m"),
        ({"direction_sectors": 6}, "4 or 8"),
        ({"rotation_interval_s": 0}, "rotation"),
        ({"size_thresholds": (0.3, 0.1)}, "size_thresholds"),
        ({"min_speed_mps": -1}, "min_speed"),
    ],
)
def test_bad_settings_are_rejected(changes, message):
    with pytest.raises(ValueError, match=message):
        Anonymizer(AnonymizerSettings(**changes), now_s=0)


def test_records_of_two_key_epochs_share_nothing_that_links_them():
    """Rotation's purpose: after a forget, a track's records carry a new ID and no start time or other key."""
    anonymizer = Anonymizer(AnonymizerSettings(time_precision_s=5.0), now_s=0.0)
    sample = TrackSample(track_id=7, x_m=1.0, y_m=1.0, vx_mps=0.0, vy_mps=0.0, box_height_fraction=0.2)
    (first,) = anonymizer.anonymize_frame([sample])
    anonymizer.forget(now_s=150.0)
    (later,) = anonymizer.anonymize_frame([sample])
    assert first.privacy_id != later.privacy_id
    assert {k: v for k, v in vars(first).items() if k != "privacy_id"} == {
        k: v for k, v in vars(later).items() if k != "privacy_id"
    }
