"""Release model v3: identity-free presence (one unit per body and tick whatever the tracker does), events per stitched
track, each span released once across restarts, lifecycle cycles and clock steps, unbiased values with intervals
that cover, and bad settings refused."""

from __future__ import annotations

import itertools
import uuid

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.events import EventSettings
from privacy_vision.core.release.grid import DAY_S, HOUR_S, SITE_ZONE, Grid
from privacy_vision.core.release.lineage import LineageSettings, TrackPoint
from privacy_vision.core.release.mechanisms import ReleaseSettings
from privacy_vision.core.release.presence import PresenceSettings, PresenceTotals
from privacy_vision.core.release.releaser import DUPLICATE, RELEASED, Releaser
from privacy_vision.core.release.store import ReleaseStore
from privacy_vision.core.release.totals import TotalsSettings, TrueTotals

ZONES = [Zone(name, box(10 * i, 0, 10 * i + 10, 10)) for i, name in enumerate(("west", "centre", "east"))]
DAY0 = 1_790_000_000.0 - 1_790_000_000.0 % DAY_S  # a UTC midnight
STEPS = PresenceSettings().weight_steps


def totals_settings(window_s: float = 60.0, **changes) -> TotalsSettings:
    return TotalsSettings(grid=Grid(window_s=window_s), **changes)


def presence(closed: list, tier: str, zone: str | None = None) -> list[PresenceTotals]:
    return [
        t for t in closed if isinstance(t, PresenceTotals) and t.tier == tier and (zone is None or t.zone_id == zone)
    ]


def walk(totals: TrueTotals, start: float, seconds: float, people, step: float = 0.5) -> list:
    """Frames every `step` s; people(t) -> [(track key, x, y)]."""
    closed = []
    for t in np.arange(start, start + seconds, step):
        closed += totals.observe(DAY0 + t, [TrackPoint(k, x, y, "E") for k, x, y in people(t)])
    return closed


def test_occupancy_is_people_present_on_average_and_a_duplicate_track_counts_once():
    totals = TrueTotals(ZONES, [], totals_settings(), DAY0)
    # Two people all the time, a third for the first 30 s; the first has a duplicate box 0.1 m away throughout.
    closed = walk(totals, 0, 61, lambda t: [(1, 5, 5), (2, 5.1, 5), (3, 2, 2)] + ([(4, 8, 8)] if t < 30 else []))
    (window,) = presence(closed, "window", "west")
    assert window.observed_ticks == 60
    assert window.units == (2 * 60 + 30) * STEPS  # 2.5 people present on average
    assert all(t.units == 0 for t in presence(closed, "window") if t.zone_id != "west")


def test_hours_and_days_are_exactly_the_sums_of_their_windows():
    totals = TrueTotals(ZONES, [], totals_settings(window_s=600.0), DAY0)
    closed = walk(totals, 0, 3 * HOUR_S, lambda t: [(1, (t / 100) % 30, 5)], step=2.0)
    closed += totals.flush(DAY0 + 3 * HOUR_S)
    for zone in ZONES:
        windows, hours = presence(closed, "window", zone.zone_id), presence(closed, "hour", zone.zone_id)
        for hour in hours:
            inside = [w for w in windows if hour.segment_start_s <= w.segment_start_s < hour.segment_end_s]
            assert hour.units == sum(w.units for w in inside) and hour.observed_ticks == sum(
                w.observed_ticks for w in inside
            )
        (day,) = presence(closed, "day", zone.zone_id)
        assert day.units == sum(h.units for h in hours)


