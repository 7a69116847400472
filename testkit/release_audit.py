"""Pipeline-level neighbouring-input audit of release model v3 (no rclpy).

The real anonymizer side (TrueTotals: lineages, presence, events) and the real releaser with its durable store run
a ten-hour day twice, on D and on D plus one worst-case person, through an anonymizer respawn, an outage, a
lifecycle cycle and a restart with the clock stepped back an hour (which replays an hour already released). Every
release the run makes is kept with the true totals it was made from; the audit then draws the released values of
the person's scope again and again with the releaser's own OpenDP measurements and lower-bounds ε from how
differently they fall on D and on D' (Clopper-Pearson, Bonferroni over the events tried). Only outputs that the
releaser releases as one noise draw (the finest tier, events) are redrawn; the test checks that this is what the
run released.
"""

from __future__ import annotations

import math
import random
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import beta
from shapely.geometry import box

from privacy_vision.core.geometry import Zone
from privacy_vision.core.release.estimates import Estimate
from privacy_vision.core.release.events import EventTotals
from privacy_vision.core.release.grid import DAY_S, HOUR_S, Grid
from privacy_vision.core.release.lineage import TrackPoint
from privacy_vision.core.release.mechanisms import ReleaseSettings
from privacy_vision.core.release.presence import PresenceSettings, PresenceTotals
from privacy_vision.core.release.releaser import RELEASED, Releaser
from privacy_vision.core.release.store import ReleaseStore
from privacy_vision.core.release.totals import TotalsSettings, TrueTotals

ZONES = [Zone(name, box(10 * i, 0, 10 * i + 10, 10)) for i, name in enumerate("ABCD")]
DAY0 = 1_790_000_000.0 - 1_790_000_000.0 % DAY_S  # a UTC midnight
FRAME_S = 2.0
END_S = 10 * HOUR_S
RESTART_S = 2.5 * HOUR_S
OUTAGE = (3 * HOUR_S, 3 * HOUR_S + 1200.0)
LIFECYCLE = (4 * HOUR_S + 2400.0, 4 * HOUR_S + 3000.0)  # frames dropped while the nodes are inactive
STEP_BACK_AT_S, STEP_BACK_S = 5 * HOUR_S, 3000.0  # a restart with the clock 50 min behind: [4:10, 5:00) comes again
AUDITED_HOUR = (4 * HOUR_S, 5 * HOUR_S)
FAMILY_ERROR = 1e-4  # all Clopper-Pearson bounds of one audit hold together with probability ≥ 1 - 1e-4


def audit_settings() -> tuple[ReleaseSettings, TotalsSettings]:
    """Windows of an hour (so each window release is one noise draw covering a presence-hour) and budgets large
    enough for an audit with 10^5 draws to see near them."""
    release = ReleaseSettings(
        epsilon_per_presence_hour=2.0,
        presence_tier_shares=(0.5, 0.3, 0.2),
        epsilon_events_per_track_day=1.5,
        daily_epsilon_cap=100.0,
    )
    totals = TotalsSettings(grid=Grid(window_s=HOUR_S), presence=PresenceSettings(max_frame_gap_s=3.0))
    return release, totals


def background(rng: random.Random) -> list[list[tuple[float, float]]]:
    """Three people walking slowly in zones B to D all day (never near the audited person)."""
    walkers = []
    for _ in range(3):
        x, y, path = rng.uniform(12, 38), rng.uniform(1, 9), []
        for _ in range(int(END_S / FRAME_S) + 1):
            x = min(39.0, max(12.0, x + rng.uniform(-0.3, 0.3)))
            y = min(9.5, max(0.5, y + rng.uniform(-0.3, 0.3)))
            path.append((x, y))
        walkers.append(path)
    return walkers


