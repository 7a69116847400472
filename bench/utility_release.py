"""The v3 release path as bench/privacy_utility.py runs it: the anonymizer's side (TrueTotals) fed a workload's frames
process by process (a restart: flush, then a new TrueTotals), cached in bench_out/; the aggregator's side (a Releaser
per process on one ReleaseStore); and the truth each released span is scored against.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely
import utility_workloads as wl

from privacy_vision.core.release.estimates import Estimate
from privacy_vision.core.release.events import EventSettings, EventTotals
from privacy_vision.core.release.grid import DWELL_LABELS, HEADING_LABELS, PRESENCE_KIND, SITE_ZONE
from privacy_vision.core.release.lineage import LineageSettings, TrackPoint
from privacy_vision.core.release.mechanisms import ReleaseSettings
from privacy_vision.core.release.presence import PresenceSettings, PresenceTotals
from privacy_vision.core.release.releaser import RELEASED, Releaser
from privacy_vision.core.release.store import ReleaseStore
from privacy_vision.core.release.totals import Totals, TotalsSettings, TrueTotals

REPO = wl.REPO
CLOCK_STEP_S = 60.0  # during a gap in the frames the anonymizer's timer closes cells on the clock this often
STORE_DIR = "/dev/shm" if Path("/dev/shm").is_dir() else None  # the store's fsyncs are not what is measured


def processes(workload: wl.Workload) -> list[tuple[float, float]]:
    """(start, end) of each device process: a restart flushes at its first time, the next starts at its second."""
    starts = [workload.start_s] + [second for _, second in workload.restarts]
    ends = [first for first, _ in workload.restarts] + [workload.end_s]
    return list(zip(starts, ends))


def observed(frames: list[wl.Frame], workload: wl.Workload) -> list[wl.Frame]:
    """The frames a device sees: none in an outage or between a process's end and the next one's start."""
    gaps = [*workload.outages, *workload.restarts]
    return [f for f in frames if not any(start <= f.stamp_s < end for start, end in gaps)]


def points(frame: wl.Frame) -> list[TrackPoint]:
    weights = frame.weights.tolist() if frame.weights is not None else [1.0] * len(frame.keys)
    confirmed = frame.confirmed.tolist() if frame.confirmed is not None else [True] * len(frame.keys)
    return [
        TrackPoint(int(k), float(x), float(y), h, float(w), bool(c))
        for k, x, y, h, w, c in zip(
            frame.keys.tolist(), frame.x.tolist(), frame.y.tolist(), frame.headings, weights, confirmed
        )
    ]


def run_totals(
    workload: wl.Workload,
    frames: list[wl.Frame],
    settings: TotalsSettings,
    on_closed: Callable[[int, TrueTotals, list[Totals]], None] | None = None,
) -> list[list[Totals]]:
    """Closed totals per process, in the order the anonymizer hands them over."""
    out = []
    for index, (start, end) in enumerate(processes(workload)):
        totals = TrueTotals(workload.zones, [], settings, start)
        closed: list[Totals] = []

        def hand_over(
            new: list[Totals], totals: TrueTotals = totals, closed: list[Totals] = closed, index: int = index
        ) -> None:
            closed.extend(new)
            if on_closed is not None and new:
                on_closed(index, totals, new)

        clock = start
        for frame in (f for f in frames if start <= f.stamp_s < end):
            while frame.stamp_s - clock > CLOCK_STEP_S:
                clock += CLOCK_STEP_S
                hand_over(totals.advance(clock))
            clock = frame.stamp_s
            hand_over(totals.observe(frame.stamp_s, points(frame)))
        while end - clock > CLOCK_STEP_S:
            clock += CLOCK_STEP_S
            hand_over(totals.advance(clock))
        hand_over(totals.flush(end))
        out.append(closed)
    return out


def cached_totals(workload: wl.Workload, side: str, settings: TotalsSettings) -> list[list[Totals]]:
    """run_totals of the device's (or the truth's) observed frames, cached in bench_out/ under a digest of the frames,
    the settings and the release model's source (the store day takes minutes to integrate)."""
    frames = observed(workload.device if side == "device" else workload.truth, workload)
    digest = hashlib.sha256(repr((side, settings, CLOCK_STEP_S, processes(workload))).encode())
    for path in sorted((REPO / "privacy_vision/core/release").glob("*.py")):
        digest.update(path.read_bytes())
    for frame in frames:  # the input itself, types included (a numpy stamp is not a float stamp)
        digest.update(repr((frame.stamp_s, frame.headings)).encode())
        for array in (frame.keys, frame.x, frame.y, frame.weights, frame.confirmed):
            digest.update(b"-" if array is None else array.tobytes())
    cache = wl.OUT / f"totals_{digest.hexdigest()[:20]}.pickle"
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    started = time.monotonic()
    result = run_totals(workload, frames, settings)
    print(f"[{workload.name}] {side} totals in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    wl.OUT.mkdir(exist_ok=True)
    cache.write_bytes(pickle.dumps(result))
    return result


def exact_settings(zones: int) -> TotalsSettings:
    """The truth's: every body counts (radius 0), no hysteresis, no stitching, no zone bound."""
    return TotalsSettings(
        presence=PresenceSettings(same_body_radius_m=0.0),
        lineage=LineageSettings(stitch_radius_m=0.0, stitch_window_s=0.0, boundary_hysteresis_m=0.0),
        events=EventSettings(zones_per_day=min(100, zones)),
    )


def span_key(totals) -> tuple:
    kind = PRESENCE_KIND if isinstance(totals, PresenceTotals) else "events"
    tier = totals.tier if isinstance(totals, PresenceTotals) else "day"
    return kind, tier, totals.zone_id, totals.period_start_s, totals.segment_start_s, totals.segment_end_s


def truth_of(workload: wl.Workload, device: list[list[Totals]]) -> dict[tuple, dict[str, float]]:
    """True values per released span (see the module doc)."""
    truth: dict[tuple, dict[str, float]] = {}
    steps = PresenceSettings().weight_steps
    exact = cached_totals(workload, "truth", exact_settings(len(workload.zones)))
    for totals in (t for process in exact for t in process if isinstance(t, PresenceTotals)):
        if not totals.observed_ticks:
            continue
        per_person = 1.0 / (steps * totals.observed_ticks)
        width = len(DWELL_LABELS)
        values = {"occupancy": totals.units * per_person}
        if totals.tier == "hour":
            for i, label in enumerate(HEADING_LABELS):
                values[f"heading.{label}"] = sum(totals.bins[i * width : (i + 1) * width]) * per_person
            for j, label in enumerate(DWELL_LABELS):
                values[f"dwell.{label}"] = sum(totals.bins[j::width]) * per_person
        truth[span_key(totals)] = values
    people = people_index(workload)
    for totals in (t for process in device for t in process if isinstance(t, EventTotals)):
        found = people.inside(totals.zone_id, totals.segment_start_s, totals.segment_end_s)
        truth[span_key(totals)] = {"footfall": len(found)}
    return truth


class PeopleIndex:
    """Which true people stood in a zone (or any zone: the site) between two instants, from every true frame."""

    def __init__(self, workload: wl.Workload) -> None:
        frames = workload.truth
        self.stamps = np.concatenate([np.full(len(f.keys), f.stamp_s) for f in frames])
        self.keys = np.concatenate([f.keys for f in frames]).astype(np.int64)
        x, y = np.concatenate([f.x for f in frames]), np.concatenate([f.y for f in frames])
        self.zone = {z.zone_id: shapely.contains_xy(z.polygon, x, y) for z in workload.zones}
        self.zone[SITE_ZONE] = np.any(list(self.zone.values()), axis=0)

    def inside(self, zone_id: str, start_s: float, end_s: float) -> set[int]:
        first, last = np.searchsorted(self.stamps, [start_s, end_s])
        return set(self.keys[first:last][self.zone[zone_id][first:last]].tolist())


class RecordingReleaser(Releaser):
    """The real Releaser, keeping each raw noisy draw (to measure the post-processing gain against a cell's own
    value alone)."""

    def __init__(self, *args, **kwargs) -> None:
        self.draws: dict[str, Estimate] = {}
        super().__init__(*args, **kwargs)

    def _draw(self, noise, true_value: int, noise_id: str) -> Estimate:
        estimate = Releaser._draw(noise, true_value, noise_id)
        self.draws[noise_id] = estimate
        return estimate


@dataclass
class Draw:
    """One noise draw of a whole workload: released values per span, the spans' own occupancy, outcomes."""

    values: dict[tuple, dict[str, Estimate]] = field(default_factory=dict)
    own: dict[tuple, Estimate] = field(default_factory=dict)
    below_k: dict[tuple, bool] = field(default_factory=dict)
    coverage: dict[tuple, float] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    reoffered: str = ""


def release_all(device: list[list[Totals]], settings: ReleaseSettings, context, reoffer: bool) -> Draw:
    """Every closed span through a Releaser per process, all on one store; optionally offer the first process's
    last span again to the next process (a lost acknowledgement): it must come back a duplicate, not a new draw."""
    draw = Draw()
    steps = context.weight_steps
    with tempfile.TemporaryDirectory(dir=STORE_DIR) as folder:
        store = ReleaseStore(Path(folder) / "release.sqlite", settings.daily_epsilon_cap)
        try:
            for index, process in enumerate(device):
                releaser = RecordingReleaser(settings, store, lambda: str(uuid.uuid4()))
                if reoffer and index == 1:
                    draw.reoffered = releaser.release(device[0][-1], context).status
                for totals in process:
                    outcome = releaser.release(totals, context)
                    draw.outcomes[outcome.status] = draw.outcomes.get(outcome.status, 0) + 1
                    release = outcome.release
                    if outcome.status != RELEASED or release is None:
                        continue
                    key = span_key(totals)
                    draw.coverage[key] = release.coverage
                    if not release.values:
                        continue  # nothing observed: released with coverage 0 and no values
                    draw.values[key] = release.values
                    draw.below_k[key] = release.below_k
                    if isinstance(totals, PresenceTotals):
                        own = releaser.draws[f"{release.release_id}/occupancy"]
                        draw.own[key] = own * (1.0 / (steps * totals.observed_ticks))
        finally:
            store.close()
    return draw


_INDEXES: dict[tuple[str, str], PeopleIndex] = {}


def people_index(workload: wl.Workload) -> PeopleIndex:
    """The workload's PeopleIndex, built once (the store day holds five million positions)."""
    key = (workload.name, workload.description)
    if key not in _INDEXES:
        _INDEXES[key] = PeopleIndex(workload)
    return _INDEXES[key]