def test_an_outage_still_closes_every_cell_on_the_clock_with_its_coverage():
    totals = TrueTotals(ZONES, [], totals_settings(), DAY0)
    closed = walk(totals, 0, 90, lambda t: [(1, 5, 5)])
    for minute in range(2, 10):  # no frame for 8 minutes: the clock alone closes the windows
        closed += totals.advance(DAY0 + 60 * minute + 5)
    windows = presence(closed, "window", "west")
    assert [w.segment_start_s - DAY0 for w in windows] == [60 * i for i in range(9)]  # each once
    assert windows[0].observed_ticks == 60 and windows[1].observed_ticks == 32  # the frame held 2 s after the last
    assert all(w.observed_ticks == 0 and w.units == 0 for w in windows[2:])


def test_a_clock_stepped_back_never_integrates_time_twice():
    totals = TrueTotals(ZONES, [], totals_settings(), DAY0)
    closed = walk(totals, 0, 125, lambda t: [(1, 5, 5)])
    frontier = totals.presence.frontier_s
    closed += walk(totals, 30, 60, lambda t: [(2, 5, 5)])  # stamps an hour... half a minute behind
    assert totals.presence.frontier_s == frontier  # nothing integrated while the stamps are behind
    closed += walk(totals, 125, 60, lambda t: [(1, 5, 5)])
    starts = [w.segment_start_s for w in presence(closed, "window", "west")]
    assert len(starts) == len(set(starts))


@settings(max_examples=40, deadline=None)
@given(
    path=st.lists(st.tuples(st.floats(0.5, 29.5), st.floats(0.5, 9.5)), min_size=2, max_size=40),
    fragment_every=st.integers(1, 8),
    duplicate=st.booleans(),
    reuse_keys=st.booleans(),
    restart_at=st.integers(0, 40),
)
def test_one_body_adds_at_most_one_unit_per_tick_whatever_the_tracker_does(
    path, fragment_every, duplicate, reuse_keys, restart_at
):
    """D vs D + a body whose track breaks every few frames (keys new or reused), with a duplicate box at half the
    same-body radius, through a restart: every tier moves by at most weight_steps per tick the body was there."""
    radius = PresenceSettings().same_body_radius_m
    others = [(900 + i, 40.0 + i, 50.0) for i in range(2)]  # far from the body (not in any zone)

    def run(with_body: bool) -> list:
        totals, closed = TrueTotals(ZONES, [], totals_settings(), DAY0), []
        for frame, (x, y) in enumerate(path):
            t = DAY0 + 7.0 * frame
            if frame == restart_at:  # a respawn: a new process, new keys, nothing kept
                closed += totals.flush(t)
                totals = TrueTotals(ZONES, [], totals_settings(), t)
            body = []
            if with_body:
                key = frame // fragment_every if reuse_keys else 1000 + frame // fragment_every
                body = [(key, x, y)] + ([(key + 500, x + radius / 2, y)] if duplicate else [])
            closed += totals.observe(t, [TrackPoint(k, px, py, "E") for k, px, py in others + body])
        return closed + totals.flush(DAY0 + 7.0 * len(path))

    base, plus = run(False), run(True)
    assert [(t.tier, t.zone_id, t.segment_start_s) for t in presence(base, "window")] == [
        (t.tier, t.zone_id, t.segment_start_s) for t in presence(plus, "window")
    ]
    ticks_present = len(path) * PresenceSettings().max_frame_gap_s  # frames 7 s apart: each holds max_frame_gap_s
    for tier in ("window", "hour", "day"):
        moved = sum(
            sum(abs(a - b) for a, b in zip(p.bins, q.bins)) for p, q in zip(presence(base, tier), presence(plus, tier))
        )
        assert moved <= STEPS * ticks_present, (tier, moved)


def test_footfall_counts_a_lineage_in_at_most_m_zones_a_day_and_the_site_once():
    totals = TrueTotals(ZONES, [], totals_settings(events=EventSettings(zones_per_day=2)), DAY0)
    closed = walk(totals, 0, 120, lambda t: [(1, 0.5 + t / 4, 5)])  # walks through all three zones
    closed += totals.flush(DAY0 + 120)
    footfall = {e.zone_id: e.footfall for e in closed if hasattr(e, "footfall")}
    assert footfall == {"west": 1, "centre": 1, "east": 0, SITE_ZONE: 1}


