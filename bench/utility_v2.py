"""The comparison row of bench/privacy_utility.py: release model v2 (bench/release_v2, frozen) at its defaults, fed
the confirmed tracks (as its anonymizer was), scored
as its own benchmark scored it: per cell, the distinct people (tracks) admitted (v2's "occupancy": a head count per
cell, not people present on average), against the exact distinct people in the cell (no bound, no hysteresis).
v2 states no intervals, so it has no coverage; "< k" cells count as released 0.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from release_v2.aggregator import AggregatorSettings, Bounds, CellReleaser, TrackDayAccount
from release_v2.contributions import TIERS, CellTotals, ContributionBounder, ContributionSettings
from release_v2.privacy import PrivacyLedger
from utility_workloads import Frame, Workload

from privacy_vision.core.anonymizer import AnonymizedRecord, AnonymizerSettings, RotatingKey, quantize

UNBOUNDED = (10**6, 10**6, 10**6)


@dataclass
class V2Score:
    """One tier of one draw: accuracy, MAE, signed bias and the share shown as "< k"."""

    accuracy: float
    mae: float
    bias: float
    below_k: float


def records(frames: list[Frame], device: bool) -> list[tuple[float, list[tuple[int, AnonymizedRecord]]]]:
    """What reaches v2's bounder: the anonymizer's grid cells and pseudonyms (device), or exact positions (truth)."""
    settings = AnonymizerSettings()
    key = RotatingKey(settings.rotation_interval_s, frames[0].stamp_s)
    out = []
    for frame in frames:
        row = []
        confirmed = frame.confirmed if frame.confirmed is not None else np.ones(len(frame.keys), dtype=bool)
        for pid, x, y, heading, counted in zip(
            frame.keys.tolist(), frame.x.tolist(), frame.y.tolist(), frame.headings, confirmed.tolist()
        ):
            if not counted:
                continue  # v2 took confirmed tracks only
            if device:
                key.rotate_if_due(frame.stamp_s)
                x, y, name = quantize(x, settings.grid_size_m), quantize(y, settings.grid_size_m), key.pseudonym(pid)
            else:
                name = str(pid)
            row.append((pid, AnonymizedRecord(name, x, y, "medium", heading)))
        out.append((frame.stamp_s, row))
    return out


def cells(workload: Workload, device: bool) -> list[CellTotals]:
    """v2's cell totals: as its device computed them (grid, bound L, hysteresis) or exact (no bound)."""
    contribution = ContributionSettings()
    if not device:
        contribution = replace(contribution, cells_per_day=UNBOUNDED, boundary_hysteresis_m=0.0)
    bounder = ContributionBounder(workload.zones, contribution)
    out: list[CellTotals] = []
    for stamp, row in records(workload.device if device else workload.truth, device):
        out += bounder.observe(stamp, row)
    return out + bounder.flush()


def score(truth: dict, released: dict, tier: str) -> V2Score:
    keys = [key for key in truth if key[0] == tier]
    true = np.array([truth[key].occupancy for key in keys], dtype=float)
    shown = np.array([released[key][0] if key in released else 0 for key in keys], dtype=float)
    below = np.array([released[key][1] if key in released else True for key in keys])
    return V2Score(
        1.0 - np.abs(shown - true).sum() / max(true.sum(), 1),
        float(np.abs(shown - true).mean()),
        float((shown - true).mean()),
        float(below.mean()),
    )


def v2_scores(workload: Workload, runs: int, store_dir: str | None) -> tuple[dict[str, list[V2Score]], float]:
    """v2 at its defaults over `runs` noise draws; and its ε per track-day."""
    settings, contribution = AggregatorSettings(), ContributionSettings()
    bounds = Bounds(contribution.window_s, contribution.cells_per_day)
    truth = {(c.tier, c.zone_id, c.period_start_s): c for c in cells(workload, device=False)}
    device = cells(workload, device=True)
    scores: dict[str, list[V2Score]] = {tier: [] for tier in TIERS}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(dir=store_dir) as folder:
            ledger = PrivacyLedger(Path(folder) / "ledger.sqlite", settings.daily_epsilon_cap)
            releaser = CellReleaser(settings, ledger, lambda: str(uuid.uuid4()), time.time)
            released = {}
            for totals in device:
                release = releaser.release(totals, bounds)
                released[(totals.tier, totals.zone_id, totals.period_start_s)] = (release.occupancy, release.below_k)
            ledger.close()
        for tier in TIERS:
            scores[tier].append(score(truth, released, tier))
    return scores, TrackDayAccount(settings, bounds).epsilon
