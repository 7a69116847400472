"""Uplink node: the release store's outbox → pinned, signed HTTPS to the ingest. Nothing else leaves.

The aggregator records every release in the release store (core/release/store.py) before publishing it; this
node sends from that same file, so a release exists on disk before anyone could miss it, and a restarted or
late-started uplink loses nothing. /zone_analytics only wakes the sender early."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from privacy_vision.core.graph import DRAIN_TIMEOUT_S
from privacy_vision.core.protocol import KeyFileError, load_key_file
from privacy_vision.core.uplink import OK as CORE_OK
from privacy_vision.core.uplink import WARN as CORE_WARN
from privacy_vision.core.uplink import Outbox, PinnedClient, Sender
from privacy_vision.nodes.common import (
    ANALYTICS_TOPIC,
    ERROR,
    OK,
    RELIABLE_QOS,
    WARN,
    PrivacyVisionNode,
    StartupError,
    run_node,
)
from privacy_vision_msgs.msg import ZoneAnalytics

SENDER_MAX_ITEMS = 10**9  # the outbox's bound is enforced where releases are stored (the aggregator's max_outbox)


class UplinkNode(PrivacyVisionNode):
    """The only node that talks off the device: durable outbox, pinned and signed HTTPS to the ingest."""

    def __init__(self, **node_options: Any) -> None:
        super().__init__("uplink", **node_options)

    def configure(self) -> None:
        url = self.declare(
            "ingest_url", "https://127.0.0.1:8443/v1/releases", "HTTPS endpoint of the ingest", read_only=True
        )
        pins = self.declare(
            "pins", [""], "SHA-256 SPKI pins (base64) of the ingest key: primary and backup", read_only=True
        )
        ca_file = self.declare(
            "ca_file", "", "CA certificate that signed the ingest certificate (empty: system CAs)", read_only=True
        )
        device_id = self.declare(
            "device_id", "device-1", "device identity sent with every signed request", read_only=True
        )
        key_file = self.declare("key_file", "var/pki/device.key", "hex HMAC key file, mode 600", read_only=True)
        outbox_path = self.declare(
            "outbox_path",
            "var/releases.sqlite",
            "the release store whose outbox is sent (the aggregator's release_store)",
            read_only=True,
        )
        self.retry_base_s = self.declare(
            "retry_base_s", 0.5, "first retry delay; doubles per failure with full jitter", minimum=0.01, maximum=60.0
        )
        self.retry_max_s = self.declare("retry_max_s", 60.0, "longest retry delay", minimum=0.1, maximum=3600.0)
        self.declare(
            "ingest_retention_days",
            90.0,
            "retention the ingest applies to releases (its --retention-days), stated in the DPIA",
            minimum=0.0,
            maximum=36500.0,
            read_only=True,
        )
        self.drain_timeout_s = self.declare(
            "drain_timeout_s",
            DRAIN_TIMEOUT_S,
            "at shutdown, keep sending queued releases this long (what is left stays in the outbox for the next start)",
            minimum=0.0,
            maximum=600.0,
        )
        try:
            key = load_key_file(key_file)
            client = PinnedClient(url, [p for p in pins if p], ca_file or None, device_id, key)
        except (KeyFileError, ValueError, OSError) as error:
            raise StartupError(self.get_name(), str(error)) from None
        self.outbox = Outbox(outbox_path, SENDER_MAX_ITEMS)
        if self.outbox.recovered_from is not None:
            self.get_logger().error(
                f"the outbox was not intact ({self.outbox.corruption}); moved aside for recovery to "
                f"{self.outbox.recovered_from}; a new outbox was started"
            )
            self.audit.append(
                "outbox_recovered",
                self.get_name(),
                reason=self.outbox.corruption[:300],
                moved_to=str(self.outbox.recovered_from),
            )
        self.dpia_parameters = {"ingest_url", "pins", "device_id", "ingest_retention_days"}
        self.sender = Sender(
            self.outbox,
            client,
            self.retry_base_s,
            self.retry_max_s,
            on_delivered=self._audit_sent,
            on_outage=self._audit_outage,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._outbox_closed = False
        self._thread: threading.Thread | None = None
        self.create_subscription(ZoneAnalytics, ANALYTICS_TOPIC, lambda _: self._wake.set(), RELIABLE_QOS)
        self._report_timer = self.create_timer(1.0, self._report)
        self.get_logger().info(f"sending to {url} as {device_id}; {self.outbox.size()} releases waiting in the outbox")

    def validate_parameters(self, updates: dict[str, Any]) -> None:
        if self.current("retry_base_s", updates) > self.current("retry_max_s", updates):
            raise ValueError("retry_base_s must not exceed retry_max_s")

    def apply_parameters(self, updates: dict[str, Any]) -> None:
        self.sender.base_delay_s, self.sender.max_delay_s = (
            self.get_parameter("retry_base_s").value,
            self.get_parameter("retry_max_s").value,
        )
        self.drain_timeout_s = self.get_parameter("drain_timeout_s").value

    def _log(self, level: str, text: str) -> None:
        logger = self.get_logger()
        (logger.info if level == CORE_OK else logger.warning if level == CORE_WARN else logger.error)(text)

    def _audit_sent(self, item) -> None:
        release = json.loads(item.body)
        self.audit.append(
            "release_sent",
            self.get_name(),
            release_id=release["release_id"],
            zone=release["zone_id"],
            tier=release["tier"],
            period_start_s=release["period_start_s"],
            period_end_s=release["period_end_s"],
            kind=release["kind"],
            segment_start_s=release["segment_start_s"],
            segment_end_s=release["segment_end_s"],
            below_k=release["below_k"],
            mechanism=release["mechanism"],
            epsilon_cell=release["epsilon_cell"],
            epsilon_unit=release["epsilon_unit"],
            k=release["k"],
            privacy_unit=release["privacy_unit"],
        )

    def _audit_outage(self, outage: bool, error: str) -> None:
        if outage:
            self.audit.append("uplink_failure", self.get_name(), error=error[:300], queued=self.outbox.size())
        else:
            self.audit.append("uplink_recovered", self.get_name(), queued=self.outbox.size())

    def _report(self) -> None:
        if self._outbox_closed:
            return
        health = self.sender.health()
        level = {CORE_OK: OK, CORE_WARN: WARN}.get(health.level, ERROR)
        message = health.message
        if self.outbox.recovered_from is not None and level != ERROR:
            level, message = ERROR, f"outbox was not intact; moved aside to {self.outbox.recovered_from}"
        self.publish_diagnostic(
            level,
            message,
            {
                "delivered": self.sender.delivered,
                "queued": self.outbox.size(),
                "failures": self.sender.failures,
                "dead_lettered": self.sender.dead_lettered,
                "last_error": self.sender.last_error,
            },
        )

    def activate(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.sender.run, args=(self._stop, self._wake, self._log), name="uplink-sender", daemon=True
        )
        self._thread.start()

    def deactivate(self) -> None:
        """Stop sending in the background (the releases stay in the outbox); a send in progress is finished first."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=self.sender.client.timeout_s + 1.0)

    def release(self) -> None:
        """Everything received is stored (the aggregator finished before this node's turn), send what is queued for at most drain_timeout_s,
        then close the outbox; what is left is sent at the next start (the ingest stores each release once)."""
        self.destroy_timer(self._report_timer)
        if self._thread is not None and self._thread.is_alive():
            self.get_logger().warning(
                "a delivery is still in progress; the outbox is left open for it (SQLite WAL keeps it consistent)"
            )
            return
        deadline = time.monotonic() + self.drain_timeout_s
        while self.outbox.size() and time.monotonic() < deadline:
            delay = self.sender.step()
            if delay:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        left = self.outbox.size()
        if left:
            self.get_logger().warning(f"{left} releases stay in the outbox and will be sent at the next start")
        self.sender.client.close()
        self._outbox_closed = True
        self.outbox.close()

    def summary(self) -> str:
        return f"{self.sender.delivered} releases delivered"


NODE_CLASS = UplinkNode  # what node_main runs for this graph node, alone or composed


def main(args: list[str] | None = None) -> None:
    run_node(NODE_CLASS, args)


if __name__ == "__main__":
    main()