def staff_member(t: float) -> list[tuple[int, float, float]]:
    """The presence neighbour: in zone A from 1 h to 9 h, a new track every 40 s (never reused: the tracker's
    keys), and a second, simultaneous track 0.15 m away half of the time (a duplicate box)."""
    if not HOUR_S <= t < 9 * HOUR_S:
        return []
    piece = int(t // 40)
    x, y = 5.0 + 2.0 * math.sin(t / 300.0), 5.0 + 2.0 * math.cos(t / 300.0)
    tracks = [(10_000_000 + piece, x, y)]
    if piece % 2:
        tracks.append((20_000_000 + piece, x + 0.15, y))
    return tracks


def visitor(t: float) -> list[tuple[int, float, float]]:
    """The events neighbour: one unbroken track walking from zone A through D and back, from 6 h to 8 h."""
    if not 6 * HOUR_S <= t < 8 * HOUR_S:
        return []
    phase = (t - 6 * HOUR_S) / HOUR_S  # 0 .. 2
    x = 2.0 + 36.0 * (phase if phase < 1 else 2 - phase)
    return [(30_000_000, x, 5.0)]


@dataclass
class Run:
    """What one run released: every (totals, release) pair, and the releaser's accounts."""

    released: list[tuple[object, object]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)
    releaser: Releaser | None = None
    store: ReleaseStore | None = None


def run_day(neighbour, settings: tuple[ReleaseSettings, TotalsSettings], seed: int = 7) -> Run:
    """One day through the faults, with `neighbour(t)` (or None) added to the background."""
    release_settings, totals_settings = settings
    walkers = background(random.Random(seed))
    folder = Path(tempfile.mkdtemp(prefix="pv-audit-"))
    run = Run()
    store = ReleaseStore(
        folder / "releases.sqlite", release_settings.daily_epsilon_cap, clock=lambda: DAY0 + 12 * HOUR_S
    )
    run.store = store

    def new_releaser() -> Releaser:
        return Releaser(release_settings, store, lambda: str(uuid.uuid4()))

    releaser = new_releaser()

    def hand_over(closed: list) -> None:
        for totals in closed:
            outcome = releaser.release(totals, totals_settings.context)
            run.outcomes.append(outcome.status)
            if outcome.status == RELEASED:
                run.released.append((totals, outcome.release))

    totals = TrueTotals(ZONES, [], totals_settings, DAY0)
    clock = 0.0  # seconds of the day on the device's wall clock
    offset = 0.0  # what the frames' stamps lag behind it (the clock stepped back)
    while clock < END_S:
        if abs(clock - RESTART_S) < FRAME_S / 2:  # anonymizer and aggregator respawn: memory gone, store kept
            hand_over(totals.flush(DAY0 + clock))
            totals, releaser = TrueTotals(ZONES, [], totals_settings, DAY0 + clock), new_releaser()
        if abs(clock - STEP_BACK_AT_S) < FRAME_S / 2:
            # A restart with the clock an hour behind, by an anonymizer that did not learn the released frontier
            # (the node asks the aggregator for it; here it did not get it): the store alone must refuse the hour.
            hand_over(totals.flush(DAY0 + clock))
            offset = STEP_BACK_S
            totals, releaser = TrueTotals(ZONES, [], totals_settings, DAY0 + clock - offset), new_releaser()
        if abs(clock - (STEP_BACK_AT_S + STEP_BACK_S)) < FRAME_S / 2:
            offset = 0.0  # the clock is set right again: stamps jump forward an hour
        stamp = clock - offset
        if OUTAGE[0] <= clock < OUTAGE[1] or LIFECYCLE[0] <= clock < LIFECYCLE[1]:
            if int(clock) % 60 == 0:
                hand_over(totals.advance(DAY0 + stamp))  # cells close on the clock, no frame needed
            if abs(clock - LIFECYCLE[0]) < FRAME_S / 2:
                releaser.reconfigure(release_settings)  # the aggregator's lifecycle cycle: configured again
        else:
            index = int(clock / FRAME_S)
            people = [(n + 1, *walker[index]) for n, walker in enumerate(walkers)]
            people += neighbour(stamp) if neighbour is not None else []
            points = [TrackPoint(key, x, y, "E") for key, x, y in people]
            hand_over(totals.observe(DAY0 + stamp, points))
        clock += FRAME_S
    hand_over(totals.flush(DAY0 + clock - offset))
    run.releaser = releaser
    return run


def single_draw(estimate: Estimate) -> float:
    """The noise scale of a value released as one noise draw times a public factor (what the audit may redraw: the
    factor, units per person and observed tick, is the same on D and D' and changes no likelihood ratio)."""
    (term,) = estimate.terms
    assert term.coefficient > 0
    return term.scale


def presence_scope(run: Run, zone: str = "A") -> dict[tuple, tuple[int, float]]:
    """Window releases of the audited hour in the zone: key -> (true units, noise scale); a span released twice
    (the planted bug) appears twice."""
    scope: dict[tuple, tuple[int, float]] = {}
    for totals, release in run.released:
        if (
            isinstance(totals, PresenceTotals)
            and totals.tier == "window"
            and totals.zone_id == zone
            and totals.segment_start_s < DAY0 + AUDITED_HOUR[1]
            and totals.segment_end_s > DAY0 + AUDITED_HOUR[0]
        ):
            key = ("window", totals.segment_start_s, sum(1 for k in scope if k[1] == totals.segment_start_s))
            scope[key] = (totals.units, single_draw(release.values["occupancy"]))
    return scope


def events_scope(run: Run) -> dict[tuple, tuple[int, float]]:
    """Every footfall release of the day: key (bound instance, zone) -> (true footfall, noise scale)."""
    scope = {}
    for totals, release in run.released:
        if isinstance(totals, EventTotals) and "footfall" in release.values:
            scope[("footfall", totals.bound_instance.split(":")[1], totals.segment_start_s, totals.zone_id)] = (
                totals.footfall,
                single_draw(release.values["footfall"]),
            )
    return scope


def clopper_pearson(successes: int, trials: int, alpha: float) -> tuple[float, float]:
    low = beta.ppf(alpha, successes, trials - successes + 1) if successes > 0 else 0.0
    high = beta.ppf(1 - alpha, successes + 1, trials - successes) if successes < trials else 1.0
    return float(low), float(high)


def epsilon_lower_bound(scope_d: dict, scope_n: dict, noise_of, draws: int) -> float:
    """Redraw every coordinate that differs between D and D' with the releaser's own measurement (noise_of(scale)),
    and test rectangle events {X_i ≥ t_D,i + f (t_D',i - t_D,i)} for f in (0.5, 1, 1.5), in both directions: the
    rectangles at f = 1 reach the full ε of a discrete Laplace shift. A coordinate released under D' only (or under D
    only) counts with the other side's true value 0 at the same scale."""
    keys = sorted(set(scope_d) | set(scope_n), key=str)
    coordinates = []
    for key in keys:
        true_d, scale_d = scope_d.get(key, (0, None))
        true_n, scale_n = scope_n.get(key, (0, None))
        scale = scale_d or scale_n
        if true_d != true_n:
            coordinates.append((true_d, true_n, scale))
    if not coordinates:
        return 0.0
    samples_d = np.array([noise_of(scale).histogram([t_d] * draws) for t_d, _, scale in coordinates])
    samples_n = np.array([noise_of(scale).histogram([t_n] * draws) for _, t_n, scale in coordinates])
    fractions = (0.5, 1.0, 1.5)
    alpha = FAMILY_ERROR / (4 * len(fractions))
    best = 0.0
    for f in fractions:
        thresholds = np.array([t_d + f * (t_n - t_d) for t_d, t_n, _ in coordinates])[:, None]
        up = np.sign(np.array([t_n - t_d for t_d, t_n, _ in coordinates]))[:, None]
        hits_n = int(np.all(up * samples_n >= up * thresholds, axis=0).sum())
        hits_d = int(np.all(up * samples_d >= up * thresholds, axis=0).sum())
        for first, second in ((hits_n, hits_d), (draws - hits_d, draws - hits_n)):
            low, _ = clopper_pearson(first, draws, alpha)
            _, high = clopper_pearson(second, draws, alpha)
            if low > 0 and high > 0:
                best = max(best, math.log(low / high))
    return best
