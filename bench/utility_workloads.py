"""The workloads of bench/privacy_utility.py: who is where, when (the truth), what the device's tracker reports, and
the device's life (outages, restarts).

- small shop and store days simulated with JuPedSim (bench/store_day.py; cached in bench_out/): the device is fed
  the true trajectories, so only the release model separates the released values from the truth;
- PETS09-S2L1: the annotated floor positions against the shipped YOLOX-nano and the project's tracker on vtest.avi
  (bench/floor_tracks.py, 7 fps as the sequence was recorded): perception errors included;
- the FZ Jülich bottleneck experiment (real trajectories, 25 fps taken at 5 fps): the device is fed them;
- a 24-hour day: a small shop (another seed, open 08:00-18:00 UTC) on a camera that runs all day, with a camera
  outage (11:20-14:00: no frames, the clock runs on) and a restart at 15:07 (the anonymizer and the aggregator
  respawn: open segments flushed, 20 s without either, then a new TrueTotals and a new Releaser on the same store).

Headings are what the anonymizer gives the release model: the direction sector of the floor velocity over the last
VELOCITY_WINDOW_S (core/anonymizer.direction_sector), the same for truth and device where both see the same path.
"""

from __future__ import annotations

import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shapely.geometry import box

sys.path.insert(0, str(Path(__file__).resolve().parent))

from privacy_vision.core.anonymizer import AnonymizerSettings, direction_sector
from privacy_vision.core.geometry import Zone

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OUT = REPO / "bench_out"
VELOCITY_WINDOW_S = 1.0  # as the tracker's default velocity_window_s
DAY0 = 1_764_547_200.0  # 2025-12-01 00:00:00 UTC: every workload is placed on this day
HOUR = 3600.0


@dataclass
class Frame:
    """One instant: keys (person ids for the truth, track ids for the device), floor positions, headings, and what
    the tracker says of each (its presence weight; confirmed or not: only confirmed tracks make events)."""

    stamp_s: float
    keys: np.ndarray
    x: np.ndarray
    y: np.ndarray
    headings: list[str]
    weights: np.ndarray | None = None  # None: every key at weight 1
    confirmed: np.ndarray | None = None  # None: every key confirmed


@dataclass
class Workload:
    """One scenario: zones, the truth, what the tracker reports, and the device's processes."""

    name: str
    description: str
    zones: list[Zone]
    truth: list[Frame]
    device: list[Frame]
    start_s: float
    end_s: float
    restarts: list[tuple[float, float]] = field(default_factory=list)  # (flushed at, next process starts at)
    outages: list[tuple[float, float]] = field(default_factory=list)  # no frames in [start, end)
    open_s: tuple[float, float] | None = None  # a shop's opening hours within a longer day (scored apart too)
    mixed_directions: bool = True  # False for a one-way flow, where a flow accuracy says nothing
    simulated_device: bool = True  # the device is fed the true trajectories


def with_headings(raw: list[tuple]) -> list[Frame]:
    """Frames with each key's heading from its floor velocity over the last VELOCITY_WINDOW_S; raw rows are (time,
    keys, x, y) or (time, keys, x, y, weights, confirmed)."""
    min_speed = AnonymizerSettings().min_speed_mps
    history: dict[int, list[tuple[float, float, float]]] = {}
    frames = []
    for t, keys, xs, ys, *tracker in raw:
        headings = []
        for key, x, y in zip(keys.tolist(), xs.tolist(), ys.tolist()):
            trail = history.setdefault(key, [])
            trail.append((t, x, y))
            while len(trail) > 1 and t - trail[1][0] >= VELOCITY_WINDOW_S:
                trail.pop(0)
            t0, x0, y0 = trail[0]
            vx, vy = ((x - x0) / (t - t0), (y - y0) / (t - t0)) if t > t0 else (0.0, 0.0)
            headings.append(direction_sector(vx, vy, 8, min_speed))
        frames.append(Frame(float(t), np.asarray(keys), np.asarray(xs), np.asarray(ys), headings, *tracker))
    return frames


