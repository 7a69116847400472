"""Privacy-utility benchmark: the source design's six privacy settings on three workloads.

Each workload is a set of floor trajectories in metres. Truth is computed from the exact positions and
timestamps; the released figures go through the real pipeline: the Anonymizer (0.5 m grid, 5 s time
precision, 8 heading sectors, rotating keyed IDs) into the aggregator's window statistics, then the
release rule of each row. DP rows use the aggregator's own ReleaseMechanism (OpenDP noise, noisy k
threshold, post-processing), repeated over independent runs.

    .venv/bin/python bench/privacy_utility.py            # all three workloads, 20 runs, table + PNG
    .venv/bin/python bench/privacy_utility.py --runs 5 --store-minutes 10   # quicker look

Metrics over all zone-windows w of a workload (a suppressed zone-window counts as released 0):
    occupancy accuracy = 1 - Σ_w |released_w - true_w| / Σ_w true_w
    flow accuracy      = 1 - Σ_w true_w · TV(released_w, true_w) / Σ_w true_w
where TV is the total-variation distance between the normalised direction histograms (9 bins: 8 sectors
and "none"), and TV = 1 for a suppressed or empty released histogram.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from privacy_vision.core.aggregator import AggregatorSettings, ReleaseMechanism, ZoneStatistics, ZoneWindowStatistics  # noqa: E402
from privacy_vision.core.anonymizer import (Anonymizer, AnonymizedRecord, AnonymizerSettings, TrackSample,  # noqa: E402
                                            direction_sector, round_time)
from privacy_vision.core.geometry import Zone, load_zones  # noqa: E402
from shapely.geometry import box  # noqa: E402

SHARED = REPO.parent / "shared"
# The source design's published accuracy (occupancy %, flow %), metric, window and noise unstated.
SOURCE_ROWS = {"no privacy": (99.2, 97.8), "k=3": (98.7, 96.1), "k=5": (97.3, 93.4),
               "k=5, ε=2": (94.1, 89.2), "k=5, ε=1": (89.6, 82.7), "k=5, ε=0.5": (81.3, 71.4)}
ROWS = [("no privacy", None, None), ("k=3", 3, None), ("k=5", 5, None),
        ("k=5, ε=2", 5, 2.0), ("k=5, ε=1", 5, 1.0), ("k=5, ε=0.5", 5, 0.5)]
VELOCITY_WINDOW_S = 1.0  # as the tracker's default velocity_window_s


@dataclass
class Workload:
    name: str
    description: str
    zones: list[Zone]
    window_s: float
    frames: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]  # (time_s, ids, x_m, y_m)


def pets_workload() -> Workload:
    path = SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt"
    gt = np.loadtxt(path, delimiter=",")
    fps = 7.0
    frames = []
    for frame in np.unique(gt[:, 0]):
        rows = gt[gt[:, 0] == frame]
        frames.append(((frame - 1) / fps, rows[:, 1].astype(int), rows[:, 7], rows[:, 8]))
    return Workload("PETS09-S2L1 ground truth", f"{int(gt[:, 1].max())} people, {len(frames) / fps:.0f} s at 7 fps, zones of config/zones.yaml",
                    load_zones(REPO / "config/zones.yaml"), 10.0, frames)


def bottleneck_workload() -> Workload:
    path = SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt"
    data = np.loadtxt(path, comments="#")
    header = path.read_text().splitlines()[:10]
    scale = 0.01 if any("x/cm" in line for line in header) else 1.0
    fps = 25.0
    frames = []
    for frame in np.unique(data[:, 1])[::5]:  # 5 fps is plenty for 10 s windows
        rows = data[data[:, 1] == frame]
        frames.append((frame / fps, rows[:, 0].astype(int), rows[:, 2] * scale, rows[:, 3] * scale))
    zones = [Zone("approach_far", box(-3.0, 3.0, 3.0, 6.5)), Zone("approach_near", box(-3.0, 1.0, 3.0, 3.0)),
             Zone("bottleneck_and_exit", box(-3.0, -2.0, 3.0, 1.0))]
    people = len(np.unique(data[:, 0]))
    return Workload("Bottleneck experiment (FZ Jülich)", f"{people} people, {frames[-1][0]:.0f} s, 3 bands of the approach (y 3–6.5, 1–3, −2–1 m)",
                    zones, 10.0, frames)


def store_workload(minutes: float, shoppers: int, seed: int) -> Workload:
    import store_day  # JuPedSim is only needed here

    started = time.monotonic()
    frames = store_day.simulate(minutes, shoppers, sample_hz=1.0, seed=seed)
    visitors = len(np.unique(np.concatenate([ids for _, ids, _, _ in frames])))
    print(f"[store] {minutes:g} min simulated in {time.monotonic() - started:.0f} s: {visitors} shoppers", file=sys.stderr)
    return Workload("Store day (JuPedSim)", f"{minutes:g} min, {visitors} shoppers (about {shoppers} in the store at once), "
                    "50 x 30 m floor, 5 zones", store_day.ZONES, 60.0, frames)


def velocities(frames: list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]) -> list[dict[int, tuple[float, float]]]:
    """Floor velocity of each person from its position VELOCITY_WINDOW_S earlier (0 at first sight)."""
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


def zone_window_statistics(workload: Workload, anonymized: bool) -> list[ZoneStatistics]:
    """Per zone-window statistics: exact (truth) or through the Anonymizer (what the device releases from)."""
    settings = AggregatorSettings(window_s=workload.window_s)
    windows = ZoneWindowStatistics(workload.zones, settings.window_s, settings.dwell_thresholds_s,
                                   settings.boundary_hysteresis_m if anonymized else 0.0)
    anonymizer_settings = AnonymizerSettings()
    anonymizer = Anonymizer(anonymizer_settings, now_s=workload.frames[0][0])
    first_seen: dict[int, float] = {}
    collected: list[ZoneStatistics] = []
    for (t, ids, xs, ys), velocity in zip(workload.frames, velocities(workload.frames)):
        if anonymized:
            anonymizer.key.rotate_if_due(t)
            stamp = round_time(t, anonymizer_settings.time_precision_s)
            samples = [TrackSample(pid, x, y, *velocity[pid], 0.2) for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist())]
            records = anonymizer.anonymize_frame(t, samples)
        else:
            stamp = t
            records = []
            for pid, x, y in zip(ids.tolist(), xs.tolist(), ys.tolist()):
                since = first_seen.setdefault(pid, t)
                direction = direction_sector(*velocity[pid], anonymizer_settings.direction_sectors, anonymizer_settings.min_speed_mps)
                records.append(AnonymizedRecord(str(pid), x, y, "medium", direction, since))
        for _, _, by_zone in windows.observe(stamp, records):
            collected.extend(by_zone[zone.zone_id] for zone in workload.zones)
    _, _, by_zone = windows.close_window()
    collected.extend(by_zone[zone.zone_id] for zone in workload.zones)
    return collected


def accuracies(true: list[ZoneStatistics], released: list[ZoneStatistics | None]) -> tuple[float, float]:
    total = sum(t.occupancy for t in true)
    occupancy_error = sum(abs((r.occupancy if r else 0) - t.occupancy) for t, r in zip(true, released))
    flow_error = 0.0
    for t, r in zip(true, released):
        if t.occupancy == 0:
            continue
        true_hist = np.asarray(t.directions, dtype=float)
        released_hist = np.asarray(r.directions, dtype=float) if r else np.zeros_like(true_hist)
        if released_hist.sum() <= 0 or true_hist.sum() <= 0:
            tv = 1.0
        else:
            tv = 0.5 * np.abs(released_hist / released_hist.sum() - true_hist / true_hist.sum()).sum()
        flow_error += t.occupancy * tv
    return 1.0 - occupancy_error / total, 1.0 - flow_error / total


def run_row(k: int | None, epsilon: float | None, truth: list[ZoneStatistics], device: list[ZoneStatistics],
            runs: int) -> list[tuple[float, float]]:
    if epsilon is None:  # deterministic rows: no noise, optional hard k
        released = [d if k is None or d.occupancy >= k else None for d in device]
        return [accuracies(truth, released)]
    mechanism = ReleaseMechanism(AggregatorSettings(k=k, epsilon=epsilon))
    return [accuracies(truth, [mechanism.release(d) for d in device]) for _ in range(runs)]


def summary(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% t-interval (0 for a deterministic row)."""
    array = np.asarray(values) * 100
    if len(array) < 2:
        return float(array.mean()), 0.0
    return float(array.mean()), float(stats.t.ppf(0.975, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="independent noise runs per DP row (default 20)")
    parser.add_argument("--store-minutes", type=float, default=60.0, help="simulated store time (default 60)")
    parser.add_argument("--store-shoppers", type=int, default=250, help="shoppers in the store at once (default 250)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the store simulation")
    parser.add_argument("--plot", type=Path, default=REPO / "docs/privacy_utility.png")
    parser.add_argument("--markdown", type=Path, default=REPO / "docs/privacy_utility.md")
    args = parser.parse_args()
    if args.runs < 2:
        parser.error("--runs must be at least 2 for an interval")

    needed = [SHARED / "data/mot15/PETS09-S2L1/gt/gt.txt", SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt"]
    missing = [str(path) for path in needed if not path.is_file()]
    if missing:
        parser.error(f"the real workloads are missing: {', '.join(missing)} (the shared data folder must sit beside the repository)")
    if args.store_minutes <= 0 or args.store_shoppers < 1:
        parser.error("--store-minutes must be > 0 and --store-shoppers ≥ 1")
    split = AggregatorSettings().metric_budgets()
    workloads = [pets_workload(), bottleneck_workload(), store_workload(args.store_minutes, args.store_shoppers, args.seed)]
    results: dict[str, dict[str, tuple[tuple[float, float], tuple[float, float]]]] = {}
    lines = [f"Privacy unit person-window; DP rows: discrete Laplace (OpenDP), ε split {', '.join(f'{n} {e:.2f}' for n, (e, _) in split.items())} "
             f"of each ε, noisy k threshold with suppression δ = {AggregatorSettings().suppression_delta:g}; {args.runs} independent runs per DP row, "
             "mean ± 95% t-interval. k-only rows are deterministic.", ""]
    for workload in workloads:
        started = time.monotonic()
        truth = zone_window_statistics(workload, anonymized=False)
        device = zone_window_statistics(workload, anonymized=True)
        sizes = [t.occupancy for t in truth]
        header = (f"### {workload.name}: {workload.description}; {workload.window_s:g} s windows, {len(workload.zones)} zones, "
                  f"{len(truth)} zone-windows, true occupancy per zone-window median {np.median(sizes):.0f} (max {max(sizes)})")
        lines += [header, "", "| setting | occupancy accuracy % | flow accuracy % | source design occ / flow % |", "|---|---|---|---|"]
        results[workload.name] = {}
        for name, k, epsilon in ROWS:
            outcomes = run_row(k, epsilon, truth, device, args.runs)
            occupancy = summary([o for o, _ in outcomes])
            flow = summary([f for _, f in outcomes])
            results[workload.name][name] = (occupancy, flow)
            source = SOURCE_ROWS[name]
            lines.append(f"| {name} | {occupancy[0]:.1f} ± {occupancy[1]:.1f} | {flow[0]:.1f} ± {flow[1]:.1f} | {source[0]} / {source[1]} |")
        lines.append("")
        print(f"[bench] {workload.name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text("# Privacy-utility benchmark\n\nCommand: `.venv/bin/python bench/privacy_utility.py`\n\n" + text + "\n")
    plot(results, args.plot)
    print(f"\nwrote {args.markdown} and {args.plot}")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, _, _ in ROWS]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, index, title in ((axes[0], 0, "occupancy accuracy"), (axes[1], 1, "flow accuracy")):
        positions = np.arange(len(names))
        axis.plot(positions, [SOURCE_ROWS[n][index] for n in names], "k--", marker="x", label="source design (unstated metric)")
        for workload, rows in results.items():
            means = [rows[n][index][0] for n in names]
            errors = [rows[n][index][1] for n in names]
            axis.errorbar(positions, means, yerr=errors, marker="o", capsize=3, label=workload)
        axis.set_xticks(positions, names, rotation=20)
        axis.set_title(title)
        axis.set_ylabel("%")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
