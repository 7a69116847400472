"""V: how many tracks, and how many stitched tracks (lineages), the pipeline makes of one annotated person, by time in
view. A person whose visit breaks into V lineages counts V times in the event metrics (footfall, entries, exits),
so the DPIA states V's distribution (p50 / p90 / max per time-in-view bin), never a mean as a bound.

    .venv/bin/python bench/lineages_per_person.py [--markdown PATH]

Runs (bench/floor_tracks.py): the five shared MOT15 sequences with their public detections and the project's
tracker, and the PETS video (vtest.avi) with the shipped YOLOX-nano and the tracker. In every frame an annotated
person's box is matched one-to-one to a confirmed track's box (Hungarian on IoU, at least 0.5); V before stitching
is the number of distinct tracks matched to the person, V after is the number of distinct lineages those tracks
belonged to when matched. Lineages are the release model's own (`Lineages`, default LineageSettings), fed every
confirmed track's floor point frame by frame. Floor coordinates: the gt's calibration where it has one
(PETS09-S2L1, ETH-Sunnyday), else image coordinates over a pixels-per-metre scale from the median annotated box
height (floor_tracks.py says which). Time in view: from a person's first to last annotated frame, at the sequence's
frame rate. People never matched to a track (V = 0) are counted apart. Percentiles are of observed values (the
inverted CDF), pooled over all six runs per bin.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import itertools

import floor_tracks

from privacy_vision.core.release.grid import NO_DIRECTION
from privacy_vision.core.release.lineage import Lineages, LineageSettings, TrackPoint
from privacy_vision.core.tracking import iou_matrix

MIN_IOU = 0.5
BINS = ((0.0, 5.0, "< 5 s"), (5.0, 10.0, "5-10 s"), (10.0, 20.0, "10-20 s"), (20.0, 40.0, "20-40 s"))
LAST_BIN = (40.0, float("inf"), "≥ 40 s")
COMMAND = ".venv/bin/python bench/lineages_per_person.py"
RATE_FROM_S = 20.0  # extra lineages per minute are taken over people in view at least this long


def bin_label(seconds: float) -> str:
    return next(label for low, high, label in (*BINS, LAST_BIN) if low <= seconds < high)


def per_person(run: floor_tracks.Run) -> tuple[list[tuple[float, int, int]], dict[str, int]]:
    """(time in view s, distinct tracks, distinct lineages) for every annotated person of the run, and the kinds of
    track change on one person (see `change_kind`)."""
    lineages = Lineages([], LineageSettings())
    matches: dict[int, list[tuple[float, int, int]]] = {}  # person -> (stamp, track, lineage) per matched frame
    alive: dict[int, tuple[float, float]] = {}  # track -> (first, last) confirmed stamp
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for frame in run.frames:
        found = frame.confirmed  # lineages are stitched from confirmed tracks only
        points = [TrackPoint(int(t[0]), float(t[5]), float(t[6]), NO_DIRECTION) for t in found]
        lineage_of = [seen.lineage_id for seen in lineages.observe(frame.stamp_s, points)]
        for key in found[:, 0].astype(int):
            alive[key] = (alive.get(key, (frame.stamp_s,))[0], frame.stamp_s)
        for pid in frame.people[:, 0].astype(int):
            first.setdefault(pid, frame.number)
            last[pid] = frame.number
        if not len(found) or not len(frame.people):
            continue
        overlap = iou_matrix(frame.people[:, 1:5], found[:, 1:5])
        for i, j in zip(*linear_sum_assignment(-overlap)):
            if overlap[i, j] >= MIN_IOU:
                matches.setdefault(int(frame.people[i, 0]), []).append((frame.stamp_s, int(found[j, 0]), lineage_of[j]))
    kinds = {kind: 0 for kind in CHANGE_KINDS}
    for seen in matches.values():
        for (_, before, old), (stamp, after, new) in itertools.pairwise(seen):
            if before != after:
                kinds[change_kind(alive[before], alive[after], stamp, old == new)] += 1
    rows = [
        (
            (last[pid] - first[pid] + 1) / run.fps,
            len({track for _, track, _ in matches.get(pid, ())}),
            len({lineage for _, _, lineage in matches.get(pid, ())}),
        )
        for pid in first
    ]
    return rows, kinds


CHANGE_KINDS = ("stitched", "predecessor still confirmed", "successor confirmed before predecessor ended", "other")


def change_kind(before: tuple[float, float], after: tuple[float, float], stamp: float, same_lineage: bool) -> str:
    """Why a person's track changed: stitched into one lineage; the old track still confirmed (it moved to someone
    else or coexists: an identity swap); the new track already confirmed before the old one ended (a handover, which
    stitching at a track's birth cannot join); or a new track born after the old one ended but beyond the stitching
    distance or time."""
    if same_lineage:
        return CHANGE_KINDS[0]
    if before[1] >= stamp:
        return CHANGE_KINDS[1]
    if after[0] <= before[1]:
        return CHANGE_KINDS[2]
    return CHANGE_KINDS[3]


def quantiles(values: list[int]) -> dict[str, float]:
    array = np.asarray(values)
    return {
        "p50": float(np.percentile(array, 50, method="inverted_cdf")),
        "p90": float(np.percentile(array, 90, method="inverted_cdf")),
        "max": float(array.max()),
    }


def table(rows: list[tuple[float, int, int]]) -> tuple[list[str], dict]:
    """Markdown rows per time-in-view bin, and the bins' lineage quantiles for measured.py."""
    lines = [
        "| time in view | people (never tracked) | tracks per person p50 / p90 / max (mean) | lineages per person "
        "p50 / p90 / max (mean) |",
        "|---|---|---|---|",
    ]
    by_bin = {}
    for low, high, label in (*BINS, LAST_BIN):
        inside = [(v, s) for seconds, v, s in rows if low <= seconds < high]
        seen = [(v, s) for v, s in inside if v]
        if not seen:
            lines.append(f"| {label} | {len(inside)} ({len(inside)}) | - | - |")
            continue
        before, after = quantiles([v for v, _ in seen]), quantiles([s for _, s in seen])
        by_bin[label] = {**after, "people": len(seen)}
        lines.append(
            f"| {label} | {len(seen)} ({len(inside) - len(seen)}) | "
            + " | ".join(
                f"{q['p50']:g} / {q['p90']:g} / {q['max']:g} ({np.mean(values):.2f})"
                for q, values in ((before, [v for v, _ in seen]), (after, [s for _, s in seen]))
            )
            + " |"
        )
    return lines, by_bin


def describe(kinds: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in kinds.items()) + "."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = parser.parse_args()
    missing = [s for s in floor_tracks.SEQUENCES if not (floor_tracks.MOT15 / s / "det/det.txt").is_file()]
    if missing or not floor_tracks.perception.pets_video().is_file():
        parser.error(f"the shared data is missing ({missing or 'vtest.avi'}): ../shared must sit beside the repository")
    settings = LineageSettings()
    lines = [
        f"Command: `{COMMAND}`; {dt.date.today().isoformat()}. Stitching: LineageSettings defaults (a new track born "
        f"within {settings.stitch_radius_m:g} m and {settings.stitch_window_s:g} s of where a track was lost continues "
        "its lineage).",
        "",
    ]
    pooled, changes = [], {kind: 0 for kind in CHANGE_KINDS}
    for run in [*(floor_tracks.public_run(s) for s in floor_tracks.SEQUENCES), floor_tracks.pets_video_run("yolox")]:
        print(f"[V] {run.name}", file=sys.stderr, flush=True)
        rows, kinds = per_person(run)
        pooled += rows
        changes = {kind: changes[kind] + kinds[kind] for kind in CHANGE_KINDS}
        lines += [
            f"### {run.name}",
            "",
            f"{len(run.frames) / run.fps:.0f} s at {run.fps:g} fps; floor: {run.floor}.",
            "",
        ]
        lines += [*table(rows)[0], "", "Track changes on one person: " + describe(kinds), ""]
    pooled_lines, by_bin = table(pooled)
    rates = [(lineage - 1) * 60 / seconds for seconds, _, lineage in pooled if seconds >= RATE_FROM_S and lineage]
    rate = quantiles(rates)
    longest = max(seconds for seconds, _, _ in pooled)
    lines += [
        "### All six runs pooled (what the DPIA states)",
        "",
        *pooled_lines,
        "",
        "Track changes on one person: " + describe(changes),
        "",
        f"Extra lineages per minute in view, people in view ≥ {RATE_FROM_S:g} s ({len(rates)}): p50 {rate['p50']:.2f}, "
        f"p90 {rate['p90']:.2f}, max {rate['max']:.2f}; the longest time in view measured is {longest:.0f} s.",
        "",
        "measured.py:",
        "",
        repr(by_bin),
    ]
    floor_tracks.report("Tracks and lineages per annotated person", lines, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
