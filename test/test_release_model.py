"""Release model v2: per-track contribution bound (across key rotation), noise on every cell, tier
consistency, accounting composed by OpenDP, a whole day without blackout, and bad settings refused."""

from __future__ import annotations

import itertools
import math
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon

from privacy_vision.core.aggregator import (
    AggregatorSettings,
    Bounds,
    CellReleaser,
    TrackDayAccount,
    utc_day,
    within_finer_tier,
)
from privacy_vision.core.anonymizer import AnonymizedRecord, Anonymizer, AnonymizerSettings, TrackSample
from privacy_vision.core.contributions import (
    DAY_S,
    NESTED_IN,
    TIERS,
    CellTotals,
    ContributionBounder,
    ContributionSettings,
)
from privacy_vision.core.geometry import Zone
from privacy_vision.core.privacy import PrivacyLedger
from privacy_vision.core.release_schema import wire_from_release

ZONES = [
    Zone("west", Polygon([(0, 0), (10.2, 0), (10.2, 10), (0, 10)])),
    Zone("east", Polygon([(10.2, 0), (20, 0), (20, 10), (10.2, 10)])),
    Zone("north", Polygon([(0, 10), (20, 10), (20, 20), (0, 20)])),
]
DAY0 = 1_790_000_000.0 - 1_790_000_000.0 % DAY_S  # a UTC midnight


def record(x: float, y: float = 5.0, direction: str = "E") -> AnonymizedRecord:
    return AnonymizedRecord("id", x, y, "medium", direction)


def releaser(tmp_path, **changes) -> CellReleaser:
    s = AggregatorSettings(**changes)
    return CellReleaser(
        s,
        PrivacyLedger(tmp_path / f"ledger-{uuid.uuid4()}.sqlite", s.daily_epsilon_cap),
        lambda: str(uuid.uuid4()),
        lambda: 0.0,
    )


def test_occupancy_counts_people_not_records_and_crossings_once_clear_of_the_edge():
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0))
    for t in range(0, 50, 1):
        bounder.observe(
            DAY0 + t, [(1, record(5)), (2, record(6)), (3, record(11 - t * 0.1))]
        )  # 3 walks in from the east
    closed = [c for c in bounder.observe(DAY0 + 61, []) if c.tier == "window"]
    (cell,) = closed
    assert cell.occupancy == 3 and sum(cell.directions) == 3 and sum(cell.dwell) == 3
    hour = next(c for c in bounder.flush() if c.tier == "hour")
    assert hour.entries == 1 and hour.exits == 0 and hour.occupancy == 3 and not hour.complete


def test_dwell_survives_key_rotation_because_it_is_kept_by_tracker_id():
    anonymizer = Anonymizer(AnonymizerSettings(), now_s=DAY0)
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=900.0))
    sample = TrackSample(7, 5.0, 5.0, 0.0, 0.0, 0.2)
    for t in range(0, 300, 5):
        if t == 150:
            anonymizer.key.rotate(DAY0 + t)  # the ID changes; the stay does not
        bounder.observe(DAY0 + t, list(zip([7], anonymizer.anonymize_frame([sample]))))
    hour = next(c for c in bounder.flush() if c.tier == "hour")
    assert hour.occupancy == 1 and hour.dwell == (0, 0, 1)  # one person, a long stay (≥ 120 s)


@settings(max_examples=40, deadline=None)
@given(
    path=st.lists(st.tuples(st.floats(0, 19.9), st.floats(0, 19.9), st.integers(1, 400)), min_size=1, max_size=60),
    bounds=st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 4)),
    rotate_every=st.integers(1, 10),
)
def test_a_track_never_counts_in_more_than_l_cells_per_tier_and_day_across_key_rotation(path, bounds, rotate_every):
    anonymizer = Anonymizer(AnonymizerSettings(), now_s=DAY0)
    bounder = ContributionBounder(ZONES, ContributionSettings(window_s=300.0, cells_per_day=bounds))
    t = DAY0 + 80_000.0  # the walk crosses midnight: each UTC day has its own budget
    cells = []
    for step, (x, y, dt) in enumerate(path):
        if step % rotate_every == 0:
            anonymizer.key.rotate(t)
        cells += bounder.observe(t, list(zip([42], anonymizer.anonymize_frame([TrackSample(42, x, y, 1.0, 0.0, 0.2)]))))
        t += dt * 30.0
    cells += bounder.flush()
    for tier, limit in zip(TIERS, bounds):
        per_day: dict[int, int] = {}
        for cell in cells:
            if cell.tier == tier:
                day = int(cell.period_start_s // DAY_S)
                per_day[day] = per_day.get(day, 0) + cell.occupancy
                assert cell.occupancy <= 1 and max(cell.directions) <= 1 and cell.entries <= 1 and cell.exits <= 1
        assert all(count <= limit for count in per_day.values()), (tier, per_day, limit)
    # admission nests (window in hour, hour in day): a coarser cell never counts fewer than one of its finer cells
    by_key = {(c.tier, c.zone_id, c.period_start_s): c.occupancy for c in cells}
    for cell in cells:
        if cell.tier in NESTED_IN:
            coarser = NESTED_IN[cell.tier]
            start = cell.period_start_s - cell.period_start_s % {"hour": 3600.0, "day": DAY_S}[coarser]
            assert by_key.get((coarser, cell.zone_id, start), 0) >= cell.occupancy, (cell, by_key)


def test_a_forget_request_does_not_hand_live_tracks_a_fresh_budget():
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0, cells_per_day=(1, 1, 1)))
    bounder.observe(DAY0, [(5, record(5))])
    assert bounder.forget() == 1
    cells = bounder.observe(DAY0 + 61, [(5, record(5)), (6, record(6))]) + bounder.flush()
    assert [c.occupancy for c in cells if c.tier == "window"] == [
        0,
        1,
    ]  # track 5 erased and not counted again; 6 counts


