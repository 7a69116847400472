"""What `privacy-vision run` prints (pure Python, no rclpy): the progress line from the nodes' /diagnostics
reports and the final summary of what the ingest stored, each value with its 95% interval.

Frame counts come from two processes that report once a second each, out of phase, so their raw values
do not describe one moment (the detection count could read higher than the frames read). The progress
line therefore compares them at one instant: the older of the two latest reports, the other node's count
interpolated between its reports at that instant. A node that has not reported for a while is shown as
silent with its age, never as a frozen number that looks live.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from privacy_vision.core.intervals import MEANINGS, format_value, release_intervals, sum_interval

SILENT_AFTER_S = 3.0  # the nodes report every second: older than this, a value is shown with its age
IN_FLIGHT_FRAMES = 2  # camera capture: one frame being inferred, one waiting (image link: keep last 1)
RATE_WINDOW_S = 5.0
WINDOWS_SHOWN = 4  # the last windows of each zone in the summary
HOURS_SHOWN = 2


@dataclass(frozen=True)
class Report:
    """One node's /diagnostics values, stamped by the node's clock (wall time on this host)."""

    stamp_s: float
    values: Mapping[str, str]

    def number(self, key: str) -> float:
        try:
            return float(self.values.get(key, 0))
        except ValueError:
            return 0.0


def counter_at(reports: Sequence[Report], key: str, t: float) -> float:
    """A counter's value at time t, interpolated between the reports around t (held flat outside them)."""
    previous = None
    for report in reports:
        if report.stamp_s >= t:
            if previous is None or report.stamp_s == previous.stamp_s:
                return report.number(key)
            share = (t - previous.stamp_s) / (report.stamp_s - previous.stamp_s)
            return previous.number(key) + share * (report.number(key) - previous.number(key))
        previous = report
    return previous.number(key) if previous is not None else 0.0


@dataclass(frozen=True)
class FrameCounts:
    """Frames read from the source, inferred by the detector and dropped, at one instant."""

    read: int
    inferred: int
    dropped: int
    fps: float  # inferred per second over the last few seconds

    def text(self) -> str:
        share = f" ({100 * self.dropped / self.read:.1f}%)" if self.read else ""
        return f"{self.read} read, {self.inferred} inferred, {self.dropped} dropped{share}"


def frame_counts(reports: Mapping[str, Sequence[Report]], capture: str, final: bool = False) -> FrameCounts | None:
    """Read, inferred and dropped at the instant both reporting nodes had reached; None before both reported.

    Camera capture: read = published + dropped behind the source's pace (camera); dropped = those plus the
    frames published but never inferred (overwritten on the keep-last-1 image link while the detector was
    busy, lost in transport, malformed), less the frames still in flight unless the graph has stopped (final).
    In-process capture: the detection node reads the source itself and reports both.
    """
    detection = reports.get("detection") or []
    if not detection:
        return None
    rate_from = detection[-1].stamp_s - RATE_WINDOW_S
    recent = [r for r in detection if r.stamp_s >= rate_from]
    span = recent[-1].stamp_s - recent[0].stamp_s
    fps = (recent[-1].number("frames") - recent[0].number("frames")) / span if span > 0 else 0.0
    if capture == "in_process":
        last = detection[-1]
        inferred, behind = int(last.number("frames")), int(last.number("source_frames_dropped_behind_pace"))
        return FrameCounts(inferred + behind, inferred, behind, fps)
    camera = reports.get("camera") or []
    if not camera:
        return None
    instant = min(camera[-1].stamp_s, detection[-1].stamp_s)
    published = counter_at(camera, "frames", instant)
    behind = counter_at(camera, "dropped_behind_pace", instant)
    inferred = counter_at(detection, "frames", instant)
    in_flight = 0 if final else IN_FLIGHT_FRAMES
    lost = max(0.0, published - inferred - in_flight)
    return FrameCounts(round(published + behind), round(inferred), round(behind + lost), fps)


def progress_text(reports: Mapping[str, Sequence[Report]], capture: str, now_s: float | None = None) -> str:
    """The live line: frames, detector, people tracked, cells released, sent; a silent node with its age."""
    now_s = time.time() if now_s is None else now_s

    def latest(node: str) -> Report | None:
        return reports[node][-1] if reports.get(node) else None

    def silent(node: str) -> str:
        report = latest(node)
        if report is None:
            return " (starting)"
        age = now_s - report.stamp_s
        return f" (no report for {age:.0f} s)" if age > SILENT_AFTER_S else ""

    def value(node: str, key: str, default: str = "-") -> str:
        report = latest(node)
        return str(report.values.get(key, default)) if report else default

    source = "detection" if capture == "in_process" else "camera"
    counts = frame_counts(reports, capture)
    detector = latest("detection")
    if counts is None:
        frames = f"frames: read {value(source, 'frames', '0')}{silent(source)}, detector{silent('detection')}"
    else:
        frames = (
            f"frames: {counts.text()}{silent(source) if source != 'detection' else ''} | "
            f"detector {counts.fps:.1f} fps, {value('detection', 'inference_ms_median')} ms each, "
            f"{detector.values.get('backend', '?') if detector else '?'}{silent('detection')}"
        )
    return (
        f"{frames} | tracking {value('tracking', 'confirmed_tracks', '0')} people{silent('tracking')} | "
        f"cells released {value('aggregator', 'releases', '0')} ({value('aggregator', 'below_k', '0')} < k)"
        f"{silent('aggregator')} | sent {value('uplink', 'delivered', '0')}, queued {value('uplink', 'queued', '0')}"
        f"{silent('uplink')}"
    )


# -- the final summary -----------------------------------------------------------------------------------------
def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%H:%M:%S")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:g} s"
    return f"{seconds / 60:g} min" if seconds < 3600 else f"{seconds / 3600:g} h"


