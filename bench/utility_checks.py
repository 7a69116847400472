"""Two parts of bench/privacy_utility.py that need more than one release per span of totals:

- strict mode end to end: the anonymizer forms each zone's pending group (groups_per_day per lineage), every window
  end offers it to the aggregator's sparse-vector test, a released group restarts the zone's group (TrueTotals.
  group_released), so each draw re-runs the anonymizer's side; truth = distinct true people in the zone over the
  group's period;
- exactly once over a day: every (tier, zone, period) cell of the day released in segments that never overlap, each
  with the coverage an independent count of the observed ticks gives, and a span offered again after a restart
  acknowledged as a duplicate without a new draw.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import utility_workloads as wl
from utility_release import STORE_DIR, observed, people_index, processes, run_totals

from privacy_vision.core.release.grid import DAY_S, PRESENCE_KIND, SITE_ZONE, TIERS, Grid
from privacy_vision.core.release.mechanisms import ReleaseSettings, StrictAccount
from privacy_vision.core.release.presence import PresenceSettings
from privacy_vision.core.release.releaser import DUPLICATE, RELEASED, Releaser
from privacy_vision.core.release.store import ReleaseStore
from privacy_vision.core.release.totals import TotalsSettings

STRICT_GROUPS_PER_DAY = 1  # a second group per lineage doubles the noise scale and nearly doubles the margin


@dataclass
class StrictScore:
    groups: int
    median_minutes: float
    accuracy: float
    bias: float
    coverage: float  # share of released sizes whose interval holds the true size
    covered: float  # share of the zones' observed time inside a released group


def run_strict(workload: wl.Workload, settings: ReleaseSettings) -> StrictScore:
    """One draw of strict mode over the workload (module doc)."""
    totals_settings = TotalsSettings(groups_per_day=STRICT_GROUPS_PER_DAY)
    released = []
    with tempfile.TemporaryDirectory(dir=STORE_DIR) as folder:
        store = ReleaseStore(Path(folder) / "release.sqlite", settings.daily_epsilon_cap)
        releasers: dict[int, Releaser] = {}

        def on_closed(index: int, totals, closed: list) -> None:
            releaser = releasers.setdefault(index, Releaser(settings, store, lambda: str(uuid.uuid4())))
            for item in closed:
                outcome = releaser.release(item, totals_settings.context)
                if outcome.group_released:
                    totals.group_released(*outcome.group_released)
                    released.append(outcome.release)

        try:
            run_totals(workload, observed(workload.device, workload), totals_settings, on_closed)
        finally:
            store.close()
    people = people_index(workload)
    true = np.array([len(people.inside(r.zone_id, r.period_start_s, r.period_end_s)) for r in released], dtype=float)
    shown = np.array([r.values["size"].value for r in released])
    inside = [
        max(low, r.floor) <= t <= max(high, r.floor)
        for r, t in zip(released, true)
        for low, high in [r.values["size"].interval()]
    ]
    span = (workload.end_s - workload.start_s) * len(workload.zones)
    return StrictScore(
        len(released),
        float(np.median([(r.period_end_s - r.period_start_s) / 60 for r in released])) if released else math.nan,
        1.0 - np.abs(shown - true).sum() / max(true.sum(), 1) if released else 0.0,
        float((shown - true).mean()) if released else math.nan,
        float(np.mean(inside)) if released else math.nan,
        sum(r.period_end_s - r.period_start_s for r in released) / span,
    )


def strict_threshold(settings: ReleaseSettings) -> tuple[int, float, float]:
    """(test threshold k + margin, ε per stitched-track-day, δ) of strict mode at these settings."""
    account = StrictAccount(settings, STRICT_GROUPS_PER_DAY, Grid().window_s)
    return account.threshold, account.epsilon_per_track_day, account.delta


def observed_ticks(workload: wl.Workload, start: float, end: float) -> int:
    """Ticks (1 s) in [start, end) that a device frame holds (a frame at f holds f ≤ t < f + max_frame_gap_s) within
    a running process: counted from the frame stamps, independently of the integrator."""
    gap = PresenceSettings().max_frame_gap_s
    stamps = np.array([f.stamp_s for f in observed(workload.device, workload)])
    ticks = np.arange(math.ceil(start), math.ceil(end))
    latest = np.searchsorted(stamps, ticks, side="right") - 1
    held = (latest >= 0) & (ticks - stamps[np.clip(latest, 0, None)] < gap)
    running = np.zeros(len(ticks), dtype=bool)
    for first, last in processes(workload):
        running |= (ticks >= first) & (ticks < last)
    return int((held & running).sum())


def observed_seconds(workload: wl.Workload) -> float:
    """Seconds between consecutive device frames at most max_frame_gap_s apart, within each process (the events'
    observed time), counted from the frame stamps."""
    gap = PresenceSettings().max_frame_gap_s
    stamps = np.array([f.stamp_s for f in observed(workload.device, workload)])
    total = 0.0
    for first, last in processes(workload):
        steps = np.diff(stamps[(stamps >= first) & (stamps < last)])
        total += float(steps[(steps > 0) & (steps <= gap)].sum())
    return total


def exactly_once(workload: wl.Workload, draw) -> list[str]:
    """The day's cells against one draw's releases: released once in non-overlapping segments, coverage as counted."""
    grid = Grid()
    spans: dict[tuple, list[tuple[float, float, float]]] = {}
    for key, coverage in draw.coverage.items():
        kind, tier, zone, period, start, end = key
        spans.setdefault((kind, tier, zone, period), []).append((start, end, coverage))
    expected = [
        (PRESENCE_KIND, tier, zone.zone_id, period)
        for tier in TIERS
        for zone in workload.zones
        for period in np.arange(workload.start_s, workload.end_s, grid.period_s(tier))
    ] + [("events", "day", zone, workload.start_s) for zone in (*[z.zone_id for z in workload.zones], SITE_ZONE)]
    missing = [key for key in expected if key not in spans]
    overlaps = 0
    mismatched = []
    partial = 0
    for key in expected:
        segments = sorted(spans.get(key, []))
        overlaps += sum(a[1] > b[0] for a, b in itertools.pairwise(segments))
        kind, tier, _, period = key
        length = grid.period_s(tier) if kind == PRESENCE_KIND else DAY_S
        counted = (
            observed_ticks(workload, period, period + length) if kind == PRESENCE_KIND else observed_seconds(workload)
        ) / length
        stated = sum(coverage for _, _, coverage in segments)
        partial += stated < 1 - 1e-9
        if abs(stated - counted) > 1e-9:
            mismatched.append((key, stated, counted))
    lines = [
        f"- cells of the day: {len(expected)} expected (windows, hours and the day per zone; footfall per zone and "
        f"site), {len(expected) - len(missing)} released, in {sum(len(v) for v in spans.values())} segments; "
        f"{overlaps} overlapping segments; {partial} cells with coverage < 1 (the outage and the restart)",
        f"- coverage (the sum over a cell's segments) equal to the share of the period observed, counted independently "
        f"from the frame stamps, in {len(expected) - len(mismatched)} of {len(expected)} cells",
    ]
    if missing:
        lines.append(f"- not released: {missing[:5]}{' …' if len(missing) > 5 else ''}")
    if mismatched:
        lines.append(f"- coverage differs: {mismatched[:3]}")
    if draw.reoffered:
        verdict = "acknowledged as a duplicate, no new draw" if draw.reoffered == DUPLICATE else draw.reoffered
        lines.append(f"- the first process's last span offered again to the restarted releaser: {verdict}")
    lines.append(
        f"- releases: {draw.outcomes.get(RELEASED, 0)} released"
        + "".join(f", {n} {status}" for status, n in draw.outcomes.items() if status != RELEASED)
    )
    return lines
