"""Durable outbox and the pinned, signed HTTPS client: the only code that sends data off the device."""
from __future__ import annotations

import http.client
import json
import random
import sqlite3
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Callable
from pathlib import Path
from urllib.parse import urlsplit

from privacy_vision.core.pki import spki_pin_of_certificate_der
from privacy_vision.core.protocol import sign_request


class PinMismatch(ssl.SSLError):
    """The server's public key is none of the configured pins: nothing was sent."""


class OutboxFull(RuntimeError):
    """The outbox reached its bound; the release was not stored (reported, never silent)."""


@dataclass(frozen=True)
class OutboxItem:
    row_id: int
    release_id: str
    body: bytes
    attempts: int


class Outbox:
    """SQLite (WAL) queue of release bytes; a row is deleted only after the ingest acknowledged it."""

    def __init__(self, path: str | Path, max_items: int) -> None:
        if max_items < 1:
            raise ValueError("max_items must be ≥ 1")
        self.max_items = max_items
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, release_id TEXT UNIQUE NOT NULL,"
            " body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        self._db.execute("CREATE TABLE IF NOT EXISTS dead_letter (release_id TEXT PRIMARY KEY, body BLOB NOT NULL,"
                         " reason TEXT NOT NULL, failed_at REAL NOT NULL)")

    def put(self, release_id: str, body: bytes) -> bool:
        """Store once; a second put of the same release id is a no-op (returns False)."""
        with self._lock:
            if self.size() >= self.max_items:
                raise OutboxFull(f"outbox holds {self.max_items} unsent releases (max_outbox); new releases are refused until the ingest is reachable")
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO outbox (release_id, body, enqueued_at) VALUES (?, ?, ?)", (release_id, body, time.time())
            )
            return cursor.rowcount == 1

    def size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def oldest(self) -> OutboxItem | None:
        row = self._db.execute("SELECT id, release_id, body, attempts FROM outbox ORDER BY id LIMIT 1").fetchone()
        return OutboxItem(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def acknowledge(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def record_attempt(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,))

    def dead_letter(self, row_id: int, reason: str) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT INTO dead_letter (release_id, body, reason, failed_at) SELECT release_id, body, ?, ? FROM outbox WHERE id = ?",
                             (reason, time.time(), row_id))
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
            self._db.execute("COMMIT")

    def advance_sequence(self, at_least: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO counters VALUES ('sequence', 0)")
            self._db.execute("UPDATE counters SET value = MAX(value, ?) WHERE name = 'sequence'", (at_least,))

    def next_sequence(self) -> int:
        """Per-device monotonic sequence number, persisted so a restart never reuses one."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("INSERT OR IGNORE INTO counters VALUES ('sequence', 0)")
            self._db.execute("UPDATE counters SET value = value + 1 WHERE name = 'sequence'")
            value = self._db.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone()[0]
            self._db.execute("COMMIT")
            return int(value)

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    status: int
    detail: str


class PinnedClient:
    """HTTPS over TLS ≥ 1.2 with CA verification *and* SPKI pins checked right after the handshake.

    http.client is used because its connect() finishes the handshake before any request byte is
    written, which lets the pin check sit between the two; a mismatch closes the socket unused.
    """

    def __init__(self, url: str, pins: list[str], ca_file: str | None, device_id: str, key: bytes, timeout_s: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError(f"ingest_url must be an https:// URL, got {url!r}")
        if not pins:
            raise ValueError("at least one SPKI pin is required (primary and backup recommended)")
        self.host = parts.hostname
        self.port = parts.port or 443
        self.path = parts.path or "/"
        self.pins = set(pins)
        self.device_id = device_id
        self._key = key
        self.timeout_s = timeout_s
        self._context = ssl.create_default_context(cafile=ca_file)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2

        self._connection: http.client.HTTPSConnection | None = None

    def _connect(self) -> http.client.HTTPSConnection:
        connection = http.client.HTTPSConnection(self.host, self.port, context=self._context, timeout=self.timeout_s)
        try:
            connection.connect()
            pin = spki_pin_of_certificate_der(connection.sock.getpeercert(binary_form=True))
            if pin not in self.pins:
                raise PinMismatch(f"server key pin {pin} matches none of the configured pins; refusing to send")
        except BaseException:
            connection.close()
            raise
        return connection

    def send(self, body: bytes, sequence: int) -> DeliveryResult:
        """POST one release; the connection is kept alive, and every new one is pin-checked first."""
        if self._connection is None:
            self._connection = self._connect()
        headers = sign_request(self._key, "POST", self.path, self.device_id, body, int(time.time()), sequence).as_dict()
        headers["Content-Type"] = "application/json"
        try:
            self._connection.request("POST", self.path, body=body, headers=headers)
            response = self._connection.getresponse()
            detail = response.read().decode(errors="replace")
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return DeliveryResult(response.status == 200, response.status, detail)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(max_s, base_s * (2 ** min(attempt, 20))))


# Rejections that retrying the same bytes cannot fix: the release is set aside (never dropped silently).
PERMANENT_REJECTIONS = {400, 413, 422}


class Sender:
    """Drains the outbox oldest-first; stops at the first transient failure so order is kept.

    Transient (network, 5xx, 401 wrong key, 408 clock skew): retry later with backoff, same bytes.
    Permanent (400, 413, 422): moved to the dead-letter table with the reason, loudly.
    409 on the sequence (the device's counter fell behind, e.g. a restored outbox): jump past the
    ingest's last sequence and resend.
    """

    def __init__(self, outbox: Outbox, client: PinnedClient, base_delay_s: float = 0.5, max_delay_s: float = 60.0,
                 on_delivered: Callable[[OutboxItem], None] | None = None) -> None:
        self.on_delivered = on_delivered
        self.outbox = outbox
        self.client = client
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.delivered = 0
        self.failures = 0
        self.dead_lettered = 0
        self.tls_rejected = False
        self.last_error = ""
        self._consecutive_failures = 0

    def drain_once(self) -> float:
        """Send what is queued; returns how long to wait before the next try (0 when empty)."""
        while (item := self.outbox.oldest()) is not None:
            self.outbox.record_attempt(item.row_id)
            try:
                result = self.client.send(item.body, self.outbox.next_sequence())
                self.tls_rejected = False
            except (PinMismatch, ssl.SSLCertVerificationError) as error:
                self.tls_rejected = True
                kind = "TLS pin mismatch" if isinstance(error, PinMismatch) else "TLS certificate verification failed"
                result = DeliveryResult(False, 0, f"{kind}, nothing sent: {error}")
            except (OSError, http.client.HTTPException) as error:
                result = DeliveryResult(False, 0, f"{type(error).__name__}: {error}")
            if result.delivered:
                self.outbox.acknowledge(item.row_id)
                self.delivered += 1
                if self.on_delivered is not None:
                    self.on_delivered(item)
                self._consecutive_failures = 0
                continue
            if result.status in PERMANENT_REJECTIONS:
                self.outbox.dead_letter(item.row_id, f"{result.status}: {result.detail[:500]}")
                self.dead_lettered += 1
                self.last_error = f"release {item.release_id} rejected for good ({result.status}: {result.detail[:200]}); kept in the dead-letter table"
                continue
            if result.status == 409 and (last := _last_sequence(result.detail)) is not None:
                self.outbox.advance_sequence(last)
                continue
            self.failures += 1
            self._consecutive_failures += 1
            self.last_error = f"release {item.release_id}: status {result.status}: {result.detail[:200]}"
            return backoff_delay(self._consecutive_failures, self.base_delay_s, self.max_delay_s)
        return 0.0


def _last_sequence(detail: str) -> int | None:
    try:
        value = json.loads(detail).get("last_sequence")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None
