"""Anonymizer node: confirmed tracks → keyed rotating IDs, grid cells, size class, heading (no speed); and the true
totals of the release grid's open segments (core/release/totals.py), handed to the aggregator through its
~/release_cells service and kept in memory until the aggregator has recorded their release durably."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

from privacy_vision.core.anonymizer import (
    Anonymizer,
    AnonymizerSettings,
    TrackSample,
    direction_sector,
    round_time,
)
from privacy_vision.core.camera_pose import FLOOR_FRAME
from privacy_vision.core.geometry import ConfigError, load_exclusions, load_zones
from privacy_vision.core.graph import RELEASE_CELLS_SERVICE
from privacy_vision.core.release.events import EventTotals
from privacy_vision.core.release.grid import EVENTS_KIND, GROUP_KIND, GROUP_TIER, PRESENCE_KIND
from privacy_vision.core.release.lineage import TrackPoint
from privacy_vision.core.release.presence import PresenceTotals
from privacy_vision.core.release.strict import GroupTotals
from privacy_vision.core.release.totals import Totals, TotalsSettings, TotalsValues, TrueTotals
from privacy_vision.nodes.common import (
    ANONYMIZED_TOPIC,
    ERROR,
    OK,
    RELIABLE_QOS,
    TRACKS_TOPIC,
    WARN,
    ParameterSpec,
    PeerParameter,
    PrivacyVisionNode,
    StartupError,
    run_node,
    seconds_to_stamp,
    stamp_to_seconds,
)
from privacy_vision_msgs.msg import AnonymizedTrack, AnonymizedTracks, CellTotals, Track, Tracks
from privacy_vision_msgs.srv import ReleaseCells

ANONYMIZER_PARAMETERS = {
    "grid_size_m": ParameterSpec("floor positions are snapped to cells of this size (metres)", 0.05, 10.0),
    "time_precision_s": ParameterSpec("timestamps are floored to this precision (seconds)", 0.0, 3600.0),
    "rotation_interval_s": ParameterSpec(
        "privacy-ID key lifetime; IDs of two key periods cannot be linked", 1.0, 86400.0
    ),
    "direction_sectors": ParameterSpec("heading sectors: 4 or 8", 4, 8),
    "min_speed_mps": ParameterSpec("below this floor speed the direction is 'none'", 0.0, 5.0),
    "size_thresholds": ParameterSpec("box height / frame height limits of small and medium"),
}
# The release model's settings the anonymizer enforces before noise (core/release/totals.py: TotalsSettings).
TOTALS_PARAMETERS = {
    "window_s": ParameterSpec("period of the window tier in seconds; must divide an hour", 1.0, 3600.0, read_only=True),
    "tick_s": ParameterSpec(
        "presence is sampled every tick_s seconds; must divide window_s", 0.1, 60.0, read_only=True
    ),
    "weight_steps": ParameterSpec(
        "units one body adds per tick at full weight (weight resolution)", 1, 1000, read_only=True
    ),
    "same_body_radius_m": ParameterSpec(
        "simultaneous tracks closer than this on the floor count as one body (metres)", 0.0, 2.0
    ),
    "max_frame_gap_s": ParameterSpec(
        "a frame's people hold for this long; later ticks are unobserved (seconds)", 0.1, 60.0
    ),
    "stitch_radius_m": ParameterSpec(
        "a new track this close to where a track was lost continues its lineage (metres; 0 = no stitching)", 0.0, 10.0
    ),
    "stitch_window_s": ParameterSpec(
        "... if born at most this long after that track was last seen (seconds)", 0.0, 60.0
    ),
    "boundary_hysteresis_m": ParameterSpec("distance from a zone edge needed to count an entry or exit", 0.0, 5.0),
    "dwell_thresholds_s": ParameterSpec("dwell classes: short below the first, long from the second (seconds)"),
    "zones_per_day": ParameterSpec(
        "events: zones one lineage may count in per day (the site counts once besides)", 1, 100
    ),
    "groups_per_day": ParameterSpec(
        "strict mode (aggregator mode 'strict'): pending groups one lineage may join per day; 0 = none formed", 0, 1000
    ),
}
MAX_PENDING = 20_000  # closed segments held for an unreachable aggregator (about 2 days of 3 zones at 15 minutes)
MAX_STAMP_SKEW_S = 86_400.0  # frames stamped further than this from the device clock are refused
STOP_DELIVERY_S = 3.0  # at the ordered stop, the last segments are handed on for at most this long
BATCH = 64
ANSWER_TIMEOUT_S = 10.0


def cell_message(totals: Totals, settings: TotalsSettings) -> CellTotals:
    """One segment's true totals as the ~/release_cells request carries them."""
    message = CellTotals(
        window_s=float(settings.grid.window_s),
        tick_s=float(settings.grid.tick_s),
        weight_steps=settings.presence.weight_steps,
        zones_per_day=settings.events.zones_per_day,
        groups_per_day=settings.groups_per_day,
        zone_id=totals.zone_id,
        period_start_s=totals.period_start_s,
    )
    if isinstance(totals, PresenceTotals):
        message.kind, message.tier = PRESENCE_KIND, totals.tier
        message.period_end_s = totals.period_start_s + settings.grid.period_s(totals.tier)
        message.segment_start_s, message.segment_end_s = totals.segment_start_s, totals.segment_end_s
        message.observed_ticks, message.bins = totals.observed_ticks, list(totals.bins)
    elif isinstance(totals, EventTotals):
        message.kind, message.tier = EVENTS_KIND, "day"
        message.period_end_s = totals.period_start_s + settings.grid.period_s("day")
        message.segment_start_s, message.segment_end_s = totals.segment_start_s, totals.segment_end_s
        message.observed_s, message.bound_instance = totals.observed_s, totals.bound_instance
        message.footfall, message.entries, message.exits = totals.footfall, totals.entries, totals.exits
    else:
        message.kind, message.tier = GROUP_KIND, GROUP_TIER
        message.period_end_s = totals.period_end_s
        message.segment_start_s, message.segment_end_s = totals.period_start_s, totals.period_end_s
        message.size, message.bound_instance = totals.size, totals.bound_instance
    return message