@settings(max_examples=60, deadline=None)
@given(estimate=st.integers(0, 200), finer=st.lists(st.integers(0, 100), min_size=1, max_size=6))
def test_the_coarser_tier_respects_its_finer_cells_when_they_are_exact(estimate, finer):
    value = within_finer_tier(estimate, 25.0, finer, 1e-9)
    assert value >= max(finer) - 1
    assert value == estimate or value <= max(finer) + 1  # only raised, and only as far as the finer cells need


@pytest.mark.parametrize("epsilon, bounds", [(2.0, (4, 3, 6)), (1.0, (1, 1, 1)), (4.0, (12, 8, 5))])
def test_the_stated_epsilon_per_track_day_is_the_opendp_composition_of_l_cells_per_tier(tmp_path, epsilon, bounds):
    s = AggregatorSettings(epsilon_per_track_day=epsilon, daily_epsilon_cap=max(6.0, epsilon))
    account = TrackDayAccount(s, Bounds(900.0, bounds))
    by_hand = sum(n * account.cells[tier].epsilon for tier, n in zip(TIERS, bounds))
    assert account.epsilon == pytest.approx(by_hand, rel=1e-9) and account.epsilon == pytest.approx(epsilon, rel=1e-9)
    assert account.epsilon >= epsilon  # OpenDP rounds its maps up, never down
    bounder = ContributionBounder(ZONES, ContributionSettings(cells_per_day=bounds))
    bounder.observe(DAY0, [(1, record(5))])
    release = releaser(tmp_path, epsilon_per_track_day=epsilon, daily_epsilon_cap=max(6.0, epsilon)).release(
        bounder.flush()[0], Bounds(900.0, bounds)
    )
    assert (
        release.epsilon_track_day == account.epsilon
        and release.privacy_unit == "track-day"
        and release.mechanism == "discrete_laplace"
    )
    assert (
        release.epsilon_cell == account.cells[release.tier].epsilon
        and release.cells_per_day == bounds[TIERS.index(release.tier)]
    )


