"""Shop days simulated with JuPedSim: shoppers enter, browse shelves, queue at a till and leave; staff
walk between shelves all day.

Agents walk with the collision-free speed model between targets we steer directly (a direct-steering
stage), stop to browse (desired speed 0) and are removed at the exit. Two floor plans: a 50 m x 30 m
supermarket with eight racks and five zones, and a 14 m x 9 m small shop with three racks and three
zones. Zone edges are kept off the anonymiser's 0.5 m grid (x.2 m) so that no benchmark figure comes
from zones aligned with its cells.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import jupedsim as jps
import numpy as np
import shapely
from shapely.geometry import Point, Polygon, box

from privacy_vision.core.geometry import Zone


@dataclass(frozen=True)
class Layout:
    """A shop floor for the simulation: its size, racks and entry."""

    name: str
    width_m: float
    depth_m: float
    racks: list
    entry: tuple[float, float]
    exit: tuple[float, float]
    tills: list[tuple[float, float]]
    aisle_y: tuple[float, float]  # browsing happens between these depths
    zones: list[Zone]
    browse_s: float  # median pause at a shelf


STORE = Layout(
    "store",
    50.0,
    30.0,
    [box(6.0 + 5.5 * i, 11.0, 7.2 + 5.5 * i, 26.0) for i in range(8)],
    (3.0, 1.0),
    (11.0, 0.8),
    [(float(x), 5.0) for x in np.arange(18.0, 48.0, 2.5)],
    (10.0, 29.0),
    [
        Zone("entrance", box(0.0, 0.0, 15.2, 9.2)),
        Zone("checkout", box(15.2, 0.0, 50.0, 9.2)),
        Zone("aisles_west", box(0.0, 9.2, 17.2, 30.0)),
        Zone("aisles_centre", box(17.2, 9.2, 33.2, 30.0)),
        Zone("aisles_east", box(33.2, 9.2, 50.0, 30.0)),
    ],
    50.0,
)
SHOP = Layout(
    "shop",
    14.0,
    9.0,
    [box(3.0 + 3.5 * i, 4.0, 3.8 + 3.5 * i, 7.5) for i in range(3)],
    (1.0, 0.6),
    (3.0, 0.6),
    [(11.0, 1.8)],
    (3.5, 8.5),
    [
        Zone("entrance", box(0.0, 0.0, 6.2, 3.2)),
        Zone("checkout", box(6.2, 0.0, 14.0, 3.2)),
        Zone("shelves", box(0.0, 3.2, 14.0, 9.0)),
    ],
    40.0,
)


@dataclass
class Shopper:
    """One simulated person's plan (targets, pauses, speed) and progress through it."""

    targets: list[tuple[float, float]]
    pauses_s: list[float]
    speed_mps: float
    staff: bool = False
    paused_until_s: float | None = None


def walkable(layout: Layout) -> Polygon:
    return shapely.difference(box(0.0, 0.0, layout.width_m, layout.depth_m), shapely.union_all(layout.racks))


def shelf_point(rng: np.random.Generator, floor: Polygon, layout: Layout) -> tuple[float, float]:
    """A browsing spot in an aisle, clear of the racks."""
    clear = floor.buffer(-0.6)
    while True:
        x, y = rng.uniform(1.0, layout.width_m - 1.0), rng.uniform(*layout.aisle_y)
        if clear.contains(Point(x, y)):
            return float(x), float(y)


def itinerary(
    rng: np.random.Generator, floor: Polygon, layout: Layout
) -> tuple[list[tuple[float, float]], list[float]]:
    visits = int(np.clip(2 + rng.poisson(2.5), 2, 8))
    targets = [shelf_point(rng, floor, layout) for _ in range(visits)]
    pauses = list(np.clip(rng.lognormal(math.log(layout.browse_s), 0.6, visits), 5.0, 400.0))
    till = layout.tills[int(rng.integers(len(layout.tills)))]
    targets.append((float(till[0]), float(till[1])))
    pauses.append(float(rng.uniform(20.0, 90.0)))
    targets.append(layout.exit)
    pauses.append(0.0)
    return targets, pauses


