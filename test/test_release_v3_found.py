"""What the issue-19 benchmarks found in the release core, as tests (mended)."""

from __future__ import annotations

import itertools

from shapely.geometry import box

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.grid import NO_DIRECTION, Context, Grid
from privacy_vision.core.release.mechanisms import ReleaseSettings
from privacy_vision.core.release.presence import Body, PresenceIntegrator, PresenceSettings
from privacy_vision.core.release.releaser import RELEASED, Releaser
from privacy_vision.core.release.store import ReleaseStore


def test_a_day_with_an_unobserved_hour_still_uses_its_hours(tmp_path):
    grid, presence = Grid(window_s=900.0, tick_s=60.0), PresenceSettings(max_frame_gap_s=120.0)
    integrator = PresenceIntegrator([Zone("hall", box(0, 0, 10, 10))], grid, presence, start_s=0.0)
    closed = []
    for stamp in range(0, 86400, 60):
        if 3540 <= stamp < 7200:  # camera outage: the hour 01:00-02:00 observes nothing (a frame holds 120 s)
            closed += integrator.advance(stamp)
        else:
            closed += integrator.observe(stamp, [Body(5.0, 5.0, "hall", NO_DIRECTION, "short")])
    closed += integrator.advance(86400 + presence.max_frame_gap_s)
    store = ReleaseStore(tmp_path / "release.sqlite", 2.0)
    counter = itertools.count()
    releaser = Releaser(ReleaseSettings(), store, lambda: f"release-{next(counter)}")
    context = Context(grid, presence.weight_steps, 3, 0)
    outcomes = [(totals, releaser.release(totals, context)) for totals in closed]
    store.close()
    assert all(outcome.status == RELEASED for _, outcome in outcomes)
    unobserved = [t for t, _ in outcomes if t.tier == "hour" and not t.observed_ticks]
    assert len(unobserved) == 1  # the outage hour, released with coverage 0
    (day,) = [outcome.release for totals, outcome in outcomes if totals.tier == "day"]
    # Its own draw and the 23 observed hours' noise: more than the one own term.
    assert len(day.values["occupancy"].terms) > 1