def test_a_track_born_where_one_was_just_lost_continues_its_lineage():
    totals = TrueTotals(ZONES, [], totals_settings(), DAY0)
    closed = walk(totals, 0, 20, lambda t: [(1, 5, 5)] if t < 10 else [(2, 5.3, 5)])  # re-detected 0.3 m on
    closed += walk(totals, 20, 10, lambda t: [(3, 25, 5)])  # a different person far away
    closed += totals.flush(DAY0 + 30)
    footfall = {e.zone_id: e.footfall for e in closed if hasattr(e, "footfall")}
    assert footfall["west"] == 1 and footfall[SITE_ZONE] == 2 and totals.lineages.stitched == 1


def test_staff_exclusion_areas_count_nothing_and_overlapping_zones_are_refused():
    counter = Zone("counter", box(0, 0, 3, 3))
    totals = TrueTotals(ZONES, [counter], totals_settings(), DAY0)
    closed = walk(totals, 0, 61, lambda t: [(1, 1, 1), (2, 5, 5)]) + totals.flush(DAY0 + 61)
    assert presence(closed, "window", "west")[0].units == 60 * STEPS
    assert {e.zone_id: e.footfall for e in closed if hasattr(e, "footfall")}["west"] == 1
    with pytest.raises(ValueError, match="overlap"):
        TrueTotals([*ZONES, Zone("both", box(5, 0, 15, 10))], [], totals_settings(), DAY0)


def make_releaser(store: ReleaseStore, **changes) -> Releaser:
    return Releaser(ReleaseSettings(**changes), store, lambda: str(uuid.uuid4()))


@settings(max_examples=15, deadline=None)
@given(
    operations=st.lists(
        st.sampled_from(["frames", "restart", "lifecycle", "step_back", "outage", "reoffer"]), max_size=12
    )
)
def test_a_released_span_never_reappears_across_restarts_lifecycle_cycles_and_clock_steps(tmp_path_factory, operations):
    store = ReleaseStore(tmp_path_factory.mktemp("store") / "releases.sqlite", 100.0)
    settings_ = totals_settings(window_s=60.0)
    releaser, clock, offset = make_releaser(store), 0.0, 0.0
    totals = TrueTotals(ZONES, [], settings_, DAY0)
    offered: list = []

    def hand_over(closed):
        for item in closed:
            outcome = releaser.release(item, settings_.context)
            assert outcome.status in (RELEASED, DUPLICATE)
            offered.append(item)

    for operation in [*operations, "frames"]:
        if operation == "restart":
            hand_over(totals.flush(DAY0 + clock - offset))
            totals, releaser = TrueTotals(ZONES, [], settings_, DAY0 + clock - offset), make_releaser(store)
        elif operation == "step_back":
            offset += 45.0
        elif operation == "lifecycle":
            releaser.reconfigure(releaser.settings)
        elif operation == "outage":
            clock += 200.0
            hand_over(totals.advance(DAY0 + clock - offset))
        elif operation == "reoffer" and offered:
            assert releaser.release(offered[-1], settings_.context).status == DUPLICATE
        else:
            hand_over(walk(totals, clock - offset, 70.0, lambda t: [(1, 5, 5), (2, 15, 5)], step=1.0))
            clock += 70.0
    hand_over(totals.flush(DAY0 + clock - offset))
    rows = store._db.execute("SELECT kind, tier, zone, instance, segment_start, segment_end FROM released").fetchall()
    for a, b in itertools.combinations(rows, 2):
        if a[:4] == b[:4]:
            assert a[5] <= b[4] or b[5] <= a[4], (a, b)