def simulated(layout_name: str, hours: float, arrivals_per_hour: float, staff: int, seed: int) -> list:
    """A JuPedSim day at 1 Hz, cached in bench_out/ (the simulation takes seconds for the shop, minutes for the
    store)."""
    import store_day  # JuPedSim is only needed here

    layout = {"store": store_day.STORE, "shop": store_day.SHOP}[layout_name]
    cache = OUT / f"{layout_name}_{hours:g}h_{arrivals_per_hour:g}ph_{staff}staff_seed{seed}.pickle"
    if cache.is_file():
        return pickle.loads(cache.read_bytes())
    started = time.monotonic()
    frames = store_day.simulate(layout, hours * 60.0, arrivals_per_hour, staff, sample_hz=1.0, seed=seed)
    print(f"[{layout_name}] {hours:g} h simulated in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    OUT.mkdir(exist_ok=True)
    cache.write_bytes(pickle.dumps(frames))
    return frames


def shop_workload(layout_name: str, hours: float, arrivals_per_hour: float, staff: int, seed: int) -> Workload:
    import store_day

    layout = {"store": store_day.STORE, "shop": store_day.SHOP}[layout_name]
    opens = DAY0 + 8 * HOUR
    raw = [(opens + t, ids, xs, ys) for t, ids, xs, ys in simulated(layout_name, hours, arrivals_per_hour, staff, seed)]
    frames = with_headings(raw)
    people = len(np.unique(np.concatenate([f.keys for f in frames])))
    title = {"store": "Store day (JuPedSim)", "shop": "Small shop day (JuPedSim)"}[layout_name]
    return Workload(
        title,
        f"{hours:g} h from 08:00, {people - staff} shoppers (about {arrivals_per_hour:g} an hour), {staff} staff all "
        f"day, {layout.width_m:g} x {layout.depth_m:g} m, {len(layout.zones)} zones, seed {seed}",
        layout.zones,
        frames,
        frames,
        frames[0].stamp_s,
        frames[-1].stamp_s + 1.0,
    )


def pets_workload() -> Workload:
    """Annotated floor positions against YOLOX-nano + the tracker on vtest.avi: every live track, at its presence
    weight, as the tracking node publishes them (only confirmed ones make lineages and events)."""
    import floor_tracks

    run = floor_tracks.pets_video_run("yolox")
    opens = DAY0 + 10 * HOUR

    def frames(column: str) -> list[Frame]:
        raw = []
        for frame in run.frames:
            if column == "people":
                rows = frame.people
                raw.append((opens + frame.stamp_s, rows[:, 0].astype(np.int64), rows[:, 5], rows[:, 6]))
            else:
                rows = frame.tracks
                confirmed = rows[:, 7] == floor_tracks.TrackState.CONFIRMED
                raw.append(
                    (opens + frame.stamp_s, rows[:, 0].astype(np.int64), rows[:, 5], rows[:, 6], rows[:, 8], confirmed)
                )
        return with_headings(raw)

    truth, device = frames("people"), frames("tracks")
    zones = [
        Zone("plaza_west", box(-14.8, -12.2, -7.8, 4.2)),
        Zone("plaza_centre", box(-7.8, -12.2, 0.2, 4.2)),
        Zone("plaza_east", box(0.2, -12.2, 6.2, 4.2)),
    ]
    people = len({int(k) for f in truth for k in f.keys})
    tracks = len({int(k) for f in device for k, c in zip(f.keys, f.confirmed) if c})
    return Workload(
        "PETS09-S2L1, YOLOX-nano + tracker on vtest.avi",
        f"{people} people, {tracks} confirmed tracks, {run.frames[-1].stamp_s:.0f} s at {run.fps:g} fps, 3 zones",
        zones,
        truth,
        device,
        opens,
        opens + len(run.frames) / run.fps,
        simulated_device=False,
    )


def bottleneck_workload() -> Workload:
    path = SHARED / "data/trajectories/bottleneck_040_c_56_h-.txt"
    data = np.loadtxt(path, comments="#")
    scale = 0.01 if any("x/cm" in line for line in path.read_text().splitlines()[:10]) else 1.0
    opens = DAY0 + 10 * HOUR
    raw = [
        (opens + frame / 25.0, rows[:, 0].astype(np.int64), rows[:, 2] * scale, rows[:, 3] * scale)
        for frame in np.unique(data[:, 1])[::5]
        for rows in [data[data[:, 1] == frame]]
    ]
    frames = with_headings(raw)
    zones = [
        Zone("approach_far", box(-3.2, 3.2, 3.2, 6.7)),
        Zone("approach_near", box(-3.2, 1.2, 3.2, 3.2)),
        Zone("bottleneck_and_exit", box(-3.2, -2.2, 3.2, 1.2)),
    ]
    return Workload(
        "Bottleneck experiment (FZ Jülich)",
        f"{len(np.unique(data[:, 0]))} people, {frames[-1].stamp_s - opens:.0f} s, one-way flow, 3 zones",
        zones,
        frames,
        frames,
        opens,
        frames[-1].stamp_s + 0.2,
        mixed_directions=False,
    )


OUTAGE = (11 * HOUR + 20 * 60, 14 * HOUR)
RESTART = (15 * HOUR + 7 * 60, 15 * HOUR + 7 * 60 + 20)


def day_workload(arrivals_per_hour: float, seed: int) -> Workload:
    """24 hours of a camera over a small shop open 08:00-18:00 (1 staff), an outage and a restart (module doc)."""
    import store_day

    opens = DAY0 + 8 * HOUR
    shop = simulated("shop", 10.0, arrivals_per_hour, 1, seed)
    empty = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    by_second = {round(t): (ids, xs, ys) for t, ids, xs, ys in shop}
    raw = [(DAY0 + s, *by_second.get(s - round(opens - DAY0), empty)) for s in range(round(24 * HOUR))]
    frames = with_headings(raw)
    outage = (DAY0 + OUTAGE[0], DAY0 + OUTAGE[1])
    restart = (DAY0 + RESTART[0], DAY0 + RESTART[1])
    device = [f for f in frames if not outage[0] <= f.stamp_s < outage[1] and not restart[0] <= f.stamp_s < restart[1]]
    people = len(np.unique(np.concatenate([f.keys for f in frames])))
    return Workload(
        "24-hour day with an outage and a restart (small shop, JuPedSim)",
        f"camera on 00:00-24:00, shop open 08:00-18:00 with {people - 1} shoppers (about {arrivals_per_hour:g} an "
        f"hour) and 1 staff, seed {seed}; outage {clock(OUTAGE[0])}-{clock(OUTAGE[1])}, restart at "
        f"{clock(RESTART[0])} (next process from {clock(RESTART[1])}), {len(store_day.SHOP.zones)} zones",
        store_day.SHOP.zones,
        frames,
        device,
        DAY0,
        DAY0 + 24 * HOUR,
        restarts=[restart],
        outages=[outage],
        open_s=(opens, opens + 10 * HOUR),
    )


def clock(seconds: float) -> str:
    return f"{int(seconds // HOUR):02d}:{int(seconds % HOUR // 60):02d}:{int(seconds % 60):02d}".removesuffix(":00")
