"""Privacy-utility benchmark of the release model: v2 (track-day unit, noise on every cell of the public
grid, k on noisy values) beside no privacy and the old per-window model, on four workloads.

    .venv/bin/python bench/privacy_utility.py                 # all workloads, 20 noise draws per DP row
    .venv/bin/python bench/privacy_utility.py --runs 5 --hours 2   # quicker look
    .venv/bin/python bench/privacy_utility.py --bounds 10/6/6      # adds a row with a larger L (a busy site)

Truth comes from exact positions and times, person identities, no contribution bound. The device side runs
the real pipeline: the Anonymizer (0.5 m grid, 8 heading sectors, rotating keys) and the
ContributionBounder (L cells per tier per day, hysteresis on crossings) on what the device would see,
then the CellReleaser (OpenDP noise, tier consistency, k on noisy values). Strict mode re-runs the bounder
per draw, since a released group restarts the zone's group. Only the PETS workload's device
side is the real detector and tracker on the video (vtest.avi), so its track identities break like real
ones do; on the simulated shops and the bottleneck the device side is fed the true trajectories, so their
"no privacy" row measures only the grid and the crossing hysteresis, not perception. Zone edges are off
the anonymiser's grid. The bottleneck is a one-way flow: no flow accuracy is reported for it.

Metrics per tier, over all cells c of the tier with a true occupancy (a "< k" cell counts as released 0):
    occupancy accuracy = 1 - Σ_c |released_c - true_c| / Σ_c true_c
    MAE = mean |released_c - true_c|; bias = mean (released_c - true_c); "< k" = share of cells shown as "< k"
    flow accuracy (hour) = 1 - Σ_c true_c · TV(released_c, true_c) / Σ_c true_c (TV = 1 for "< k" or empty)
"""

from __future__ import annotations

import argparse
import math
import pickle
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from scipy import stats
from shapely.geometry import box

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from privacy_vision.core.aggregator import AggregatorSettings, Bounds, CellReleaser, StrictAccount, TrackDayAccount  # noqa: E402
from privacy_vision.core.anonymizer import (  # noqa: E402
    AnonymizedRecord,
    Anonymizer,
    AnonymizerSettings,
    TrackSample,
    direction_sector,
)
from privacy_vision.core.contributions import TIERS, CellTotals, ContributionBounder, ContributionSettings  # noqa: E402
from privacy_vision.core.geometry import Zone  # noqa: E402
from privacy_vision.core.privacy import IntegerNoise, PrivacyLedger  # noqa: E402

SHARED = REPO.parent / "shared"
OUT = REPO / "bench_out"
VELOCITY_WINDOW_S = 1.0  # as the tracker's default velocity_window_s
UNBOUNDED = (10**6, 10**6, 10**6)
STRICT_GROUPS_PER_DAY = (
    1  # strict mode's L: a second group per track doubles the noise scale and nearly doubles the margin
)
Frames = list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]  # (time_s, ids, x_m, y_m)


@dataclass
class Workload:
    """One scenario: zones, the true people per frame and what the tracker reports, to score releases against."""

    name: str
    description: str
    zones: list[Zone]
    truth: Frames
    device: Frames  # what the tracker reports (ids are tracks, not people)
    mixed_directions: bool = True  # False for a one-way flow, where a flow accuracy says nothing