def test_released_values_are_unbiased_and_their_intervals_cover():
    """The same hour (with its windows, so the hour combines its own noise with theirs) released 150 times: the mean
    of each value is within 4 standard errors of the truth and the 95% intervals cover at least 90% of the time."""
    settings_ = totals_settings(window_s=900.0)
    totals = TrueTotals(ZONES[:1], [], settings_, DAY0)
    closed = walk(totals, 0, HOUR_S + 2, lambda t: [(1, 5, 5), (2, 6, 6)] + ([(3, 2, 2)] if t < 1800 else []), step=2.0)
    truth = {"occupancy": 2.5}
    values: dict[str, list] = {}
    for _ in range(150):
        store = ReleaseStore(":memory:", 100.0)
        releaser = make_releaser(store, epsilon_per_presence_hour=3.0)
        for item in closed:
            outcome = releaser.release(item, settings_.context)
            if isinstance(item, PresenceTotals) and item.tier == "hour":
                estimate = outcome.release.values["occupancy"]
                values.setdefault("occupancy", []).append((estimate.value, *estimate.interval()))
    drawn = np.array(values["occupancy"])
    standard_error = drawn[:, 0].std() / np.sqrt(len(drawn))
    assert abs(drawn[:, 0].mean() - truth["occupancy"]) < 4 * standard_error + 1e-9
    covered = np.mean((drawn[:, 1] <= truth["occupancy"]) & (truth["occupancy"] <= drawn[:, 2]))
    assert covered >= 0.9


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"epsilon_per_presence_hour": 0.0}, "epsilon_per_presence_hour"),
        ({"presence_tier_shares": (1.0, 0.0, 1.0)}, "presence_tier_shares"),
        ({"event_metric_shares": (0.0, 0.0, 0.0)}, "event_metric_shares"),
        ({"k": 0}, "k must be"),
        ({"daily_epsilon_cap": 0.1}, "daily_epsilon_cap"),
        ({"mode": "loose"}, "mode must be"),
        ({"strict_delta": 0.01}, "strict_delta"),
    ],
)
def test_bad_release_settings_are_refused_and_the_old_ones_kept(tmp_path, changes, message):
    releaser = make_releaser(ReleaseStore(tmp_path / "r.sqlite", 100.0))
    with pytest.raises(ValueError, match=message):
        releaser.reconfigure(ReleaseSettings(**changes))
    assert releaser.settings == ReleaseSettings()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"grid": Grid(window_s=7.0)}, "window_s must divide an hour"),
        ({"grid": Grid(window_s=60.0, tick_s=7.0)}, "tick_s must divide"),
        ({"presence": PresenceSettings(weight_steps=0)}, "weight_steps"),
        ({"lineage": LineageSettings(dwell_thresholds_s=(60.0, 30.0))}, "dwell_thresholds_s"),
        ({"events": EventSettings(zones_per_day=0)}, "zones_per_day"),
        ({"groups_per_day": -1}, "groups_per_day"),
    ],
)
def test_bad_totals_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        TotalsSettings(**changes).validate()


def test_tentative_tracks_count_in_presence_by_their_weight_never_in_events_and_once_per_body():
    totals = TrueTotals(ZONES, [], totals_settings(), DAY0)
    closed = []
    for t in np.arange(0, 61, 0.5):
        closed += totals.observe(
            DAY0 + t,
            [
                TrackPoint(1, 5, 5, "E", 0.9, True),
                TrackPoint(2, 5.1, 5, "E", 0.6, False),  # the same body, tentative: the heavier one counts
                TrackPoint(3, 15, 5, "none", 0.4, False),  # a person seen only at low scores
            ],
        )
    closed += totals.flush(DAY0 + 61)
    west, centre = presence(closed, "window", "west")[0], presence(closed, "window", "centre")[0]
    assert west.units == 60 * 9 and centre.units == 60 * 4  # weights 0.9 and 0.4 at 10 steps, per tick
    footfall = {e.zone_id: e.footfall for e in closed if hasattr(e, "footfall")}
    assert footfall["west"] == 1 and footfall["centre"] == 0 and footfall[SITE_ZONE] == 1
