"""A store day simulated with JuPedSim: shoppers enter, browse shelves, queue at the tills and leave.

Agents walk with the collision-free speed model between targets we steer directly (a direct-steering
stage), stop to browse (desired speed 0) and are removed at the exit. The floor plan is a 50 m x 30 m
supermarket with eight shelf racks; its five zones cover the whole floor.
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

WIDTH_M, DEPTH_M = 50.0, 30.0
RACKS = [box(6.0 + 5.5 * i, 11.0, 7.2 + 5.5 * i, 26.0) for i in range(8)]
ENTRY = (3.0, 1.0)
EXIT = (11.0, 0.8)
TILLS = [(x, 5.0) for x in np.arange(18.0, 48.0, 2.5)]
ZONES = [
    Zone("entrance", box(0.0, 0.0, 15.0, 9.0)),
    Zone("checkout", box(15.0, 0.0, WIDTH_M, 9.0)),
    Zone("aisles_west", box(0.0, 9.0, 17.0, DEPTH_M)),
    Zone("aisles_centre", box(17.0, 9.0, 33.0, DEPTH_M)),
    Zone("aisles_east", box(33.0, 9.0, WIDTH_M, DEPTH_M)),
]


@dataclass
class Shopper:
    targets: list[tuple[float, float]]
    pauses_s: list[float]
    speed_mps: float
    paused_until_s: float | None = None
    leaving: bool = False


def walkable() -> Polygon:
    return shapely.difference(box(0.0, 0.0, WIDTH_M, DEPTH_M), shapely.union_all(RACKS))


def shelf_point(rng: np.random.Generator, floor: Polygon) -> tuple[float, float]:
    """A browsing spot in an aisle, clear of the racks."""
    clear = floor.buffer(-0.6)
    while True:
        x, y = rng.uniform(1.0, WIDTH_M - 1.0), rng.uniform(10.0, DEPTH_M - 1.0)
        if clear.contains(Point(x, y)):
            return float(x), float(y)


def itinerary(rng: np.random.Generator, floor: Polygon) -> tuple[list[tuple[float, float]], list[float]]:
    visits = int(np.clip(2 + rng.poisson(2.5), 2, 8))
    targets = [shelf_point(rng, floor) for _ in range(visits)]
    pauses = list(np.clip(rng.lognormal(math.log(50.0), 0.6, visits), 5.0, 400.0))
    till = TILLS[int(rng.integers(len(TILLS)))]
    targets.append((float(till[0]), float(till[1])))
    pauses.append(float(rng.uniform(20.0, 90.0)))
    targets.append(EXIT)
    pauses.append(0.0)
    return targets, pauses


def simulate(minutes: float, peak_shoppers: int, sample_hz: float, seed: int) -> list[tuple[float, np.ndarray, np.ndarray, np.ndarray]]:
    """Positions of everybody at sample_hz: [(time_s, ids, x_m, y_m)]. Starts with peak_shoppers in the
    store and keeps it near that level with Poisson arrivals (the busy hour of a day)."""
    rng = np.random.default_rng(seed)
    floor = walkable()
    simulation = jps.Simulation(model=jps.CollisionFreeSpeedModel(), geometry=floor, dt=0.05)
    stage = simulation.add_direct_steering_stage()
    journey = simulation.add_journey(jps.JourneyDescription([stage]))
    shoppers: dict[int, Shopper] = {}

    def add(position: tuple[float, float], partial: bool) -> None:
        targets, pauses = itinerary(rng, floor)
        if partial:  # already part-way through the visit
            cut = int(rng.integers(0, len(targets) - 2))
            targets, pauses = targets[cut:], pauses[cut:]
        speed = float(np.clip(rng.normal(1.2, 0.2), 0.6, 1.8))
        agent_id = simulation.add_agent(jps.CollisionFreeSpeedModelAgentParameters(
            position=position, journey_id=journey, stage_id=stage, desired_speed=speed, radius=0.2))
        simulation.agent(agent_id).target = targets[0]
        shoppers[agent_id] = Shopper(targets, pauses, speed)

    starts = jps.distribute_by_number(polygon=floor.intersection(box(0.5, 9.5, WIDTH_M - 0.5, DEPTH_M - 0.5)),
                                      number_of_agents=peak_shoppers, distance_to_agents=0.6, distance_to_polygon=0.4, seed=seed)
    for position in starts:
        add(tuple(position), partial=True)
    mean_stay_s = 6 * 60.0 + 60.0 + 6 * 15.0  # browsing + till + walking, roughly
    arrival_rate = peak_shoppers / mean_stay_s
    next_arrival = rng.exponential(1.0 / arrival_rate)
    duration_s = minutes * 60.0
    steps_per_sample = max(1, round(1.0 / (sample_hz * simulation.delta_time())))
    samples = []
    last_report = time.monotonic()
    while simulation.elapsed_time() < duration_s:
        now = simulation.elapsed_time()
        if now >= next_arrival:
            if not list(simulation.agents_in_range(ENTRY, 0.6)):
                add(ENTRY, partial=False)
                next_arrival += rng.exponential(1.0 / arrival_rate)
        if simulation.iteration_count() % steps_per_sample == 0:
            _steer(simulation, shoppers, now)
            ids = np.fromiter(shoppers, dtype=np.int64, count=len(shoppers))
            positions = np.array([simulation.agent(i).position for i in ids]).reshape(-1, 2)
            samples.append((now, ids, positions[:, 0].copy(), positions[:, 1].copy()))
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                print(f"[store] simulated {now / 60:.1f}/{minutes:g} min, {len(shoppers)} shoppers in the store", file=sys.stderr, flush=True)
        simulation.iterate()
    return samples


def _steer(simulation: jps.Simulation, shoppers: dict[int, Shopper], now: float) -> None:
    """Next target on arrival; browse by standing still; leave through the exit."""
    for agent_id, shopper in list(shoppers.items()):
        agent = simulation.agent(agent_id)
        if shopper.paused_until_s is not None:
            if now < shopper.paused_until_s:
                continue
            shopper.paused_until_s = None
            agent.model.desired_speed = shopper.speed_mps
            shopper.targets.pop(0)
            shopper.pauses_s.pop(0)
            agent.target = shopper.targets[0]
            continue
        x, y = agent.position
        tx, ty = shopper.targets[0]
        if math.hypot(tx - x, ty - y) > 0.8:
            continue
        if len(shopper.targets) == 1:  # at the exit
            simulation.mark_agent_for_removal(agent_id)
            del shoppers[agent_id]
            continue
        shopper.paused_until_s = now + shopper.pauses_s[0]
        agent.model.desired_speed = 0.0