def pets_workload() -> Workload:
    """Ground truth (MOT15, calibrated floor positions) against the real detector + tracker on vtest.avi."""
    import perception

    gt = np.loadtxt(SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt", delimiter=",")
    fps = perception.PETS_FPS
    truth = [
        ((frame - 1) / fps, rows[:, 1].astype(int), rows[:, 7], rows[:, 8])
        for frame in np.unique(gt[:, 0])
        for rows in [gt[gt[:, 0] == frame]]
    ]
    _, floor_rows, _ = perception.run_pets("auto")
    rows = np.array(floor_rows, dtype=float)
    device = [
        ((frame - 1) / fps, r[:, 1].astype(int), r[:, 2], r[:, 3])
        for frame in np.unique(rows[:, 0])
        for r in [rows[rows[:, 0] == frame]]
    ]
    zones = [
        Zone("plaza_west", box(-14.8, -12.2, -7.8, 4.2)),
        Zone("plaza_centre", box(-7.8, -12.2, 0.2, 4.2)),
        Zone("plaza_east", box(0.2, -12.2, 6.2, 4.2)),
    ]
    tracks = len(np.unique(rows[:, 1]))
    return Workload(
        "PETS09-S2L1, real tracker on vtest.avi",
        f"{len(np.unique(gt[:, 1]))} people, {tracks} tracks, {len(truth) / fps:.0f} s",
        zones,
        truth,
        device,
    )


def bottleneck_workload() -> Workload:
    path = SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt"
    data = np.loadtxt(path, comments="#")
    scale = 0.01 if any("x/cm" in line for line in path.read_text().splitlines()[:10]) else 1.0
    frames = [
        (frame / 25.0, rows[:, 0].astype(int), rows[:, 2] * scale, rows[:, 3] * scale)
        for frame in np.unique(data[:, 1])[::5]
        for rows in [data[data[:, 1] == frame]]
    ]
    zones = [
        Zone("approach_far", box(-3.2, 3.2, 3.2, 6.7)),
        Zone("approach_near", box(-3.2, 1.2, 3.2, 3.2)),
        Zone("bottleneck_and_exit", box(-3.2, -2.2, 3.2, 1.2)),
    ]
    return Workload(
        "Bottleneck experiment (FZ Jülich)",
        f"{len(np.unique(data[:, 0]))} people, {frames[-1][0]:.0f} s, one-way flow",
        zones,
        frames,
        frames,
        mixed_directions=False,
    )


def shop_workload(layout_name: str, hours: float, arrivals_per_hour: float, staff: int, seed: int) -> Workload:
    import store_day  # JuPedSim is only needed here

    layout = {"store": store_day.STORE, "shop": store_day.SHOP}[layout_name]
    cache = OUT / f"{layout_name}_{hours:g}h_{arrivals_per_hour:g}ph_{staff}staff_seed{seed}.pickle"
    if cache.is_file():
        frames = pickle.loads(cache.read_bytes())
    else:
        started = time.monotonic()
        frames = store_day.simulate(layout, hours * 60.0, arrivals_per_hour, staff, sample_hz=1.0, seed=seed)
        print(f"[{layout_name}] {hours:g} h simulated in {time.monotonic() - started:.0f} s", file=sys.stderr)
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_bytes(pickle.dumps(frames))
    people = len(np.unique(np.concatenate([ids for _, ids, _, _ in frames])))
    title = {"store": "Store day (JuPedSim)", "shop": "Small shop day (JuPedSim)"}[layout_name]
    return Workload(
        title,
        f"{hours:g} h, {people - staff} shoppers (about {arrivals_per_hour:g} an hour), {staff} staff all day, "
        f"{layout.width_m:g} x {layout.depth_m:g} m, {len(layout.zones)} zones",
        layout.zones,
        frames,
        frames,
    )


def velocities(frames: Frames) -> list[dict[int, tuple[float, float]]]:
    """Floor velocity of each id from its position VELOCITY_WINDOW_S earlier (0 at first sight)."""
    history: dict[int, list[tuple[float, float, float]]] = {}
    result = []
    for t, ids, xs, ys in frames:
        current = {}
        for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist()):
            trail = history.setdefault(pid, [])
            trail.append((t, x, y))
            while len(trail) > 1 and t - trail[1][0] >= VELOCITY_WINDOW_S:
                trail.pop(0)
            t0, x0, y0 = trail[0]
            current[pid] = ((x - x0) / (t - t0), (y - y0) / (t - t0)) if t > t0 else (0.0, 0.0)
        result.append(current)
    return result


Records = list[tuple[float, list[tuple[int, AnonymizedRecord]]]]


