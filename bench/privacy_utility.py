"""Privacy-utility benchmark of release model v3 (identity-free presence per presence-hour, footfall per stitched
track-day, every value with its 95% interval), beside v2 as it was, on five workloads (bench/utility_workloads.py).

    .venv/bin/python bench/privacy_utility.py                        # every workload, 20 noise draws per row
    .venv/bin/python bench/privacy_utility.py --runs 5 --workloads shop,day   # a quicker look
    .venv/bin/python bench/privacy_utility.py --tune --runs 10      # the budget-split search (shop and store only)

The device side is the real release path: TrueTotals (the anonymizer's side: lineages, presence integration with the
same-body radius, footfall per lineage with at most m zones a day) fed what the tracker reports, frame by frame,
with the anonymizer's clock timer closing cells during gaps, then a Releaser on a ReleaseStore (OpenDP noise once per
span, post-processing, intervals) per process: a restart is a new TrueTotals and a new Releaser on the same store.
Truth comes from exact positions and identities: presence = people present on average per zone over the span's
observed ticks (the same integrator, radius 0, no hysteresis, on the true positions); footfall = distinct true people
who stood in the zone (or any zone, for the site) during the span, from every true frame (an outage's people too).

Per tier, over the released spans that observed something and every noise draw (mean ± 95% t-interval over draws):
    accuracy = 1 - Σ|released - true| / Σ true; MAE; bias = mean (released - true);
    noise-dominated = share whose 95% interval is wider than the value (release_schema.noise_dominated);
    coverage = share of true values inside the stated 95% interval; "< k" = share shown as "< k" (footfall only:
    presence is never suppressed); flow (hour) = 1 - Σ true · TV(released heading shares, true shares) / Σ true.
Post-processing gain: the released (combined) occupancy against the cell's own noisy value alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import utility_workloads as wl
from utility_checks import STRICT_GROUPS_PER_DAY, exactly_once, run_strict, strict_threshold
from utility_release import STORE_DIR, Draw, cached_totals, people_index, release_all, truth_of
from utility_v2 import v2_scores

from privacy_vision.core.release.events import EventSettings
from privacy_vision.core.release.grid import HEADING_LABELS, PRESENCE_KIND, SITE_ZONE, TIERS
from privacy_vision.core.release.mechanisms import EventAccount, PresenceAccount, ReleaseSettings
from privacy_vision.core.release.totals import TotalsSettings
from privacy_vision.core.release_schema import noise_dominated

EXAMPLES = {"15-min visit": 900.0, "1-hour stay": 3600.0, "8 h of staff": 8 * 3600.0}
TIER_COLUMNS = ("window", "hour", "day", "footfall", "site footfall")


@dataclass
class TierScore:
    accuracy: float
    mae: float
    bias: float
    dominated: float
    coverage: float
    below_k: float
    flow: float | None = None
    width: float = math.nan  # mean 95% interval width


def tier_keys(draw: Draw, tier: str) -> list[tuple]:
    if tier in TIERS:
        return [k for k in draw.values if k[0] == PRESENCE_KIND and k[1] == tier]
    site = tier == "site footfall"
    return [k for k in draw.values if k[0] == "events" and (k[2] == SITE_ZONE) == site]


def score(
    draw: Draw, truth: dict, tier: str, metric: str, own: bool = False, within: tuple[float, float] | None = None
) -> TierScore | None:
    """One tier of one draw; `within`: only spans inside these instants (the hours a shop is open)."""
    keys = [k for k in tier_keys(draw, tier) if k in truth]
    if within is not None:
        keys = [k for k in keys if within[0] <= k[4] and k[5] <= within[1]]
    if not keys:
        return None
    estimates = [draw.own[k] if own else draw.values[k][metric] for k in keys]
    true = np.array([truth[k][metric] for k in keys])
    shown = np.array([e.value for e in estimates])
    intervals = np.array([e.interval() for e in estimates])
    inside = (intervals[:, 0] <= true + 1e-9) & (true <= intervals[:, 1] + 1e-9)
    dominated = [
        noise_dominated({"value": e.value, "low": lo, "high": hi}) for e, (lo, hi) in zip(estimates, intervals)
    ]
    flow = None
    if tier == "hour" and not own:
        error = 0.0
        for key, t in zip(keys, true):
            true_hist = np.array([truth[key][f"heading.{label}"] for label in HEADING_LABELS])
            hist = np.clip([draw.values[key][f"heading.{label}"].value for label in HEADING_LABELS], 0, None)
            tv = 1.0 if hist.sum() <= 0 else 0.5 * np.abs(hist / hist.sum() - true_hist / max(t, 1e-12)).sum()
            error += t * tv
        flow = 1.0 - error / max(true.sum(), 1e-12)
    return TierScore(
        1.0 - np.abs(shown - true).sum() / max(true.sum(), 1e-12),
        float(np.abs(shown - true).mean()),
        float((shown - true).mean()),
        float(np.mean(dominated)),
        float(inside.mean()),
        float(np.mean([draw.below_k[k] for k in keys])),
        flow,
        float(np.mean(intervals[:, 1] - intervals[:, 0])),
    )


def summary(values: list[float], digits: int = 1) -> str:
    array = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if not len(array):
        return "-"
    if len(array) < 2 or np.allclose(array, array[0]):
        return f"{array.mean():.{digits}f}"
    half = stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array))
    return f"{array.mean():.{digits}f} ± {half:.{digits}f}"


def tier_cell(scores: list[TierScore]) -> str:
    if not scores:
        return "n/a"
    return " / ".join(
        [
            summary([s.accuracy * 100 for s in scores]),
            summary([s.mae for s in scores], 2),
            summary([s.bias for s in scores], 2),
            summary([s.dominated * 100 for s in scores], 0),
            summary([s.coverage * 100 for s in scores]),
        ]
    )


def examples(settings: ReleaseSettings, totals: TotalsSettings) -> dict[str, tuple[float, float]]:
    """ε of the example people: (presence, presence + one lineage's events per day)."""
    presence = PresenceAccount(settings, totals.grid, totals.presence.weight_steps)
    events = EventAccount(settings, totals.events.zones_per_day).epsilon_per_track_day
    return {
        name: (presence.epsilon_for_presence(seconds), presence.epsilon_for_presence(seconds) + events)
        for name, seconds in EXAMPLES.items()
    }


@dataclass
class Row:
    """A configuration: release settings, the anonymizer's settings, and m (zones per lineage-day): the totals'
    own, or None for the workload's number of zones."""

    label: str
    settings: ReleaseSettings
    totals: TotalsSettings = field(default_factory=TotalsSettings)
    zones_per_day: int | None = -1  # -1: as in `totals`

    def totals_for(self, workload: wl.Workload) -> TotalsSettings:
        if self.zones_per_day == -1:
            return self.totals
        return replace(self.totals, events=EventSettings(self.zones_per_day or len(workload.zones)))


@dataclass
class RowResult:
    """A row's scores per tier column over the draws, and the workload-level checks."""

    scores: dict[str, list[TierScore]]
    own: dict[str, list[TierScore]]
    open_hours: dict[str, list[TierScore]]  # presence tiers over the opening hours only (workloads that have them)
    footfall_within: list[bool]  # per draw: the day's site footfall (sum of its segments) within ±10% of the truth
    zone_footfall_within: list[bool]  # per zone and draw
    draws: list[Draw]


def run_row(workload: wl.Workload, row: Row, runs: int, truth_cache: dict) -> RowResult:
    totals_settings = row.totals_for(workload)
    device = cached_totals(workload, "device", totals_settings)
    key = (workload.name, totals_settings)
    if key not in truth_cache:
        truth_cache[key] = truth_of(workload, device)
    truth = truth_cache[key]
    people = people_index(workload)
    day_truth = {
        zone: len(people.inside(zone, workload.start_s, workload.end_s))
        for zone in (*[z.zone_id for z in workload.zones], SITE_ZONE)
    }
    result = RowResult({c: [] for c in TIER_COLUMNS}, {t: [] for t in TIERS}, {t: [] for t in TIERS}, [], [], [])
    for run in range(runs):
        draw = release_all(device, row.settings, totals_settings.context, reoffer=bool(workload.restarts) and run == 0)
        result.draws.append(draw)
        for column in TIER_COLUMNS:
            metric = "occupancy" if column in TIERS else "footfall"
            if (found := score(draw, truth, column, metric)) is not None:
                result.scores[column].append(found)
            if column in TIERS and (found := score(draw, truth, column, metric, own=True)) is not None:
                result.own[column].append(found)
            if (
                column in TIERS
                and workload.open_s
                and (found := score(draw, truth, column, metric, within=workload.open_s))
            ):
                result.open_hours[column].append(found)
        for zone, true in day_truth.items():
            released = sum(v["footfall"].value for k, v in draw.values.items() if k[0] == "events" and k[2] == zone)
            within = true > 0 and abs(released - true) <= 0.1 * true
            (result.footfall_within if zone == SITE_ZONE else result.zone_footfall_within).append(within)
    return result


def workload_builders(args) -> dict[str, Callable[[], wl.Workload]]:
    return {
        "shop": lambda: wl.shop_workload("shop", args.hours, args.shop_arrivals, 1, 7),
        "store": lambda: wl.shop_workload("store", args.hours, args.store_arrivals, 6, 1),
        "pets": wl.pets_workload,
        "bottleneck": wl.bottleneck_workload,
        "day": lambda: wl.day_workload(args.shop_arrivals, 11),
    }


def scaled(settings: ReleaseSettings, factor: float) -> ReleaseSettings:
    """Every ε of the default mode times factor (the cap follows the events' ε)."""
    events = settings.epsilon_events_per_track_day * factor
    return replace(
        settings,
        epsilon_per_presence_hour=settings.epsilon_per_presence_hour * factor,
        epsilon_events_per_track_day=events,
        daily_epsilon_cap=max(settings.daily_epsilon_cap, 4 * events),
    )


def v3_rows(workload: wl.Workload) -> list[Row]:
    """The default, every ε halved and doubled, and where the workload has more zones than the default m, the
    default with m = its zones (so that no visitor's zone is cut from the footfall)."""
    default = ReleaseSettings()
    rows = [
        Row("v3 default", default),
        *(Row(f"v3, every ε × {factor:g}", scaled(default, factor)) for factor in (0.5, 2.0)),
    ]
    if len(workload.zones) > TotalsSettings().events.zones_per_day:
        rows.append(Row(f"v3 default, m = {len(workload.zones)} (its zones)", default, zones_per_day=None))
    return rows


def epsilon_text(row: Row, workload: wl.Workload) -> str:
    found = examples(row.settings, row.totals_for(workload)).values()
    return " / ".join(f"{presence:.2f} ({total:.2f})" for presence, total in found)


def v2_line(scores: dict, epsilon: float) -> str:
    cells = []
    for tier in TIERS:
        s = scores[tier]
        cells.append(
            " / ".join(
                [
                    summary([x.accuracy * 100 for x in s]),
                    summary([x.mae for x in s], 2),
                    summary([x.bias for x in s], 2),
                    f'"< k" {summary([x.below_k * 100 for x in s], 0)}',
                    "no intervals",
                ]
            )
        )
    return f"| v2 default (distinct people per cell) | {' | '.join(cells)} | n/a | n/a | n/a | ε {epsilon:.3g} per track-day |"


def row_line(row: Row, result: RowResult, workload: wl.Workload) -> str:
    flows = [s.flow * 100 for s in result.scores["hour"] if s.flow is not None]
    return (
        f"| {row.label} | "
        + " | ".join(tier_cell(result.scores[c]) for c in TIER_COLUMNS)
        + f" | {summary(flows) if flows else 'n/a'} | {epsilon_text(row, workload)} |"
    )


def gain_lines(result: RowResult) -> list[str]:
    lines = [
        "| tier | the cell's own value alone: accuracy % / MAE / coverage % / mean interval width | released "
        "(combined): accuracy % / MAE / coverage % / mean interval width |",
        "|---|---|---|",
    ]
    for tier in ("hour", "day"):
        own, combined = result.own[tier], result.scores[tier]
        if not own:
            continue
        lines.append(
            f"| {tier} | "
            + " | ".join(
                f"{summary([s.accuracy * 100 for s in scores])} / {summary([s.mae for s in scores], 3)} / "
                f"{summary([s.coverage * 100 for s in scores])} / {summary([s.width for s in scores], 3)}"
                for scores in (own, combined)
            )
            + " |"
        )
    return lines


def footfall_line(result: RowResult, runs: int) -> str:
    below = [s.below_k * 100 for s in result.scores["footfall"]]
    return (
        f"daily footfall within ±10% of the true distinct people: site in {sum(result.footfall_within)} of {runs} "
        f"draws, zones in {sum(result.zone_footfall_within)} of {len(result.zone_footfall_within)} zone-draws; "
        f'zone footfall shown as "< k" in {summary(below, 0)}% of zone-days'
    )


def truth_line(workload: wl.Workload, truth: dict) -> str:
    parts = []
    for tier in TIERS:
        values = [v["occupancy"] for k, v in truth.items() if k[0] == PRESENCE_KIND and k[1] == tier]
        if values:
            parts.append(f"{tier} {np.median(values):.2f} ({np.mean(values):.2f}, max {max(values):.2f})")
    footfall = [v["footfall"] for k, v in truth.items() if k[0] == "events" and k[2] != SITE_ZONE]
    site = [v["footfall"] for k, v in truth.items() if k[0] == "events" and k[2] == SITE_ZONE]
    return (
        "True people present on average per zone and span, median (mean, max): "
        + ", ".join(parts)
        + f"; true footfall per zone-day {', '.join(str(int(f)) for f in footfall)}, site {', '.join(str(int(f)) for f in site)}."
    )


# -- choosing the budget split ---------------------------------------------------------------------------------------
TUNING_WORKLOADS = ("shop", "store")
EVENT_BUDGETS = (0.4, 0.45, 0.5, 0.55, 0.6)  # ε per stitched-track-day tried for the footfall target
TIER_SPLITS = tuple(
    (window, round(1 - window - day, 2), day) for day in (0.02, 0.05) for window in (0.3, 0.45, 0.6, 0.75)
)
HOUR_SPLITS = ((0.6, 0.25, 0.15), (0.75, 0.15, 0.10), (0.9, 0.06, 0.04))
OCCUPANCY_TARGETS = {"shop hour": 0.85, "store window": 0.90}
FOOTFALL_TARGET = 0.95  # share of draws with the small shop's daily (site) footfall within ±10%
FIFTEEN_MINUTES = 1.0  # ε target of a 15-minute visit (all metrics and tiers, one lineage)
PRESENCE_GRID = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)  # ε per presence-hour tried for a missed occupancy target