class AnonymizerNode(PrivacyVisionNode):
    """The last node that knows track identity: pseudonyms out; lineages, zone stays and true totals kept in."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("anonymizer", **node_options)

    def configure(self) -> None:
        settings = AnonymizerSettings(**self.declare_settings(AnonymizerSettings(), ANONYMIZER_PARAMETERS))
        zones_file = self.declare(
            "zones_file", "", "YAML with zone polygons (and staff exclusion areas) in floor metres", read_only=True
        )
        values = TotalsValues(**self.declare_settings(TotalsValues(), TOTALS_PARAMETERS))
        try:
            self.anonymizer = Anonymizer(settings, time.time())
            if not zones_file:
                raise ConfigError("parameter 'zones_file' is empty: point it at a zones YAML (see config/zones.yaml)")
            self.zones, self.exclusions = load_zones(zones_file), load_exclusions(zones_file)
            self.totals_settings = values.settings()
            self.totals_settings.validate()
            TrueTotals(self.zones, self.exclusions, self.totals_settings, time.time())  # refuses overlapping zones now
        except (ConfigError, ValueError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.totals: TrueTotals | None = None  # opened at the first frame, on the frames' own clock
        self.privacy_parameters = {*ANONYMIZER_PARAMETERS, *TOTALS_PARAMETERS}
        self.dpia_parameters = set(self.privacy_parameters)
        self.publisher = self.create_data_publisher(AnonymizedTracks, ANONYMIZED_TOPIC, RELIABLE_QOS)
        self.create_subscription(Tracks, TRACKS_TOPIC, self._on_tracks, RELIABLE_QOS)
        self.client = self.create_client(ReleaseCells, RELEASE_CELLS_SERVICE)
        self._lock = threading.Lock()  # the totals and the queue: the executor thread and the delivery thread
        self._pending: deque[Totals] = deque()
        self._last_frame: tuple[float, float] | None = None  # (stamp, monotonic time it arrived)
        self._released_until: float | None = None  # the aggregator's presence frontier, once it answered
        self._delivery_error = ""
        self._stop_deadline: float | None = None
        self.frames = self.refused_stamps = self.delivered = self.dropped_segments = 0
        self._wake = threading.Event()
        self._stop_delivery = threading.Event()
        self._delivery = threading.Thread(target=self._deliver_loop, name="anonymizer-delivery", daemon=True)
        self._delivery.start()
        self.aggregator_mode = PeerParameter(self, "aggregator", "mode")  # strict mode needs groups_per_day ≥ 1
        self.create_timer(1.0, self._tick)

    # -- parameters ------------------------------------------------------------------------------------
    def _changes(self, updates: dict[str, Any]) -> tuple[AnonymizerSettings, TotalsSettings]:
        changes = {n: tuple(v) if isinstance(v, (list, tuple)) else v for n, v in updates.items()}
        anonymizer = AnonymizerSettings(
            **{**self.anonymizer.settings.__dict__, **{n: v for n, v in changes.items() if n in ANONYMIZER_PARAMETERS}}
        )
        current = {name: self.get_parameter(name).value for name in TOTALS_PARAMETERS}
        current = {n: tuple(v) if isinstance(v, (list, tuple)) else v for n, v in current.items()}
        totals = TotalsValues(**{**current, **{n: v for n, v in changes.items() if n in TOTALS_PARAMETERS}})
        return anonymizer, totals.settings()

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        if updates.get("groups_per_day") == 0 and self.aggregator_mode.value == "strict":
            raise ValueError(
                "the aggregator is in strict mode, which releases only groups: set /aggregator mode default first"
            )
        anonymizer, totals = self._changes(updates)
        anonymizer.validate()
        totals.validate()

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        anonymizer, totals = self._changes(updates)
        self.anonymizer.settings = anonymizer
        if "rotation_interval_s" in updates:
            self.anonymizer.key.rotation_interval_s = anonymizer.rotation_interval_s
        if set(updates) & set(TOTALS_PARAMETERS):
            with self._lock:
                self.totals_settings = totals
                if self.totals is not None:
                    self._pending.extend(self.totals.reconfigure(totals, self._now()))

    # -- frames ----------------------------------------------------------------------------------------
    def _on_tracks(self, message: Tracks) -> None:
        if not self.accepting(message):
            return
        now = time.time()
        stamp = stamp_to_seconds(message.header.stamp)
        if abs(stamp - now) > MAX_STAMP_SKEW_S:
            self.refused_stamps += 1
            if self.refused_stamps == 1:
                self.get_logger().warning(
                    f"a frame stamped {stamp - now:+.0f} s from the device clock was refused (more than "
                    f"{MAX_STAMP_SKEW_S:g} s): check the camera's clock; counted on /diagnostics"
                )
            return
        if self.anonymizer.key.rotate_if_due(now):
            self.get_logger().info(f"privacy key rotated on schedule (epoch {self.anonymizer.key.epoch})")
            self.audit_or_retry("key_rotated", reason="schedule", epoch=self.anonymizer.key.epoch)
        height = max(message.image_height, 1)
        confirmed = [
            TrackSample(t.track_id, t.x_m, t.y_m, t.vx_mps, t.vy_mps, (t.box[3] - t.box[1]) / height)
            for t in message.tracks
            if t.state == Track.STATE_CONFIRMED
        ]
        records = self.anonymizer.anonymize_frame(confirmed)
        out = AnonymizedTracks(
            key_epoch=self.anonymizer.key.epoch, grid_size_m=float(self.anonymizer.settings.grid_size_m)
        )
        out.header.frame_id = FLOOR_FRAME
        seconds_to_stamp(round_time(stamp, self.anonymizer.settings.time_precision_s), out.header.stamp)
        out.tracks = [
            AnonymizedTrack(
                privacy_id=r.privacy_id,
                cell_x_m=r.cell_x_m,
                cell_y_m=r.cell_y_m,
                size_category=r.size_category,
                direction=r.direction,
            )
            for r in records
        ]
        self.frames += 1
        self.publisher.publish(out)
        settings = self.anonymizer.settings
        confirmed_tracks = [t for t in message.tracks if t.state == Track.STATE_CONFIRMED]
        points = [
            TrackPoint(t.track_id, t.x_m, t.y_m, r.direction, t.presence_weight, True)
            for t, r in zip(confirmed_tracks, records)
        ] + [  # tentative and lost tracks: in presence by their calibrated weight only (never on a topic, no event)
            TrackPoint(
                t.track_id,
                t.x_m,
                t.y_m,
                direction_sector(t.vx_mps, t.vy_mps, settings.direction_sectors, settings.min_speed_mps),
                t.presence_weight,
                False,
            )
            for t in message.tracks
            if t.state != Track.STATE_CONFIRMED and t.presence_weight > 0
        ]
        with self._lock:
            if self.totals is None:
                self._open_totals(stamp)
            self._last_frame = (stamp, time.monotonic())
            self._queue(self.totals.observe(stamp, points))

    def _open_totals(self, stamp: float) -> None:
        """Integrate from the first frame, but never from before what the aggregator already released (a restart
        with the clock stepped back would re-integrate released time, which the store would refuse)."""
        start = max(stamp, self._released_until or 0.0)
        self.totals = TrueTotals(self.zones, self.exclusions, self.totals_settings, start)

    def _now(self) -> float:
        """Now on the frames' clock: the last frame's stamp plus the time since it arrived."""
        if self._last_frame is None:
            return time.time()
        stamp, arrived = self._last_frame
        return stamp + time.monotonic() - arrived

    def _tick(self) -> None:
        with self._lock:
            if self.totals is not None:
                self._queue(self.totals.advance(self._now()))
        self._report()

    def _queue(self, closed: list[Totals]) -> None:
        self._pending.extend(closed)
        while len(self._pending) > MAX_PENDING:
            self._pending.popleft()
            self.dropped_segments += 1
        if closed:
            self._wake.set()

    # -- delivery (a background thread: a service call must not block the executor) -----------------------
    def _deliver_loop(self) -> None:
        while not self._stop_delivery.is_set():
            try:
                if not self._deliver_batch():
                    self._wake.wait(timeout=1.0)
                    self._wake.clear()
            except Exception as error:  # reported on /diagnostics and retried: this thread never dies
                self._delivery_error = f"{type(error).__name__}: {error}"
                self.get_logger().error(f"handing segments to the aggregator failed, retrying: {self._delivery_error}")
                self._stop_delivery.wait(1.0)

    def _deliver_batch(self) -> bool:
        """Offer the oldest segments; True when some were acknowledged (more may follow at once)."""
        with self._lock:
            batch = list(self._pending)[:BATCH]
            settings = self.totals_settings
        if not batch and self._released_until is not None:
            return False
        if not self.client.service_is_ready():
            self._delivery_error = f"{RELEASE_CELLS_SERVICE} not available: segments are kept until it is"
            return False
        done = threading.Event()
        future = self.client.call_async(ReleaseCells.Request(cells=[cell_message(t, settings) for t in batch]))
        future.add_done_callback(lambda _: done.set())
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while not done.wait(timeout=0.1):  # interruptible: a shutdown does not wait for an answer that cannot come
            if self._stop_delivery.is_set() or time.monotonic() > deadline:
                future.cancel()
                self._delivery_error = f"{RELEASE_CELLS_SERVICE} did not answer: segments are kept"
                return False
        answer = future.result()
        if self._released_until is None and answer.released_until_s >= 0:  # the first answer of an active aggregator
            with self._lock:
                self._released_until = answer.released_until_s
                if self.totals is not None and self.totals.start_s < answer.released_until_s:
                    self._open_totals(answer.released_until_s)  # only seconds before the first answer are lost
        statuses = list(answer.statuses)
        acknowledged = [not status.startswith("failed") for status in statuses] + [False] * (len(batch) - len(statuses))
        failures = [status for status in statuses if status.startswith("failed")]
        self._delivery_error = failures[0] if failures else ""
        with self._lock:
            for totals, status, acked in zip(batch, statuses, acknowledged):
                if acked and totals in self._pending:  # (it may have been dropped meanwhile, past MAX_PENDING)
                    self._pending.remove(totals)
                    self.delivered += 1
                if status == "released" and isinstance(totals, GroupTotals):
                    self.totals.group_released(totals.zone_id, totals.period_start_s, totals.period_end_s)
        return any(acknowledged)

    def ready_to_stop(self) -> bool:
        """The ordered stop: end every open segment now, then wait (executor still spinning) until the aggregator
        has recorded them, at most STOP_DELIVERY_S."""
        if not hasattr(self, "_delivery"):  # stopped before it was configured: nothing to hand on
            return True
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + STOP_DELIVERY_S
            with self._lock:
                if self.totals is not None:
                    self._queue(self.totals.flush(self._now()))
        with self._lock:
            left = len(self._pending)
        if left and time.monotonic() < self._stop_deadline and self.client.service_is_ready():
            return False
        if left:
            self.get_logger().error(
                f"{left} closed segments could not be handed to the aggregator within {STOP_DELIVERY_S:g} s "
                f"({self._delivery_error or 'no answer'}): they are not released (true totals are never stored)"
            )
        return True

    def release(self) -> None:
        self._stop_delivery.set()
        self._wake.set()
        self._delivery.join(timeout=1.0)  # it ends within 0.1 s unless a commit is in progress (a daemon thread)

    def destroy_node(self) -> None:
        if hasattr(self, "_delivery"):  # configured: its delivery thread must not outlive the client
            self.release()
        super().destroy_node()

    # -- compliance and health ----------------------------------------------------------------------------
    def personal_data_summary(self) -> dict:
        held = self.totals.lineages.held() if self.totals is not None else 0
        return {
            "holds_personal_data": held > 0,
            "key_epoch": self.anonymizer.key.epoch,
            "lineages_held": held,
            "rotation_interval_s": self.anonymizer.settings.rotation_interval_s,
            "categories": "per live lineage (stitched tracks, memory only): its last floor position, zone stays and "
            "arrival times, the zones and strict-mode groups it counted in today; dropped a minute after its track "
            "ends. IDs come from an in-memory key that is never stored. Presence totals hold no identity",
        }

    def erase_personal_data(self) -> dict:
        now = time.time()
        epoch = self.anonymizer.forget(now)
        with self._lock:
            dropped, closed = self.totals.forget(self._now()) if self.totals is not None else (0, [])
            self._queue(closed)
        self.get_logger().info(f"privacy key rotated on request (epoch {epoch}); {dropped} lineages dropped")
        return {"key_rotated": True, "key_epoch": epoch, "lineages_purged": dropped}

    def _report(self) -> None:
        with self._lock:
            pending = len(self._pending)
            frontier = self.totals.presence.frontier_s if self.totals is not None else 0.0
        values = {
            "frames": self.frames,
            "key_epoch": self.anonymizer.key.epoch,
            "segments_delivered": self.delivered,
            "segments_pending": pending,
            "segments_dropped": self.dropped_segments,
            "frames_refused_stamp": self.refused_stamps,
            "integrated_until": f"{frontier:.0f}",
        }
        if self.dropped_segments:
            self.publish_diagnostic(
                ERROR, f"{self.dropped_segments} closed segments dropped: the aggregator is unreachable", values
            )
        elif self._delivery_error and pending:
            self.publish_diagnostic(WARN, self._delivery_error, values)
        else:
            self.publish_diagnostic(OK, "anonymizing", values)

    def summary(self) -> str:
        return f"{self.frames} frames anonymised, {self.delivered} segments handed to the aggregator"


NODE_CLASS = AnonymizerNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