def frame_records(frames: Frames, device: bool) -> Records:
    """What reaches the bounder each frame: the Anonymizer's records (device) or exact positions (truth)."""
    settings = AnonymizerSettings()
    anonymizer = Anonymizer(settings, now_s=frames[0][0])
    out: Records = []
    for (t, ids, xs, ys), velocity in zip(frames, velocities(frames)):
        if device:
            anonymizer.key.rotate_if_due(t)
            samples = [
                TrackSample(pid, x, y, *velocity[pid], 0.2) for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist())
            ]
            out.append((t, list(zip(ids.tolist(), anonymizer.anonymize_frame(samples)))))
        else:
            out.append(
                (
                    t,
                    [
                        (
                            pid,
                            AnonymizedRecord(
                                str(pid), x, y, "medium", direction_sector(*velocity[pid], 8, settings.min_speed_mps)
                            ),
                        )
                        for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist())
                    ],
                )
            )
    return out


def cells(workload: Workload, contribution: ContributionSettings, device: bool) -> list[CellTotals]:
    """Per-cell totals: exact (truth: exact positions, people, no bound, no hysteresis) or as the device
    computes them (anonymised cells, tracks, bound L, hysteresis)."""
    bounder = ContributionBounder(
        workload.zones,
        contribution if device else replace(contribution, cells_per_day=UNBOUNDED, boundary_hysteresis_m=0.0),
    )
    out: list[CellTotals] = []
    for t, records in frame_records(workload.device if device else workload.truth, device):
        out += bounder.observe(t, records)
    return out + bounder.flush()


@dataclass
class StrictScore:
    """How well strict mode's released groups match the truth of one workload."""

    groups: int
    median_minutes: float
    accuracy: float
    bias: float
    covered: float  # share of the observed time that lies in a released group


def people_in_zones(workload: Workload) -> dict[str, list[set[int]]]:
    """Per zone and truth frame: the people inside (for the true size of a group over any period)."""
    return {
        zone.zone_id: [
            {pid for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist()) if zone.contains(x, y)}
            for _, ids, xs, ys in workload.truth
        ]
        for zone in workload.zones
    }


def run_strict(
    workload: Workload,
    records: Records,
    inside: dict[str, list[set[int]]],
    contribution: ContributionSettings,
    settings: AggregatorSettings,
) -> StrictScore:
    """Strict mode end to end: the bounder forms groups, the releaser tests them, a release restarts the group
    (as the anonymizer node does on /zone_analytics). Truth: distinct people in the zone over each group's period."""
    bounder = ContributionBounder(workload.zones, contribution)
    bounds = Bounds(contribution.window_s, contribution.cells_per_day, contribution.groups_per_day)
    released = []
    with tempfile.TemporaryDirectory() as folder:
        releaser = CellReleaser(
            settings,
            PrivacyLedger(Path(folder) / "ledger.sqlite", settings.daily_epsilon_cap),
            lambda: str(uuid.uuid4()),
            time.time,
        )
        for cell in (cell for t, frame in records for cell in bounder.observe(t, frame)):
            release = releaser.release(cell, bounds)
            if release is not None:
                released.append(release)
                bounder.close_group(release.zone_id, release.period_start_s, release.period_end_s)
        for cell in bounder.flush():  # the run's end: the pending groups get a last test
            release = releaser.release(cell, bounds)
            released += [release] if release else []
        releaser.ledger.close()
    times = np.array([t for t, _, _, _ in workload.truth])
    true = [
        len(
            set().union(
                *inside[r.zone_id][np.searchsorted(times, r.period_start_s) : np.searchsorted(times, r.period_end_s)]
            )
        )
        for r in released
    ]
    shown = np.array([r.occupancy for r in released], dtype=float)
    span = (times[-1] - times[0]) * len(inside)
    return StrictScore(
        len(released),
        float(np.median([(r.period_end_s - r.period_start_s) / 60 for r in released])) if released else math.nan,
        1.0 - np.abs(shown - true).sum() / max(sum(true), 1) if released else 0.0,
        float((shown - np.array(true)).mean()) if released else math.nan,
        sum(min(r.period_end_s, times[-1]) - max(r.period_start_s, times[0]) for r in released) / span,
    )


@dataclass
class TierScore:
    """How well one tier's released cells match the truth of one workload."""

    accuracy: float
    mae: float
    bias: float
    below_k: float
    flow: float | None