def within_ten_percent(scale: float, true: int) -> float:
    """P[|Z| ≤ 10% of true] for discrete Laplace noise of this scale: P[|Z| > h] = 2 p^(h+1) / (1 + p)."""
    p = math.exp(-1.0 / scale)
    return 1.0 - 2 * p ** (math.floor(0.1 * true) + 1) / (1 + p)


def tune(workloads: dict[str, wl.Workload], runs: int) -> list[str]:
    """Step 1, footfall: at m = the small shop's zones (so that no visitor's zone is cut), the smallest ε per
    stitched-track-day whose noise keeps the shop's daily footfall within ±10% in 95% of draws. Step 2, presence:
    the largest ε per presence-hour the 15-minute target then allows, split over tiers and hour metrics to maximise
    the worse of the two occupancy targets' ratios (shop hourly, store 15-minute); coverage is reported, not chosen
    on (the intervals hold by construction; at these draws its sampling error is a few points). Step 3: for each
    occupancy target the chosen split misses, the smallest ε per presence-hour on a grid that meets it, at the
    chosen split and at the split best for that target. Each workload runs at m = its number of zones (store: 5)."""
    shop = workloads["shop"]
    zones = len(shop.zones)
    true_site = len(people_index(shop).inside(SITE_ZONE, shop.start_s, shop.end_s))
    lines = [
        f"Budget split search on {', '.join(TUNING_WORKLOADS)} (in-sample: the targets are defined on these "
        f"workloads; {runs} noise draws per candidate).",
        "",
        f"Step 1, footfall: m = {zones} (the small shop's zones), true daily footfall {true_site}; share of draws within "
        "±10% from the stated noise law (exact):",
        "",
        "| ε per stitched-track-day | noise scale (m + 1) / ε | within ±10% |",
        "|---|---|---|",
    ]
    events = None
    for budget in EVENT_BUDGETS:
        share = within_ten_percent((zones + 1) / budget, true_site)
        lines.append(f"| {budget:g} | {(zones + 1) / budget:.2f} | {100 * share:.1f}% |")
        if events is None and share >= FOOTFALL_TARGET:
            events = budget
    events = events if events is not None else EVENT_BUDGETS[-1]
    presence = round(4 * (FIFTEEN_MINUTES - events), 6)
    lines += [
        "",
        f"Chosen: ε {events:g} per stitched-track-day; the 15-minute target leaves ε {presence:g} per presence-hour "
        f"({presence / 4:g} for 15 minutes + {events:g}). Step 2, presence split (accuracy % mean over draws; "
        "coverage = the lowest tier's):",
        "",
        "| window / hour / day | occupancy / heading / dwell | shop hour | shop window | store window | store hour "
        "| shop flow | lowest presence coverage | site footfall within ±10% (shop) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    truth_cache: dict = {}
    scored = []
    for tiers in TIER_SPLITS:
        for hours in HOUR_SPLITS:
            settings = split(presence, tiers, hours, epsilon_events_per_track_day=events, daily_epsilon_cap=4 * events)
            row = Row(f"{tiers} {hours}", settings, zones_per_day=None)
            results = {name: run_row(workloads[name], row, runs, truth_cache) for name in TUNING_WORKLOADS}
            figures = {
                "shop hour": mean_accuracy(results["shop"], "hour"),
                "shop window": mean_accuracy(results["shop"], "window"),
                "store window": mean_accuracy(results["store"], "window"),
                "store hour": mean_accuracy(results["store"], "hour"),
                "flow": float(np.mean([x.flow for x in results["shop"].scores["hour"]])),
                "coverage": min(
                    float(np.mean([x.coverage for x in r.scores[tier]])) for r in results.values() for tier in TIERS
                ),
                "footfall": float(np.mean(results["shop"].footfall_within)),
            }
            worst = min(figures[name] / target for name, target in OCCUPANCY_TARGETS.items())
            scored.append((worst, tiers, hours, figures))
            print(f"[tune] {tiers} {hours}: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), file=sys.stderr)
    best = max(scored, key=lambda item: item[0])
    for _, tiers, hours, f in scored:
        mark = " **chosen**" if (tiers, hours) == best[1:3] else ""
        lines.append(
            f"| {'/'.join(f'{w:g}' for w in tiers)}{mark} | {'/'.join(f'{w:g}' for w in hours)} | "
            f"{100 * f['shop hour']:.1f} | {100 * f['shop window']:.1f} | {100 * f['store window']:.1f} | "
            f"{100 * f['store hour']:.1f} | {100 * f['flow']:.1f} | {100 * f['coverage']:.1f} | {100 * f['footfall']:.0f}% |"
        )
    lines += [
        "",
        "Step 3, the ε per presence-hour that would meet a missed occupancy target (grid "
        f"{', '.join(f'{e:g}' for e in PRESENCE_GRID)}):",
        "",
    ]
    for name, target in OCCUPANCY_TARGETS.items():
        if best[3][name] >= target:
            lines.append(f"- {name} ≥ {target:.0%}: met at the chosen split")
            continue
        workload, tier = name.split()
        favoured = max(scored, key=lambda item: item[3][name])
        for label, tiers, hours in (("chosen", *best[1:3]), (f"best for {name}", *favoured[1:3])):
            found = None
            for presence_hour in PRESENCE_GRID:
                settings = split(presence_hour, tiers, hours)
                result = run_row(workloads[workload], Row(label, settings, zones_per_day=None), runs, truth_cache)
                if (accuracy := mean_accuracy(result, tier)) >= target:
                    found = (presence_hour, accuracy)
                    break
            lines.append(
                f"- {name} ≥ {target:.0%} at the {label} split {'/'.join(f'{w:g}' for w in tiers)}, "
                f"{'/'.join(f'{w:g}' for w in hours)}: "
                + (f"ε {found[0]:g} per presence-hour ({100 * found[1]:.1f}%)" if found else "not within the grid")
            )
    return lines


def split(presence: float, tiers: tuple, hours: tuple, **events) -> ReleaseSettings:
    """The default settings with this presence budget and split (and, where given, the events' ε and cap)."""
    return replace(
        ReleaseSettings(),
        epsilon_per_presence_hour=presence,
        presence_tier_shares=tiers,
        hour_metric_shares=hours,
        **events,
    )


def mean_accuracy(result: RowResult, tier: str) -> float:
    return float(np.mean([s.accuracy for s in result.scores[tier]]))


# -- the report ------------------------------------------------------------------------------------------------------
def strict_lines(workload: wl.Workload, runs: int) -> list[str]:
    lines = [
        "",
        f"Strict mode (groups of at least k true lineages; {STRICT_GROUPS_PER_DAY} group per lineage and day, tested at "
        f"every window end; {runs} draws):",
        "",
        "| row | groups released | median group length (min) | size accuracy % | bias | interval coverage % | share of "
        "zone-time in a released group % | threshold (k + margin) | ε, δ per stitched-track-day |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for epsilon in (1.0, 2.0):
        settings = replace(
            ReleaseSettings(), mode="strict", strict_epsilon_per_track_day=epsilon, daily_epsilon_cap=max(1.2, epsilon)
        )
        threshold, total, delta = strict_threshold(settings)
        scores = [run_strict(workload, settings) for _ in range(runs)]
        lines.append(
            f"| strict, ε {epsilon:g} | {summary([s.groups for s in scores])} | "
            f"{summary([s.median_minutes for s in scores if s.groups])} | {summary([s.accuracy * 100 for s in scores])} | "
            f"{summary([s.bias for s in scores if s.groups], 2)} | {summary([s.coverage * 100 for s in scores if s.groups])} | "
            f"{summary([s.covered * 100 for s in scores])} | {threshold} | {total:.3g}, {delta:g} |"
        )
    return lines


def workload_lines(workload: wl.Workload, args, truth_cache: dict) -> list[str]:
    started = time.monotonic()
    rows = v3_rows(workload)
    results = {row.label: run_row(workload, row, args.runs, truth_cache) for row in rows}
    default = results[rows[0].label]
    truth = truth_of(workload, cached_totals(workload, "device", rows[0].totals))
    lines = [
        f"### {workload.name}",
        "",
        f"{workload.description}. {truth_line(workload, truth)}",
        "",
        "| row | window occupancy | hour occupancy | day occupancy | zone footfall (day) | site footfall (day) | hourly "
        "flow accuracy % | ε 15-min / 1 h / 8 h: presence (with one lineage's events) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if workload.restarts or not args.v2:
        lines.append("| v2 | not run on this workload | | | | | | |")
    else:
        scores, epsilon = v2_scores(workload, args.runs, STORE_DIR)
        lines.append(v2_line(scores, epsilon))
    lines += [row_line(row, results[row.label], workload) for row in rows]
    if workload.open_s:
        lines += [
            "",
            f"v3 default over the opening hours ({wl.clock(workload.open_s[0] - wl.DAY0)}-"
            f"{wl.clock(workload.open_s[1] - wl.DAY0)}) only: "
            + "; ".join(f"{tier} {tier_cell(default.open_hours[tier])}" for tier in ("window", "hour")),
        ]
    lines += [
        "",
        "Footfall, v3 default: " + footfall_line(default, args.runs) + ".",
        "",
        "Post-processing gain, v3 default (occupancy):",
        "",
        *gain_lines(default),
    ]
    if workload.restarts:
        lines += [
            "",
            "Exactly once over the day (v3 default, first draw):",
            "",
            *exactly_once(workload, default.draws[0]),
        ]
    if args.strict_runs:
        lines += strict_lines(workload, args.strict_runs)
    print(f"[bench] {workload.name}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return [*lines, ""]


def header(args, load: tuple[float, float, float]) -> list[str]:
    default, totals = ReleaseSettings(), TotalsSettings()
    options = " ".join(
        f"--{name.replace('_', '-')} {value}"
        for name, value in (("runs", args.runs), ("workloads", args.workloads), ("strict_runs", args.strict_runs))
    )
    return [
        f"Command: `.venv/bin/python bench/privacy_utility.py {options}`; {dt.date.today().isoformat()}; {args.runs} noise "
        f"draws per row (mean ± 95% t-interval over draws); load average at the start "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on 2 shared cores.",
        "",
        f"v3 default: ε {default.epsilon_per_presence_hour:g} per presence-hour split "
        f"{'/'.join(f'{w:g}' for w in default.presence_tier_shares)} over window/hour/day and "
        f"{'/'.join(f'{w:g}' for w in default.hour_metric_shares)} over the hour's occupancy/heading/dwell; ε "
        f"{default.epsilon_events_per_track_day:g} per stitched-track-day for footfall (shares "
        f"{'/'.join(f'{w:g}' for w in default.event_metric_shares)} footfall/entries/exits), at most "
        f"{totals.events.zones_per_day} zones per lineage-day; same-body radius {totals.presence.same_body_radius_m:g} m; "
        f"{totals.grid.window_s:g} s windows, {totals.grid.tick_s:g} s ticks; k = {default.k} (display rule).",
        "",
        "Each tier cell: accuracy % / MAE / signed bias / noise-dominated % / interval coverage %. Occupancy is people "
        'present on average (v2: distinct people per cell, its own quantity; its 4th figure is the share shown "< k").',
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="noise draws per row (default 20)")
    parser.add_argument("--workloads", default="shop,store,pets,bottleneck,day")
    parser.add_argument("--strict-runs", type=int, default=3, help="strict-mode draws per row (0 = none; default 3)")
    parser.add_argument("--no-v2", dest="v2", action="store_false", help="leave out the v2 comparison row")
    parser.add_argument("--tune", action="store_true", help="run the budget-split search (shop and store) instead")
    parser.add_argument("--hours", type=float, default=8.0, help="opening hours of the simulated days (default 8)")
    parser.add_argument("--store-arrivals", type=float, default=600.0, help="store shoppers an hour (default 600)")
    parser.add_argument("--shop-arrivals", type=float, default=30.0, help="small-shop visitors an hour (default 30)")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the report to this file")
    args = parser.parse_args()
    if args.runs < 2 or args.strict_runs < 0:
        parser.error("--runs must be at least 2 (for an interval) and --strict-runs at least 0")
    if args.hours <= 0 or args.store_arrivals <= 0 or args.shop_arrivals <= 0:
        parser.error("--hours and the arrival rates must be > 0")
    builders = workload_builders(args)
    chosen = TUNING_WORKLOADS if args.tune else tuple(args.workloads.split(","))
    if unknown := set(chosen) - set(builders):
        parser.error(f"unknown workloads {sorted(unknown)} (known: {', '.join(builders)})")
    needed = [
        wl.SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt",
        wl.SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt",
    ]
    if missing := [str(path) for path in needed if not path.is_file()]:
        parser.error(f"the real workloads are missing: {', '.join(missing)} (../shared must sit beside the repository)")
    load = os.getloadavg()
    if args.tune:
        lines = tune({name: builders[name]() for name in chosen}, args.runs)
        title = "# Budget split search (release model v3)"
    else:
        truth_cache: dict = {}
        lines = header(args, load)
        for name in chosen:
            lines += workload_lines(builders[name](), args, truth_cache)
        title = "# Privacy-utility benchmark (release model v3)"
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(f"{title}\n\n{text}\n")
        print(f"\nwrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