def test_a_whole_simulated_day_releases_every_cell_of_the_grid_and_charges_once(tmp_path):
    contribution = ContributionSettings()
    bounds = Bounds(contribution.window_s, contribution.cells_per_day)
    bounder = ContributionBounder(ZONES, contribution)
    cells_released = releaser(tmp_path)
    released, refused = [], 0
    for minute in range(24 * 60 + 1):  # one frame a minute, a few people around the clock
        t = DAY0 + 60.0 * minute
        people = [(minute // 30 * 10 + i, record(2.0 + 7 * i, 5.0 + (minute % 7))) for i in range(3)]
        for cell in bounder.observe(t, people):
            release = cells_released.release(cell, bounds)
            refused += release is None
            released += [release] if release else []
    day_cells = [r for r in released if r.period_start_s < DAY0 + DAY_S]
    assert refused == 0
    assert len([r for r in day_cells if r.tier == "window"]) == len(ZONES) * 96
    assert len([r for r in day_cells if r.tier == "hour"]) == len(ZONES) * 24
    assert len([r for r in day_cells if r.tier == "day"]) == len(ZONES) + 1  # and the site
    assert cells_released.ledger.charges(utc_day(DAY0)) == 1
    assert max(r.epsilon_spent_today for r in day_cells) == pytest.approx(day_cells[0].epsilon_track_day)
    for (
        release
    ) in released:  # every cell, "< k" ones included, is valid under the one wire schema (else the uplink refuses it)
        wire_from_release(release)


def test_k_is_applied_to_noisy_values_only_and_below_k_withholds_every_value(tmp_path):
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0))
    bounder.observe(DAY0, [(i, record(5)) for i in range(3)])
    window = next(c for c in bounder.flush() if c.tier == "window")
    shown = releaser(tmp_path, epsilon_per_track_day=100.0, daily_epsilon_cap=100.0, k=5)  # noise ~0: 3 people < k
    release = shown.release(window, Bounds(60.0, (4, 3, 6)))
    assert release.below_k and release.occupancy == 0
    assert wire_from_release(release)["below_k"] is True
    release = releaser(tmp_path, epsilon_per_track_day=100.0, daily_epsilon_cap=100.0, k=3).release(
        window, Bounds(60.0, (4, 3, 6))
    )
    assert not release.below_k and release.occupancy == 3


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"cells_per_day": (0, 3, 6)}, "cells_per_day"),
        ({"cells_per_day": (4, 3)}, "cells_per_day"),
        ({"window_s": 7.0}, "divide an hour"),
        ({"window_s": 7200.0}, "divide an hour"),
        ({"dwell_thresholds_s": (60.0, 30.0)}, "dwell"),
    ],
)
def test_bad_contribution_settings_are_refused_and_the_old_ones_kept(changes, message):
    bounder = ContributionBounder(ZONES, ContributionSettings())
    before = bounder.settings
    with pytest.raises(ValueError, match=message):
        bounder.reconfigure(ContributionSettings(**{**before.__dict__, **changes}))
    assert bounder.settings is before


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epsilon_per_track_day": 0.0}, "epsilon_per_track_day"),
        ({"epsilon_per_track_day": -1.0}, "epsilon_per_track_day"),
        ({"epsilon_per_track_day": math.inf}, "epsilon_per_track_day"),
        ({"daily_epsilon_cap": 1.0}, "daily_epsilon_cap"),
        ({"tier_shares": (1.0, 0.0, 1.0)}, "tier_shares"),
        ({"k": 0}, "k must"),
        ({"mode": "loose"}, "mode"),
    ],
)
def test_bad_privacy_settings_are_refused_and_the_old_ones_kept(tmp_path, changes, message):
    cells = releaser(tmp_path)
    before = cells.settings
    with pytest.raises(ValueError, match=message):
        cells.reconfigure(AggregatorSettings(**{**before.__dict__, **changes}))
    assert cells.settings is before


def test_a_mid_day_change_of_settings_charges_again(tmp_path):
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0))
    cells = releaser(tmp_path, daily_epsilon_cap=5.0)
    bounds = Bounds(60.0, (4, 3, 6))
    for minute in range(3):
        for cell in bounder.observe(DAY0 + 60.0 * minute, [(1, record(5))]):
            assert cells.release(cell, bounds) is not None
    cells.reconfigure(AggregatorSettings(epsilon_per_track_day=2.5, daily_epsilon_cap=5.0))
    (granted,) = [
        cells.release(cell, bounds) for cell in bounder.observe(DAY0 + 240.0, [(1, record(5))]) if cell.tier == "window"
    ]
    assert granted.epsilon_spent_today == pytest.approx(4.5)  # 2 for the first configuration, 2.5 for the second
    cells.reconfigure(AggregatorSettings(epsilon_per_track_day=1.0, daily_epsilon_cap=5.0))
    refused = [cells.release(cell, bounds) for cell in bounder.observe(DAY0 + 300.0, []) if cell.tier == "window"]
    assert refused == [None] and cells.cap_reached_day == utc_day(DAY0)


# Strict mode: groups of at least k true people, released by a sparse-vector test.


def strict_day(tmp_path, arrivals: list[tuple[int, float, float]], groups_per_day: int = 1, **changes):
    """Run (track, enter_s, leave_s) visits of the west zone through the bounder and a strict releaser, with the
    anonymizer's feedback (a released group restarts the zone's group); returns the releaser, releases and the
    true members of each released group."""
    contribution = ContributionSettings(window_s=60.0, groups_per_day=groups_per_day)
    bounder = ContributionBounder(ZONES[:1], contribution)
    strict = releaser(tmp_path, mode="strict", **changes)
    bounds = Bounds(60.0, contribution.cells_per_day, groups_per_day)
    released = []
    for second in range(0, int(max(leave for _, _, leave in arrivals)) + 120, 10):
        present = [(track, record(5)) for track, enter, leave in arrivals if enter <= second < leave]
        for cell in bounder.observe(DAY0 + second, present):
            release = strict.release(cell, bounds)
            if release is not None:
                released.append((release, cell.occupancy))
                assert bounder.close_group(release.zone_id, release.period_start_s, release.period_end_s)
    return strict, released, bounds