def score(truth: dict, released: dict, tier: str, mixed_directions: bool) -> TierScore:
    """released: (zone, period) -> (occupancy, direction histogram or None, below_k)."""
    keys = [key for key in truth if key[0] == tier]
    true = np.array([truth[key].occupancy for key in keys], dtype=float)
    shown = np.array([released[key][0] if key in released else 0 for key in keys], dtype=float)
    below = np.array([released[key][2] if key in released else True for key in keys])
    flow = None
    if tier == "hour" and mixed_directions:
        error = 0.0
        for key, t in zip(keys, true):
            if t == 0:
                continue
            true_hist = np.asarray(truth[key].directions, dtype=float)
            hist = released.get(key, (0, None, True))[1]
            hist = np.zeros_like(true_hist) if hist is None else np.asarray(hist, dtype=float)
            tv = 1.0 if hist.sum() <= 0 else 0.5 * np.abs(hist / hist.sum() - true_hist / true_hist.sum()).sum()
            error += t * tv
        flow = 1.0 - error / true.sum()
    return TierScore(
        1.0 - np.abs(shown - true).sum() / max(true.sum(), 1),
        float(np.abs(shown - true).mean()),
        float((shown - true).mean()),
        float(below.mean()),
        flow,
    )


def keyed(totals: list[CellTotals]) -> dict:
    return {(c.tier, c.zone_id, c.period_start_s): c for c in totals}


def run_v2(device: list[CellTotals], settings: AggregatorSettings, bounds: Bounds) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        releaser = CellReleaser(
            settings,
            PrivacyLedger(Path(folder) / "ledger.sqlite", settings.daily_epsilon_cap),
            lambda: str(uuid.uuid4()),
            time.time,
        )
        out = {}
        for totals in device:
            release = releaser.release(totals, bounds)
            hist = (
                [release.direction_counts[label] for label in release.direction_counts]
                if release.direction_counts
                else None
            )
            out[(totals.tier, totals.zone_id, totals.period_start_s)] = (release.occupancy, hist, release.below_k)
        releaser.ledger.close()
        return out


