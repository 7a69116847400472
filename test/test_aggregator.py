"""Zone-window statistics: distinct people, k-threshold, entries/exits with hysteresis, stated parameters."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.aggregator import AggregatorSettings, ZoneWindowAggregator
from privacy_vision.core.anonymizer import AnonymizedRecord
from privacy_vision.core.geometry import Zone
from privacy_vision.core.privacy import PrivacyLedger
from shapely.geometry import Polygon

ZONE = Zone("hall", Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]))


def record(person: str, x: float, y: float = 5.0, direction: str = "E") -> AnonymizedRecord:
    return AnonymizedRecord(person, x, y, "medium", direction)


def make(tmp_path, **changes) -> ZoneWindowAggregator:
    settings = AggregatorSettings(**{"window_s": 10.0, "k": 2, "epsilon": 50.0, "footfall_epsilon_per_day": 0.0, **changes})
    return ZoneWindowAggregator([ZONE], settings, PrivacyLedger(tmp_path / "ledger.sqlite", settings.daily_epsilon_cap))


def test_occupancy_counts_people_not_records(tmp_path):
    aggregator = make(tmp_path)  # ε = 50: noise is almost always 0, so values are checkable
    for t in range(9):
        aggregator.observe(float(t), [record("a", 5), record("b", 6), record("c", 7, direction="none")])
    (release,) = aggregator.observe(10.0, [])
    assert not release.suppressed
    assert release.occupancy == 3
    assert release.direction_counts["E"] == 2 and release.direction_counts["none"] == 1
    assert release.dwell_counts == {"short": 3, "medium": 0, "long": 0}
    assert (release.window_start_s, release.window_end_s) == (0.0, 10.0)
    assert (release.mechanism, release.epsilon, release.k, release.privacy_unit) == ("discrete_laplace", 50.0, 2, "person-window")


def test_entries_and_exits_ignore_flicker_at_the_edge(tmp_path):
    aggregator = make(tmp_path, k=1)
    path = [-2, -1, 0.1, -0.1, 0.1, -0.1, 1, 2, 3, 2, 1, -0.1, 0.1, -1, -2]  # one entry, one exit; flicker at x≈0
    for t, x in enumerate(path):
        aggregator.observe(t * 0.5, [record("p", x)])
    (release,) = aggregator.close_window()
    assert (release.entries, release.exits) == (1, 1)


def test_windows_close_on_time_and_on_flush(tmp_path):
    aggregator = make(tmp_path, k=1)
    assert aggregator.observe(3.0, [record("a", 5)]) == []
    releases = aggregator.observe(25.0, [record("a", 5)])  # closes [0, 10) and [10, 20)
    assert [r.window_start_s for r in releases] == [0.0, 10.0]
    assert releases[1].suppressed  # nobody there
    (last,) = aggregator.close_window()
    assert last.window_start_s == 20.0 and last.occupancy == 1


@settings(max_examples=60, deadline=None)
@given(people=st.integers(0, 8), k=st.integers(1, 6), epsilon=st.sampled_from([0.1, 0.5, 1.0, 5.0]))
def test_no_released_group_has_fewer_than_k_people(tmp_path_factory, people, k, epsilon):
    aggregator = make(tmp_path_factory.mktemp("agg"), k=k, epsilon=epsilon)
    aggregator.observe(1.0, [record(str(i), 5) for i in range(people)])
    (release,) = aggregator.close_window()
    if people < k:
        assert release.suppressed
    if release.suppressed:
        assert release.occupancy == 0 and sum(release.direction_counts.values()) == 0 and release.entries == 0
    for name in ("mechanism", "epsilon", "delta", "k", "privacy_unit", "window_s", "epsilon_spent_today", "daily_epsilon_cap"):
        assert getattr(release, name) is not None
    assert release.k == k and release.epsilon == epsilon


def test_daily_cap_stops_releases(tmp_path):
    aggregator = make(tmp_path, k=1, epsilon=1.0, daily_epsilon_cap=2.0)
    releases = []
    for window in range(4):
        releases += aggregator.observe(window * 10.0 + 1, [record("a", 5)])
    releases += aggregator.close_window()
    assert len(releases) == 2
    assert aggregator.cap_reached_day == "1970-01-01"
    assert releases[-1].epsilon_spent_today == 2.0


def test_daily_footfall_is_a_running_total_charged_once_per_day(tmp_path):
    aggregator = make(tmp_path, k=1, epsilon=1.0, footfall_epsilon_per_day=1e4, daily_epsilon_cap=1e5)  # huge ε: values checkable
    releases = []
    for window in range(6):  # person w enters in window w (from outside to inside)
        releases += aggregator.observe(window * 10.0 + 1, [record(f"p{window}", -2)])
        releases += aggregator.observe(window * 10.0 + 5, [record(f"p{window}", 5)])
    releases += aggregator.close_window()
    assert [r.cumulative_footfall_today for r in releases] == [1, 2, 3, 4, 5, 6]
    strict = make(tmp_path / "k3", k=3, epsilon=1.0, footfall_epsilon_per_day=1e4, daily_epsilon_cap=1e5)
    totals = []
    for window in range(4):
        totals += [r.cumulative_footfall_today for r in strict.observe(window * 10.0 + 1, [record(f"p{window}", -2)])]
        strict.observe(window * 10.0 + 5, [record(f"p{window}", 5)])
    totals += [r.cumulative_footfall_today for r in strict.close_window()]
    assert totals == [0, 0, 3, 4]  # below k = 3 people since midnight: not released
    assert releases[-1].footfall_epsilon_per_day == 1e4
    assert aggregator.ledger.spent("1970-01-01") == pytest.approx(6 * 1.0 + 1e4)  # six windows + one counter


@pytest.mark.parametrize("changes, message", [
    ({"k": 0}, "k must"), ({"epsilon": 0}, "epsilon"), ({"window_s": 0}, "window_s"),
    ({"daily_epsilon_cap": 0.5, "epsilon": 1.0}, "daily_epsilon_cap"), ({"dwell_thresholds_s": (10, 5)}, "dwell"),
    ({"mechanism": "discrete_gaussian"}, "delta"),
])
def test_bad_settings_are_rejected(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **changes)