def simulate(
    layout: Layout,
    minutes: float,
    arrivals_per_hour: float,
    staff: int,
    sample_hz: float,
    seed: int,
) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Positions of everybody at sample_hz: [(time_s, ids, x_m, y_m)]. The shop opens empty with its staff
    inside; shoppers arrive as a Poisson process whose rate swings ±33% around arrivals_per_hour over the
    day (a quiet start, a busy middle)."""
    rng = np.random.default_rng(seed)
    floor = walkable(layout)
    simulation = jps.Simulation(model=jps.CollisionFreeSpeedModel(), geometry=floor, dt=0.05)
    stage = simulation.add_direct_steering_stage()
    journey = simulation.add_journey(jps.JourneyDescription([stage]))
    shoppers: dict[int, Shopper] = {}

    def add(position: tuple[float, float], is_staff: bool) -> None:
        if is_staff:
            targets = [shelf_point(rng, floor, layout) for _ in range(4)]
            pauses = list(rng.uniform(30.0, 300.0, len(targets)))
        else:
            targets, pauses = itinerary(rng, floor, layout)
        speed = float(np.clip(rng.normal(1.2, 0.2), 0.6, 1.8))
        agent_id = simulation.add_agent(
            jps.CollisionFreeSpeedModelAgentParameters(
                position=position, journey_id=journey, stage_id=stage, desired_speed=speed, radius=0.2
            )
        )
        simulation.agent(agent_id).target = targets[0]
        shoppers[agent_id] = Shopper(targets, pauses, speed, staff=is_staff)

    for _ in range(staff):
        add(shelf_point(rng, floor, layout), is_staff=True)
    duration_s = minutes * 60.0

    def rate_per_s(t: float) -> float:
        return arrivals_per_hour / 3600.0 * (1.0 - math.cos(2 * math.pi * t / duration_s) / 3.0)

    next_arrival = rng.exponential(1.0 / rate_per_s(0.0))
    steps_per_sample = max(1, round(1.0 / (sample_hz * simulation.delta_time())))
    samples = []
    last_report = time.monotonic()
    while simulation.elapsed_time() < duration_s:
        now = simulation.elapsed_time()
        if now >= next_arrival and not list(simulation.agents_in_range(layout.entry, 0.6)):
            add(layout.entry, is_staff=False)
            next_arrival += rng.exponential(1.0 / rate_per_s(now))
        if simulation.iteration_count() % steps_per_sample == 0:
            _steer(
                simulation, shoppers, now, lambda: (shelf_point(rng, floor, layout), float(rng.uniform(30.0, 300.0)))
            )
            ids = np.fromiter(shoppers, dtype=np.int64, count=len(shoppers))
            positions = np.array([simulation.agent(i).position for i in ids]).reshape(-1, 2)
            samples.append((now, ids, positions[:, 0].copy(), positions[:, 1].copy()))
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(
                    f"[{layout.name}] simulated {now / 60:.0f}/{minutes:g} min, {len(shoppers)} people inside",
                    file=sys.stderr,
                    flush=True,
                )
        simulation.iterate()
    return samples


def _steer(simulation: jps.Simulation, shoppers: dict[int, Shopper], now: float, next_shelf) -> None:
    """Next target on arrival; browse by standing still; leave through the exit; staff never leave."""
    for agent_id, shopper in list(shoppers.items()):
        agent = simulation.agent(agent_id)
        if shopper.paused_until_s is not None:
            if now < shopper.paused_until_s:
                continue
            shopper.paused_until_s = None
            agent.model.desired_speed = shopper.speed_mps
            shopper.targets.pop(0)
            shopper.pauses_s.pop(0)
            if shopper.staff and not shopper.targets:
                target, pause = next_shelf()
                shopper.targets.append(target)
                shopper.pauses_s.append(pause)
            agent.target = shopper.targets[0]
            continue
        x, y = agent.position
        tx, ty = shopper.targets[0]
        if math.hypot(tx - x, ty - y) > 0.8:
            continue
        if len(shopper.targets) == 1 and not shopper.staff:  # at the exit
            simulation.mark_agent_for_removal(agent_id)
            del shoppers[agent_id]
            continue
        shopper.paused_until_s = now + shopper.pauses_s[0]
        agent.model.desired_speed = 0.0