def run_v1(truth_windows: list[CellTotals], device_windows: list[CellTotals], draws: int) -> list[TierScore]:
    """The old per-window model on its own 60 s windows: a release needs ≥ k true people and a noisy
    occupancy (ε 0.4 of 1) of k plus the margin for δ 1e-5; 1 ε per zone-window charged to a 2000 cap."""
    noise = IntegerNoise("discrete_laplace", 0.4)
    support, probabilities = noise.distribution
    tails = np.cumsum(probabilities[::-1])[::-1]
    threshold = 5 + int(support[(support >= 0) & (tails <= 1e-5)].min())
    truth = keyed(truth_windows)
    scores = []
    for _ in range(draws):
        released, spent = {}, {}
        for c in device_windows:
            day = int(c.period_start_s // 86400)
            spent[day] = spent.get(day, 0.0) + 1.0
            noisy = noise.count(c.occupancy)
            ok = spent[day] <= 2000 and c.occupancy >= 5 and noisy >= threshold
            released[(c.tier, c.zone_id, c.period_start_s)] = (max(0, noisy) if ok else 0, None, not ok)
        scores.append(score(truth, released, "window", mixed_directions=False))
    return scores


def summary(values: list[float]) -> str:
    array = np.asarray(values, dtype=float)
    if not len(array):
        return "-"
    if len(array) < 2 or np.allclose(array, array[0]):
        return f"{array.mean():.1f}"
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return f"{array.mean():.1f} ± {half:.1f}"


def row_cells(name: str, scores: dict[str, list[TierScore]], epsilons: tuple[str, str]) -> str:
    parts = [name]
    for tier in TIERS:
        tier_scores = scores.get(tier)
        if not tier_scores:
            parts.append("n/a")
            continue
        text = (
            f"{summary([s.accuracy * 100 for s in tier_scores])} / {summary([s.mae for s in tier_scores])} / "
            f"{summary([s.bias for s in tier_scores])} / {summary([s.below_k * 100 for s in tier_scores])}"
        )
        parts.append(text)
    flows = scores.get("hour")
    parts.append(summary([s.flow * 100 for s in flows]) if flows and flows[0].flow is not None else "n/a")
    parts += list(epsilons)
    return "| " + " | ".join(parts) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="noise draws per DP row (default 20)")
    parser.add_argument("--hours", type=float, default=8.0, help="opening hours of the simulated shop days (default 8)")
    parser.add_argument("--store-arrivals", type=float, default=600.0, help="store shoppers an hour (default 600)")
    parser.add_argument(
        "--shop-arrivals",
        type=float,
        default=30.0,
        help="small-shop visitors an hour (default 30: 20 to 40 over the day)",
    )
    parser.add_argument("--workloads", default="shop,store,pets,bottleneck")
    parser.add_argument(
        "--tracks-per-person",
        type=float,
        default=None,
        help="V for the per-person-day column (default: measured on PETS)",
    )
    parser.add_argument("--markdown", type=Path, default=REPO / "docs/privacy_utility.md")
    parser.add_argument(
        "--bounds",
        action="append",
        default=[],
        metavar="W/H/D",
        help="extra v2 rows at the default ε with this L per tier (repeatable), e.g. 10/6/6 for a busy site",
    )
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2 for an interval")
    if args.hours <= 0 or args.store_arrivals <= 0 or args.shop_arrivals <= 0:
        parser.error("--hours and the arrival rates must be > 0")
    try:
        extra_bounds = [tuple(int(n) for n in text.split("/")) for text in args.bounds]
        for extra in extra_bounds:
            ContributionSettings(cells_per_day=extra).validate()
    except ValueError as error:
        parser.error(f"--bounds must be three integers ≥ 1 as W/H/D: {error}")
    chosen = args.workloads.split(",")
    unknown = set(chosen) - {"shop", "store", "pets", "bottleneck"}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}")
    needed = [SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt", SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        parser.error(
            f"the real workloads are missing: {', '.join(missing)} (the shared data folder must sit beside the repository)"
        )

    builders = {
        "shop": lambda: shop_workload("shop", args.hours, args.shop_arrivals, 1, 7),
        "store": lambda: shop_workload("store", args.hours, args.store_arrivals, 6, 1),
        "pets": pets_workload,
        "bottleneck": bottleneck_workload,
    }
    default = AggregatorSettings()
    contribution = ContributionSettings()
    bounds = Bounds(contribution.window_s, contribution.cells_per_day)
    rows = [
        ("v2 default", default),
        *(
            (
                f"v2 ε {e:g} per track-day",
                replace(default, epsilon_per_track_day=e, daily_epsilon_cap=max(e, default.daily_epsilon_cap)),
            )
            for e in (1.0, 2.0, 4.0)
        ),
    ]
    options = ("" if args.runs == 20 else f" --runs {args.runs}") + "".join(f" --bounds {text}" for text in args.bounds)
    lines = [
        f"Command: `.venv/bin/python bench/privacy_utility.py{options}`; {args.runs} noise draws per DP row, mean ± 95% t-interval.",
        f"v2: window {contribution.window_s:g} s, L (cells per track per day) window/hour/day = {'/'.join(map(str, contribution.cells_per_day))}, "
        f"ε per track-day split {'/'.join(f'{w:g}' for w in default.tier_shares)} over the tiers, hour cell split "
        f"{'/'.join(f'{w:g}' for w in default.hour_metric_shares)} (occupancy/direction/dwell/entries/exits), k = {default.k} on noisy values.",
        'Each tier cell: occupancy accuracy % / MAE / bias / share shown as "< k" %.',
        "",
    ]
    for name in chosen:
        started = time.monotonic()
        workload = builders[name]()
        truth = keyed(cells(workload, contribution, device=False))
        device = cells(workload, contribution, device=True)
        occupancies = {tier: [c.occupancy for key, c in truth.items() if key[0] == tier] for tier in TIERS}
        lines += [
            f"### {workload.name}: {workload.description}",
            "",
            "true occupancy per cell, median (max): "
            + ", ".join(f"{tier} {np.median(v):.0f} ({max(v)})" for tier, v in occupancies.items()),
            "",
            "| row | window tier | hour tier | day tier | hourly flow accuracy % | ε per cell (w/h/d) | ε per track-day |",
            "|---|---|---|---|---|---|---|",
        ]
        unbounded = cells(workload, replace(contribution, cells_per_day=UNBOUNDED), device=True)
        no_privacy = {
            (c.tier, c.zone_id, c.period_start_s): (c.occupancy, list(c.directions), False) for c in unbounded
        }
        mixed = workload.mixed_directions
        lines.append(
            row_cells(
                "no privacy (device pipeline, no bound, no noise)",
                {t: [score(truth, no_privacy, t, mixed)] for t in TIERS},
                ("-", "∞"),
            )
        )
        bounded = {(c.tier, c.zone_id, c.period_start_s): (c.occupancy, list(c.directions), False) for c in device}
        lines.append(
            row_cells("bound L only, no noise", {t: [score(truth, bounded, t, mixed)] for t in TIERS}, ("-", "∞"))
        )
        v1_settings = replace(contribution, window_s=60.0, cells_per_day=UNBOUNDED)
        v1_truth = [c for c in cells(workload, v1_settings, device=False) if c.tier == "window"]
        v1_device = [c for c in cells(workload, v1_settings, device=True) if c.tier == "window"]
        lines.append(
            row_cells(
                "old per-window model (60 s windows, k=5, ε=1 per window)",
                {"window": run_v1(v1_truth, v1_device, args.runs)},
                ("1 per window", "up to 2000 (cap)"),
            )
        )
        variants = [(label, settings, bounds, device) for label, settings in rows]
        for extra in extra_bounds:
            extra_contribution = replace(contribution, cells_per_day=extra)
            variants.append(
                (
                    f"v2 default ε, L = {'/'.join(map(str, extra))}",
                    default,
                    Bounds(contribution.window_s, extra),
                    cells(workload, extra_contribution, device=True),
                )
            )
        for label, settings, variant_bounds, variant_device in variants:
            account = TrackDayAccount(settings, variant_bounds)
            scores = {tier: [] for tier in TIERS}
            for _ in range(args.runs):
                released = run_v2(variant_device, settings, variant_bounds)
                for tier in TIERS:
                    scores[tier].append(score(truth, released, tier, mixed))
            per_cell = "/".join(f"{account.cells[t].epsilon:.3g}" for t in TIERS)
            lines.append(row_cells(label, scores, (per_cell, f"{account.epsilon:.3g}")))
        strict_contribution = replace(contribution, groups_per_day=STRICT_GROUPS_PER_DAY)
        records = frame_records(workload.device, device=True)
        inside = people_in_zones(workload)
        lines += [
            "",
            f"Strict mode (groups of at least k true people; L = {STRICT_GROUPS_PER_DAY} group per track and day, tested every "
            f"{contribution.window_s:g} s, δ {default.strict_delta:g} per track-day):",
            "",
            "| row | groups released | median group length (min) | group occupancy accuracy % | bias | share of zone-time in a released group % | threshold (k + margin) | ε per track-day |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in (2.0, 4.0):
            settings = replace(
                default, mode="strict", epsilon_per_track_day=e, daily_epsilon_cap=max(e, default.daily_epsilon_cap)
            )
            account = StrictAccount(
                settings, Bounds(contribution.window_s, contribution.cells_per_day, STRICT_GROUPS_PER_DAY)
            )
            results = [run_strict(workload, records, inside, strict_contribution, settings) for _ in range(args.runs)]
            lines.append(
                f"| strict, ε {e:g} | {summary([r.groups for r in results])} | {summary([r.median_minutes for r in results if r.groups])} | "
                f"{summary([r.accuracy * 100 for r in results])} | {summary([r.bias for r in results if r.groups])} | "
                f"{summary([r.covered * 100 for r in results])} | {account.threshold} | {account.epsilon:.3g} (δ {account.delta:g}) |"
            )
        lines.append("")
        print(f"[bench] {workload.name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    text = "\n".join(lines)
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("# Privacy-utility benchmark (release model v2)\n\n" + text + "\n")
    print(f"\nwrote {args.markdown}")


if __name__ == "__main__":
    main()
