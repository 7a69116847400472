"""Uplink node: zone analytics → durable outbox → pinned, signed HTTPS to the ingest. Nothing else leaves."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

from privacy_vision.core.protocol import KeyFileError, canonical_release_bytes, load_key_file
from privacy_vision.core.uplink import Outbox, OutboxFull, PinnedClient, Sender
from privacy_vision_msgs.msg import ZoneAnalytics
from privacy_vision.nodes.common import ANALYTICS_TOPIC, ERROR, OK, RELIABLE_QOS, WARN, PrivacyVisionNode, StartupError, run_node, stamp_to_seconds


def release_from_message(message: ZoneAnalytics) -> dict:
    """The wire format of a release (what the ingest stores and serves)."""
    p = message.privacy
    return {
        "release_id": message.release_id, "zone_id": message.zone_id, "tier": message.tier,
        "period_start_s": stamp_to_seconds(message.period_start), "period_end_s": stamp_to_seconds(message.period_end),
        "complete": message.complete, "below_k": message.below_k, "occupancy": message.occupancy,
        "direction_counts": dict(zip(message.direction_labels, (int(v) for v in message.direction_counts))),
        "dwell_counts": dict(zip(message.dwell_labels, (int(v) for v in message.dwell_counts))),
        "entries": message.entries, "exits": message.exits, "entries_today": message.entries_today,
        "mechanism": p.mechanism, "privacy_unit": p.privacy_unit, "epsilon_cell": p.epsilon_cell, "epsilon_track_day": p.epsilon_track_day,
        "cells_per_day": p.cells_per_day, "window_s": p.window_s, "k": p.k, "mode": p.mode,
        "epsilon_spent_today": p.epsilon_spent_today, "daily_epsilon_cap": p.daily_epsilon_cap,
        "epsilon_by_metric": dict(zip(p.metric_names, p.metric_epsilons)),
    }


class UplinkNode(PrivacyVisionNode):
    def __init__(self) -> None:
        super().__init__("uplink")
        url = self.declare("ingest_url", "https://127.0.0.1:8443/v1/releases", "HTTPS endpoint of the ingest", read_only=True)
        pins = self.declare("pins", [""], "SHA-256 SPKI pins (base64) of the ingest key: primary and backup", read_only=True)
        ca_file = self.declare("ca_file", "", "CA certificate that signed the ingest certificate (empty: system CAs)", read_only=True)
        device_id = self.declare("device_id", "device-1", "device identity sent with every signed request", read_only=True)
        key_file = self.declare("key_file", "var/pki/device.key", "hex HMAC key file, mode 600", read_only=True)
        outbox_path = self.declare("outbox_path", "var/outbox.sqlite", "SQLite outbox of unsent releases", read_only=True)
        max_outbox = self.declare("max_outbox", 100000, "bound of the outbox; when full new releases are refused loudly", minimum=1, maximum=10_000_000, read_only=True)
        self.retry_base_s = self.declare("retry_base_s", 0.5, "first retry delay; doubles per failure with full jitter", minimum=0.01, maximum=60.0)
        self.retry_max_s = self.declare("retry_max_s", 60.0, "longest retry delay", minimum=0.1, maximum=3600.0)
        self.declare("ingest_retention_days", 90.0, "retention the ingest applies to releases (its --retention-days), stated in the DPIA", minimum=0.0, maximum=36500.0, read_only=True)
        self.drain_timeout_s = self.declare("drain_timeout_s", 10.0, "at shutdown, keep sending queued releases this long", minimum=0.0, maximum=600.0)
        try:
            key = load_key_file(key_file)
            client = PinnedClient(url, [p for p in pins if p], ca_file or None, device_id, key)
        except (KeyFileError, ValueError, OSError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.outbox = Outbox(outbox_path, max_outbox)
        self.dpia_parameters = {"ingest_url", "pins", "device_id", "max_outbox", "ingest_retention_days"}
        self.sender = Sender(self.outbox, client, self.retry_base_s, self.retry_max_s, on_delivered=self._audit_sent)
        self._in_outage = False
        self.refused = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outbox_closed = False
        self._thread = threading.Thread(target=self._send_loop, name="uplink-sender", daemon=True)
        self._thread.start()
        self._subscription = self.create_subscription(ZoneAnalytics, ANALYTICS_TOPIC, self._on_release, RELIABLE_QOS)
        self._report_timer = self.create_timer(1.0, self._report)
        self.accept_parameter_updates()
        self.get_logger().info(f"sending to {url} as {device_id}; {self.outbox.size()} releases waiting in the outbox")

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        base = self.current("retry_base_s", updates)
        maximum = self.current("retry_max_s", updates)
        if base > maximum:
            raise ValueError("retry_base_s must not exceed retry_max_s")
        self.sender.base_delay_s, self.sender.max_delay_s = base, maximum
        self.drain_timeout_s = self.current("drain_timeout_s", updates)

    def _on_release(self, message: ZoneAnalytics) -> None:
        if self._outbox_closed:
            self.get_logger().error(f"release {message.release_id} arrived after the outbox was closed at shutdown: not stored")
            return
        release = release_from_message(message)
        try:
            self.outbox.put(release["release_id"], canonical_release_bytes(release))
        except OutboxFull as error:
            self.refused += 1
            self.get_logger().error(f"{error} ({self.refused} refused so far)")
            self.publish_diagnostic(ERROR, "outbox full", {"refused": self.refused, "queued": self.outbox.size()})
            return
        self._wake.set()

    def _audit_sent(self, item) -> None:
        release = json.loads(item.body)
        self.audit.append("release_sent", self.get_name(), release_id=release["release_id"], zone=release["zone_id"],
                          tier=release["tier"], period_start_s=release["period_start_s"], period_end_s=release["period_end_s"],
                          below_k=release["below_k"], mechanism=release["mechanism"], epsilon_cell=release["epsilon_cell"],
                          epsilon_track_day=release["epsilon_track_day"], k=release["k"], privacy_unit=release["privacy_unit"])
        if self._in_outage:
            self._in_outage = False
            self.audit.append("uplink_recovered", self.get_name(), queued=self.outbox.size())

    def _send_loop(self) -> None:
        reported_dead = 0
        while not self._stop.is_set():
            delay = self.sender.drain_once()
            if self.sender.dead_lettered != reported_dead:
                reported_dead = self.sender.dead_lettered
                self.get_logger().error(self.sender.last_error)
            if delay and not self._in_outage:
                self._in_outage = True
                self.audit.append("uplink_failure", self.get_name(), error=self.sender.last_error[:300], queued=self.outbox.size())
            if delay and self.sender.tls_rejected:
                self.get_logger().error(f"{self.sender.last_error}; check the 'pins' and 'ca_file' parameters; retrying in {delay:.1f} s")
                self.publish_diagnostic(ERROR, "TLS peer rejected: nothing sent", {"last_error": self.sender.last_error})
            elif delay:
                self.get_logger().warning(f"delivery failed, retrying in {delay:.1f} s: {self.sender.last_error}")
                self._stop.wait(delay)
            else:
                self._wake.wait(timeout=1.0)
                self._wake.clear()

    def _report(self) -> None:
        queued = self.outbox.size()
        level = ERROR if self.refused or self.sender.dead_lettered or self.sender.tls_rejected else WARN if self.sender.failures and queued else OK
        self.publish_diagnostic(level, "uplink", {"delivered": self.sender.delivered, "queued": queued,
                                                  "failures": self.sender.failures, "refused_outbox_full": self.refused,
                                                  "dead_lettered": self.sender.dead_lettered,
                                                  "last_error": self.sender.last_error})

    def on_shutdown(self) -> None:
        # No release may arrive once the outbox is closing (it used to: "Cannot operate on a closed database").
        self.destroy_subscription(self._subscription)
        self.destroy_timer(self._report_timer)
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=15.0)
        deadline = time.monotonic() + self.drain_timeout_s
        while self.outbox.size() and time.monotonic() < deadline:
            delay = self.sender.drain_once()
            if delay:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        left = self.outbox.size()
        if left:
            self.get_logger().warning(f"{left} releases stay in the outbox and will be sent at the next start")
        self.get_logger().info(f"uplink stopped: {self.sender.delivered} releases delivered")
        self.sender.client.close()
        self._outbox_closed = True
        self.outbox.close()


def main(args: list[str] | None = None) -> None:
    run_node(UplinkNode, args)


if __name__ == "__main__":
    main()