def _shown(release: Mapping, name: str) -> str:
    if release["below_k"]:
        return "< k"
    return format_value(release_intervals(release).get(name))


def _observed(release: Mapping) -> str:
    if release["complete"]:
        return ""
    return f" (observed {_duration(round(release['segment_end_s'] - release['segment_start_s']))} of it)"


def _histogram(release: Mapping, prefix: str, top: int) -> str:
    """The largest bins with their intervals; how many others and their total."""
    if release["below_k"]:
        return "< k"
    bins = {
        name.split(".", 1)[1]: interval
        for name, interval in release_intervals(release).items()
        if name.startswith(prefix)
    }
    order = sorted(bins, key=lambda label: -bins[label].value)
    shown = ", ".join(f"{label} {format_value(bins[label])}" for label in order[:top])
    rest = [bins[label] for label in order[top:]]
    if rest:
        shown += f" ({len(rest)} more: {format_value(sum_interval(rest))} in all)"
    return shown


def zone_lines(zone: str, releases: Sequence[Mapping]) -> list[str]:
    """One zone's values of this run, the newest cells of each tier, each value with its interval."""

    def of(kind: str, tier: str) -> list[Mapping]:
        return sorted(
            (r for r in releases if r["kind"] == kind and r["tier"] == tier), key=lambda r: r["period_start_s"]
        )

    lines = [zone]
    windows = of("presence", "window")
    if windows:
        values = "   ".join(f"{_clock(r['period_start_s'])} {_shown(r, 'occupancy')}" for r in windows[-WINDOWS_SHOWN:])
        which = f"last {WINDOWS_SHOWN} of {len(windows)}" if len(windows) > WINDOWS_SHOWN else f"{len(windows)}"
        below = sum(r["below_k"] for r in windows)
        lines.append(
            f"  occupancy, {_duration(windows[0]['window_s'])} windows   {values}   ({which} windows; {below} < k)"
        )
    for hour in of("presence", "hour")[-HOURS_SHOWN:]:
        when = f"hour {datetime.fromtimestamp(hour['period_start_s'], UTC):%H:%M}"
        lines.append(f"  occupancy, {when}     {_shown(hour, 'occupancy')}{_observed(hour)}")
        lines.append(f"  headings, {when}      {_histogram(hour, 'heading.', 3)}")
        lines.append(f"  dwell, {when}         {_histogram(hour, 'dwell.', 3)}")
    for day in of("presence", "day")[-1:]:
        when = f"day {datetime.fromtimestamp(day['period_start_s'], UTC):%Y-%m-%d}"
        lines.append(f"  occupancy, {when}  {_shown(day, 'occupancy')}{_observed(day)}")
    for day in of("events", "day")[-1:]:
        when = f"day {datetime.fromtimestamp(day['period_start_s'], UTC):%Y-%m-%d}"
        flows = "   ".join(f"{name} {_shown(day, name)}" for name in ("entries", "exits") if name in day["values"])
        lines.append(f"  footfall, {when}   {_shown(day, 'footfall')}{_observed(day)}   {flows}".rstrip())
    for group in of("group", "group"):
        length = _duration(group["period_end_s"] - group["period_start_s"])
        lines.append(f"  group from {_clock(group['period_start_s'])} over {length}   {_shown(group, 'size')}")
    return lines


def format_summary(
    releases: Sequence[Mapping],
    store: Path,
    frames: FrameCounts | None = None,
    dashboard_command: str = "",
) -> str:
    """Per zone, the values of this run as released with their 95% intervals; what each metric means; the
    guarantee; and the command that opens the dashboard on this run."""
    lines = [""]
    if frames is not None:
        lines.append(f"Frames: {frames.text()}.")
    zones = sorted({r["zone_id"] for r in releases})
    if not releases:
        lines.append(f"No release of this run reached the ingest ({store}).")
    else:
        lines += [
            f"Released by this run and stored by the ingest: {len(releases)} releases of {len(zones)} zones ({store}).",
            "Each value as released, then [its 95% interval] as the release states it; '~' marks a noise-dominated "
            "value (its interval",
            f"is wider than the value: it says little beyond 'about this much noise'); '< k': shown as such, the noisy "
            f"count was below k = {releases[0]['k']}. Times in UTC.",
            "",
        ]
        for zone in zones:
            lines += zone_lines(zone, [r for r in releases if r["zone_id"] == zone])
        names = {name.split(".", 1)[0] for r in releases for name in r["values"]}
        lines += ["", "What the values mean:"]
        for metric, meaning in MEANINGS.items():
            if metric in names:
                lines.append(f"  {({'heading': 'headings'}).get(metric, metric):<10} {meaning}")
        presence = next((r for r in releases if r["kind"] == "presence"), None)
        events = next((r for r in releases if r["kind"] != "presence"), None)
        parts = []
        if presence:
            parts.append(f"ε = {presence['epsilon_unit']:.3g} per presence-hour (identity-free)")
        if events:
            delta = f", δ = {events['delta']:.3g}" if events["delta"] else ""
            parts.append(f"ε = {events['epsilon_unit']:.3g}{delta} per stitched-track-day")
        first = presence or events
        lines.append(
            f"Guarantee: {first['mechanism']}, {'; '.join(parts)}; k = {first['k']} shown on the noisy values "
            f"({first['mode']} mode); ε per stitched-track-day charged today "
            f"{max(r['epsilon_spent_today'] for r in releases):.3g} of the daily cap {first['daily_epsilon_cap']:g}."
        )
    if dashboard_command:
        lines.append(f"Open the dashboard on this run: {dashboard_command}")
    return "\n".join(lines)
