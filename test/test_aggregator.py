"""Zone-window statistics: distinct people, k-threshold, entries/exits with hysteresis, stated parameters."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import numpy as np
from scipy.stats import beta

from privacy_vision.core.aggregator import (AggregatorSettings, ReleaseMechanism, ZoneStatistics, ZoneWindowAggregator,
                                            project_to_simplex)
from privacy_vision.core.anonymizer import AnonymizedRecord
from privacy_vision.core.geometry import Zone
from privacy_vision.core.privacy import PrivacyLedger
from shapely.geometry import Polygon

ZONE = Zone("hall", Polygon([(0, 0), (10, 0), (10, 10), (0, 10)]))


def record(person: str, x: float, y: float = 5.0, direction: str = "E", since: float | None = None) -> AnonymizedRecord:
    return AnonymizedRecord(person, x, y, "medium", direction, since)


def make(tmp_path, **changes) -> ZoneWindowAggregator:
    settings = AggregatorSettings(**{"window_s": 10.0, "k": 2, "epsilon": 1000.0, "daily_epsilon_cap": 1e6, "footfall_epsilon_per_day": 0.0, **changes})
    return ZoneWindowAggregator([ZONE], settings, PrivacyLedger(tmp_path / "ledger.sqlite", settings.daily_epsilon_cap))


def test_occupancy_counts_people_not_records(tmp_path):
    aggregator = make(tmp_path)  # ε = 1000 (≥ 50 per metric): noise is almost always 0, so values are checkable
    for t in range(9):
        aggregator.observe(float(t), [record("a", 5), record("b", 6), record("c", 7, direction="none")])
    (release,) = aggregator.observe(10.0, [])
    assert not release.suppressed
    assert release.occupancy == 3
    assert release.direction_counts["E"] == 2 and release.direction_counts["none"] == 1
    assert release.dwell_counts == {"short": 3, "medium": 0, "long": 0}
    assert (release.window_start_s, release.window_end_s) == (0.0, 10.0)
    assert (release.mechanism, release.epsilon, release.k, release.privacy_unit) == ("discrete_laplace", 1000.0, 2, "person-window")


def test_entries_and_exits_ignore_flicker_at_the_edge(tmp_path):
    aggregator = make(tmp_path, k=1)
    path = [-2, -1, 0.1, -0.1, 0.1, -0.1, 1, 2, 3, 2, 1, -0.1, 0.1, -1, -2]  # one entry, one exit; flicker at x≈0
    for t, x in enumerate(path):
        aggregator.observe(t * 0.5, [record("p", x), record("q", 5)])  # q: a second person, so the window passes k + margin
    (release,) = aggregator.close_window()
    assert (release.entries, release.exits) == (1, 1)


def test_windows_close_on_time_and_on_flush(tmp_path):
    aggregator = make(tmp_path, k=1)
    assert aggregator.observe(3.0, [record("a", 5)]) == []
    releases = aggregator.observe(25.0, [record("a", 5)])  # closes [0, 10) and [10, 20)
    assert [r.window_start_s for r in releases] == [0.0, 10.0]
    assert releases[1].suppressed  # nobody there
    aggregator.observe(26.0, [record("a", 5), record("b", 6)])
    (last,) = aggregator.close_window()
    assert last.window_start_s == 20.0 and last.occupancy == 2


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
    # k = 1 and a margin of 1 (ε = 1e4): a total of exactly k is held back like a group of exactly k
    assert [r.cumulative_footfall_today for r in releases] == [0, 2, 3, 4, 5, 6]
    strict = make(tmp_path / "k3", k=3, epsilon=1.0, footfall_epsilon_per_day=1e4, daily_epsilon_cap=1e5)
    totals = []
    for window in range(4):
        totals += [r.cumulative_footfall_today for r in strict.observe(window * 10.0 + 1, [record(f"p{window}", -2)])]
        strict.observe(window * 10.0 + 5, [record(f"p{window}", 5)])
    totals += [r.cumulative_footfall_today for r in strict.close_window()]
    assert totals == [0, 0, 0, 4]  # below k + margin = 4 people since midnight: not released
    assert releases[-1].footfall_epsilon_per_day == 1e4
    assert aggregator.ledger.spent("1970-01-01") == pytest.approx(6 * 1.0 + 1e4)  # six windows + one counter


@pytest.mark.parametrize("changes, message", [
    ({"k": 0}, "k must"), ({"epsilon": 0}, "epsilon"), ({"window_s": 0}, "window_s"),
    ({"daily_epsilon_cap": 0.5, "epsilon": 1.0}, "daily_epsilon_cap"), ({"dwell_thresholds_s": (10, 5)}, "dwell"),
    ({"mechanism": "discrete_gaussian"}, "delta"), ({"epsilon_split": (1, 1, 1)}, "epsilon_split"),
    ({"epsilon_split": (1, 1, 0, 1, 1)}, "epsilon_split"), ({"suppression_delta": 0.0}, "suppression_delta"),
    ({"suppression_delta": 0.5}, "suppression_delta"),
])
def test_bad_settings_are_rejected(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **changes)


def test_a_group_of_exactly_k_passes_the_noisy_threshold_with_probability_at_most_suppression_delta():
    mechanism = ReleaseMechanism(AggregatorSettings(k=5, epsilon=1.0, suppression_delta=0.01))
    noise = mechanism.noise["occupancy"]
    margin = mechanism.threshold - 5
    exact = noise.tail(margin)
    assert exact <= 0.01 < noise.tail(margin - 1)  # the smallest margin that meets δ
    trials = 20_000
    at_k = ZoneStatistics(5, (5, 0, 0, 0, 0, 0, 0, 0, 0), (5, 0, 0), 0, 0)
    released = sum(mechanism.release(at_k) is not None for _ in range(trials))
    low = beta.ppf(1e-6, released, trials - released + 1) if released else 0.0
    high = beta.ppf(1 - 1e-6, released + 1, trials - released)
    assert low <= exact <= high, (released, exact)  # false-failure rate 2e-6
    below = ZoneStatistics(4, (4, 0, 0, 0, 0, 0, 0, 0, 0), (4, 0, 0), 0, 0)
    assert all(mechanism.release(below) is None for _ in range(2000))  # below k: never, whatever the noise
    assert mechanism.delta == 0.01  # stated: pure ε for the noise plus the threshold's δ


@settings(max_examples=80, deadline=None)
@given(directions=st.lists(st.integers(0, 40), min_size=9, max_size=9), epsilon=st.sampled_from([0.5, 1.0, 4.0]))
def test_released_histograms_are_consistent_with_the_released_occupancy(directions, epsilon):
    total = sum(directions)
    dwell = (total // 2, total - total // 2 - total // 3, total // 3)
    mechanism = ReleaseMechanism(AggregatorSettings(k=1, epsilon=epsilon, suppression_delta=0.01))
    released = mechanism.release(ZoneStatistics(total, tuple(directions), dwell, 3, 2))
    if released is not None:
        assert sum(released.directions) == released.occupancy == sum(released.dwell)
        assert min(released.directions) >= 0 and min(released.dwell) >= 0 and released.entries >= 0 and released.exits >= 0


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(-50, 50), min_size=1, max_size=12), total=st.floats(0.5, 100))
def test_simplex_projection_is_the_nearest_nonnegative_point_with_the_total(values, total):
    projected = project_to_simplex(np.array(values), total)
    assert projected.min() >= 0 and projected.sum() == pytest.approx(total)
    rng = np.random.default_rng(0)  # no other point of the simplex is closer
    for candidate in rng.dirichlet(np.ones(len(values)), 50) * total:
        assert np.linalg.norm(projected - values) <= np.linalg.norm(candidate - values) + 1e-9


def test_dwell_counts_the_whole_stay_across_windows_and_key_rotation(tmp_path):
    aggregator = make(tmp_path, k=1, window_s=60.0, epsilon=1000.0)
    releases = []
    for t in range(0, 300, 5):  # 'stay' sits in the zone for 300 s; its ID is renewed (key rotation) at 150 s
        stay = record("stay-1" if t < 150 else "stay-2", 5, since=0.0)
        passer = record(f"passer-{t // 60}", 5, since=float(t // 60 * 60))  # a new person each window
        releases += aggregator.observe(float(t), [stay, passer])
    releases += aggregator.close_window()
    # stay reaches 120 s in window 3, which also holds its old ID (unlinkable by design: both are long)
    assert [r.dwell_counts["long"] for r in releases] == [0, 0, 2, 1, 1]
    assert [r.dwell_counts["medium"] for r in releases] == [2, 2, 1, 1, 1]  # passers stay 55 s each; stay is at 115 s in window 2
    crossing = make(tmp_path / "crossing", k=1, window_s=60.0, epsilon=1000.0)
    releases = []
    for t in range(0, 120, 5):  # the track started at 0 outside the zone and walks in at 60 s
        releases += crossing.observe(float(t), [record("walker", -2 if t < 60 else 5, since=0.0), record("other", 5, since=float(t))])
    releases += crossing.close_window()
    assert releases[1].dwell_counts["medium"] == 2  # the walker's stay in the zone counts from its crossing, 55 s, not 115 s