def test_strict_mode_releases_only_groups_of_at_least_k_true_people_and_charges_what_it_states(tmp_path):
    visits = [(i, 30.0 * i, 30.0 * i + 90.0) for i in range(400)]  # one arrival every 30 s for 3.3 hours
    strict, released, bounds = strict_day(tmp_path, visits, epsilon_per_track_day=2.0)
    account = strict.account(bounds)
    assert released, "400 people over 3 h must fill some groups"
    for release, true_size in released:
        assert (
            true_size >= release.k
            and release.occupancy >= release.k
            and release.tier == "group"
            and not release.below_k
        )
        assert release.mechanism == "sparse_vector+discrete_laplace" and release.delta_track_day == pytest.approx(1e-6)
        assert release.epsilon_track_day == pytest.approx(account.epsilon) == pytest.approx(2.0)
        wire_from_release(release)  # valid under the one wire schema
    periods = [(r.period_start_s, r.period_end_s) for r, _ in released]
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(periods))  # groups never overlap
    assert strict.ledger.spent(utc_day(DAY0)) == pytest.approx(account.epsilon)
    assert account.threshold > account.margin >= 0


def test_strict_mode_releases_after_the_noisy_test_passes_and_never_below_k(tmp_path, monkeypatch):
    strict = releaser(tmp_path, mode="strict", k=5)
    bounds = Bounds(60.0, (4, 3, 6), 1)
    account = strict.account(bounds)
    threshold = account.threshold  # the threshold noise is scripted to 0 below
    noisy_sizes = iter([threshold - 1, threshold + 10, threshold])  # what the test sees for the three groups below
    monkeypatch.setattr(account.threshold_noise, "count", lambda value: value)
    monkeypatch.setattr(account.query_noise, "count", lambda value: next(noisy_sizes))

    def group(size, end):
        return CellTotals("group", "west", DAY0, DAY0 + end, True, size, (0,) * 9, (0, 0, 0), 0, 0)

    assert strict.release(group(9, 60), bounds) is None  # 9 true people, but the noisy size is below k + margin
    assert (
        strict.release(group(4, 120), bounds) is None
    )  # the noisy test passes; the hard rule refuses a true size below k
    release = strict.release(group(5, 180), bounds)
    assert (
        release is not None
        and release.occupancy >= 5
        and (release.period_start_s, release.period_end_s) == (DAY0, DAY0 + 180)
    )
    assert strict.release(group(6, 240), bounds) is None  # the released group is over: its start is stale


def test_strict_mode_without_groups_releases_nothing_and_says_so(tmp_path):
    strict = releaser(tmp_path, mode="strict")
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0))
    bounder.observe(DAY0, [(i, record(5)) for i in range(20)])
    cells = bounder.flush()
    assert [strict.release(cell, Bounds(60.0, (4, 3, 6), 0)) for cell in cells] == [None] * len(cells)
    assert strict.strict_without_groups and strict.ledger.spent(utc_day(DAY0)) == 0


def members(bounder: ContributionBounder) -> set[int]:
    group = bounder._groups.get("west")
    return group.members if group else set()


@settings(max_examples=30, deadline=None)
@given(
    stays=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 7200), st.integers(10, 3600)), min_size=1, max_size=60),
    groups_per_day=st.integers(1, 3),
    close_every=st.integers(1, 5),
)
def test_a_track_joins_at_most_l_groups_a_day_however_often_groups_close(stays, groups_per_day, close_every):
    bounder = ContributionBounder(ZONES[:1], ContributionSettings(window_s=60.0, groups_per_day=groups_per_day))
    joined: dict[int, int] = {}
    windows = 0
    for second in range(0, 7200 + 3600, 20):
        present = list(
            {track: record(5) for track, start, length in stays if start <= second < start + length}.items()
        )  # once per frame
        before = {track: track in members(bounder) for track, _ in present}
        for cell in bounder.observe(DAY0 + second, present):
            if cell.tier == "group":
                windows += 1
                if windows % close_every == 0:
                    bounder.close_group(cell.zone_id, cell.period_start_s, cell.period_end_s)
        for track, _ in present:
            if not before[track] and track in members(bounder):
                joined[track] = joined.get(track, 0) + 1
    assert all(count <= groups_per_day for count in joined.values()), joined


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"strict_delta": 0.0}, "strict_delta"),
        ({"strict_delta": 0.01}, "strict_delta"),
        ({"strict_test_share": 1.0}, "strict_test_share"),
    ],
)
def test_bad_strict_settings_are_refused(tmp_path, changes, message):
    cells = releaser(tmp_path)
    with pytest.raises(ValueError, match=message):
        cells.reconfigure(AggregatorSettings(**{**cells.settings.__dict__, "mode": "strict", **changes}))
