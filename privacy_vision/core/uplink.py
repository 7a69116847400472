"""Durable outbox and the pinned, signed HTTPS client: the only code that sends data off the device."""

from __future__ import annotations

import http.client
import json
import os
import random
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from privacy_vision.core.pki import spki_pin_of_certificate_der
from privacy_vision.core.protocol import MAX_SEQUENCE, SEQUENCE_WINDOW, sign_request


class PinMismatch(ssl.SSLError):
    """The server's public key is none of the configured pins: nothing was sent."""


class OutboxFull(RuntimeError):
    """The outbox reached its bound; the release was not stored (reported, never silent)."""


class OutboxUnavailable(RuntimeError):
    """The outbox's storage failed (disk full, I/O error): the release was not stored; what is stored is kept."""


class OutboxCorrupt(RuntimeError):
    """The file at the outbox path is not an intact outbox (empty, truncated, not ours)."""


@dataclass(frozen=True)
class OutboxItem:
    """A release waiting in the outbox, with its delivery attempts so far."""

    row_id: int
    release_id: str
    body: bytes
    attempts: int


# Written into the SQLite header (PRAGMA application_id, 'PVOB'): a file without it is not an outbox.
OUTBOX_APPLICATION_ID = 0x50564F42
_SQLITE_MAGIC = b"SQLite format 3\x00"
_OUTBOX_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, release_id TEXT UNIQUE NOT NULL,"
    " body BLOB NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, enqueued_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letter (release_id TEXT PRIMARY KEY, body BLOB NOT NULL,"
    " reason TEXT NOT NULL, failed_at REAL NOT NULL)",
)
_OUTBOX_TABLES = {"outbox", "counters", "dead_letter"}


def _storage_error(error: sqlite3.Error) -> OutboxUnavailable:
    return OutboxUnavailable(
        f"outbox storage failed ({error}); queued releases are kept, new ones are refused until it works"
    )


class Outbox:
    """SQLite (WAL) queue of release bytes; a row is deleted only after the ingest acknowledged it.

    An existing file that is not an intact outbox (0 bytes, truncated, corrupt, another database) is
    moved aside with its WAL, never overwritten, and named in `recovered_from` so the node can report
    it; a fresh outbox is then created, so a respawning node does not crash-loop.
    """

    def __init__(
        self, path: str | Path, max_items: int, clock: Callable[[], float] = time.time, schema: tuple[str, ...] = ()
    ) -> None:
        if max_items < 1:
            raise ValueError("max_items must be ≥ 1")
        self.max_items = max_items
        self._clock = clock  # enqueue and failure times, and the floor of the sequence (microseconds)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered_from: Path | None = None
        self.corruption = ""
        self.storage_error = ""
        self._acknowledged: set[int] = set()
        self._lock = threading.Lock()
        self._sequence = 0
        if self._in_memory:  # SQLite's private database (tests, benchmarks): no file to check, no one to race
            self._db = self._built(self._connect(), schema)
        elif self.path.exists():
            try:
                self._db = self._open_existing()
            except OutboxCorrupt as error:
                self.corruption = str(error)
                self.recovered_from = self._move_aside()
        if not self._in_memory and not self.path.exists():
            self._db = self._create(schema)
        self._file = self._identity()
        self._sequence = self._stored_sequence()

    @property
    def _in_memory(self) -> bool:
        return str(self.path) == ":memory:"

    def _identity(self) -> tuple[int, int] | None:
        if self._in_memory:  # a file named ':memory:' in the working directory is not this database
            return None
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def _stored_sequence(self) -> int:
        return int((self._db.execute("SELECT value FROM counters WHERE name = 'sequence'").fetchone() or (0,))[0])

    def reopen_if_replaced(self) -> bool:
        """Another file now at this path (the aggregator moved a damaged store aside and started a new one, or it was
        restored from the audit log): open that one, or this connection keeps reading the old file and what is queued
        in the new one is never sent. OutboxCorrupt while the new file is not intact (the caller retries)."""
        current = self._identity()
        if current is None or current == self._file:
            return False
        with self._lock:
            replaced = self._open_existing()
            self._db.close()
            self._db, self._file = replaced, current
            self._sequence = max(self._sequence, self._stored_sequence())  # never back: the ingest wants it rising
        return True

    def _connect(self, path: Path | None = None) -> sqlite3.Connection:
        db = sqlite3.connect(str(path or self.path), check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def _open_existing(self) -> sqlite3.Connection:
        """Open only an intact outbox: SQLite header, integrity check, our marker or our tables."""
        with open(self.path, "rb") as handle:
            magic = handle.read(len(_SQLITE_MAGIC))
        if len(magic) < len(_SQLITE_MAGIC):
            raise OutboxCorrupt(f"{self.path} is {self.path.stat().st_size} bytes: empty or truncated")
        if magic != _SQLITE_MAGIC:
            raise OutboxCorrupt(f"{self.path} is not a SQLite database")
        db = None
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise OutboxCorrupt(f"{self.path} fails its integrity check: {check}")
            marker = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as error:
            if db is not None:
                db.close()
            raise OutboxCorrupt(f"{self.path} cannot be read: {error}") from None
        except OutboxCorrupt:
            db.close()
            raise
        if marker not in (0, OUTBOX_APPLICATION_ID) or not tables >= _OUTBOX_TABLES:
            db.close()
            raise OutboxCorrupt(f"{self.path} is not an outbox (application id {marker:#x}, tables {sorted(tables)})")
        return db

    def _move_aside(self) -> Path:
        """Keep the damaged file (and its WAL/SHM) intact next to it for recovery."""
        target = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        for suffix in ("", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{target}{suffix}")
        return target

    def _create(self, schema: tuple[str, ...]) -> sqlite3.Connection:
        """Build the whole schema (ours and the caller's) in a private file, then link it into place: a process that
        opens the path sees a complete outbox or none. Built in place, the aggregator's and the uplink's starts raced:
        one found the other's half-made file (header written, a table missing), moved it aside as damaged, and what
        the aggregator then queued in it was never sent."""
        draft = self.path.with_name(f".{self.path.name}.new-{os.getpid()}-{threading.get_ident()}")
        try:
            self._built(self._connect(draft), schema).close()  # closing folds the WAL into the file and removes it
            os.link(draft, self.path)  # never replaces: a file another process linked first is the one opened
        except FileExistsError:
            pass
        finally:
            for suffix in ("", "-wal", "-shm"):  # also after a failure (a full disk): no draft is left behind
                Path(f"{draft}{suffix}").unlink(missing_ok=True)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the new name survives a power cut
        finally:
            os.close(directory)
        return self._open_existing()

    @staticmethod
    def _built(db: sqlite3.Connection, schema: tuple[str, ...]) -> sqlite3.Connection:
        db.execute("BEGIN IMMEDIATE")
        db.execute(f"PRAGMA application_id = {OUTBOX_APPLICATION_ID}")
        for statement in _OUTBOX_SCHEMA + schema:
            db.execute(statement)
        db.execute("COMMIT")
        return db

    def put(self, release_id: str, body: bytes) -> bool:
        """Store once; a second put of the same release id is a no-op (returns False)."""
        with self._lock:
            if self.size() >= self.max_items:
                raise OutboxFull(
                    f"outbox holds {self.max_items} unsent releases (max_outbox); new releases are refused until the ingest is reachable"
                )
            try:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO outbox (release_id, body, enqueued_at) VALUES (?, ?, ?)",
                    (release_id, body, self._clock()),
                )
            except sqlite3.OperationalError as error:
                raise _storage_error(error) from None
            return cursor.rowcount == 1

    def size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]) - len(self._acknowledged)

    def oldest(self) -> OutboxItem | None:
        """The oldest release not yet acknowledged (also skipping acknowledgements not yet written to disk)."""
        skip = tuple(self._acknowledged)
        query = "SELECT id, release_id, body, attempts FROM outbox"
        if skip:
            query += f" WHERE id NOT IN ({','.join('?' * len(skip))})"
        row = self._db.execute(query + " ORDER BY id LIMIT 1", skip).fetchone()
        return OutboxItem(row[0], row[1], bytes(row[2]), row[3]) if row else None

    def _write(self, *statements: tuple[str, tuple]) -> None:
        """One transaction; a storage failure is an OutboxUnavailable, never a half-applied change."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for statement, args in statements:
                    self._db.execute(statement, args)
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise _storage_error(error) from None

    def acknowledge(self, row_id: int) -> None:
        """Delete the delivered row; on a full disk remember it in memory so draining goes on.

        Rows acknowledged only in memory are deleted when the disk has room again; after a restart
        before that, they are sent once more and the ingest answers "duplicate".
        """
        self._acknowledged.add(row_id)
        pending = tuple(self._acknowledged)
        try:
            self._write((f"DELETE FROM outbox WHERE id IN ({','.join('?' * len(pending))})", pending))
        except OutboxUnavailable as error:
            self.storage_error = str(error)
            return
        self._acknowledged.clear()
        self.storage_error = ""

    def record_attempt(self, row_id: int) -> None:
        """Attempt counts are diagnostics: a full disk records the error and lets the send go ahead."""
        try:
            self._write(("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (row_id,)))
        except OutboxUnavailable as error:
            self.storage_error = str(error)

    def dead_letter(self, row_id: int, reason: str) -> None:
        self._write(
            (
                "INSERT INTO dead_letter (release_id, body, reason, failed_at) SELECT release_id, body, ?, ? FROM outbox WHERE id = ?",
                (reason, self._clock(), row_id),
            ),
            ("DELETE FROM outbox WHERE id = ?", (row_id,)),
        )

    def advance_sequence(self, at_least: int) -> None:
        self._sequence = max(self._sequence, at_least)
        self._persist_sequence()

    def next_sequence(self) -> int:
        """Per-device monotonic sequence number, persisted so a restart never reuses one.

        It also never runs behind the clock (microseconds), so a counter that could not be persisted
        (disk full) still grows across a restart; a 409 naming the ingest's last sequence repairs the rest.
        The send goes ahead when persisting fails: a full disk must not stop the outbox draining.
        """
        self._sequence = max(self._sequence + 1, int(self._clock() * 1e6))
        self._persist_sequence()
        return self._sequence

    def _persist_sequence(self) -> None:
        """On failure the in-memory counter goes on (see next_sequence) and `storage_error` says why."""
        try:
            self._write(
                ("INSERT OR IGNORE INTO counters VALUES ('sequence', 0)", ()),
                ("UPDATE counters SET value = MAX(value, ?) WHERE name = 'sequence'", (self._sequence,)),
            )
            self.storage_error = ""
        except OutboxUnavailable as error:
            self.storage_error = str(error)

    def close(self) -> None:
        self._db.close()


@dataclass(frozen=True)
class DeliveryResult:
    """What one upload attempt achieved: delivered or not, the HTTP status and why."""

    delivered: bool
    status: int
    detail: str


class PinnedClient:
    """HTTPS over TLS ≥ 1.2 with CA verification *and* SPKI pins checked right after the handshake.

    http.client is used because its connect() finishes the handshake before any request byte is
    written, which lets the pin check sit between the two; a mismatch closes the socket unused.
    """

    def __init__(
        self,
        url: str,
        pins: list[str],
        ca_file: str | None,
        device_id: str,
        key: bytes,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock  # the signed request timestamp
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
        """POST one release; the connection is kept alive, and every new one is pin-checked first.

        A kept-alive connection the ingest closed while idle (its idle timeout) fails before any answer;
        that one case is sent once more on a new connection, so an idle device does not log a failure and
        back off on every release. The retry is safe: the ingest stores by release id and sequence."""
        reused = self._connection is not None
        try:
            return self._post(body, sequence)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLEOFError):
            if not reused:
                raise
            return self._post(body, sequence)

    def _post(self, body: bytes, sequence: int) -> DeliveryResult:
        if self._connection is None:
            self._connection = self._connect()
        headers = sign_request(
            self._key, "POST", self.path, self.device_id, body, int(self._clock()), sequence
        ).as_dict()
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
    """Exponential backoff, capped, with jitter that never goes below half the step.

    Half is kept so a failure class can never spin (a TLS rejection used to be retried with no wait:
    1,687 handshakes in 10 s); the random half spreads a fleet that failed at the same moment.
    """
    step = min(max_s, base_s * (2 ** min(max(attempt - 1, 0), 30)))
    return step / 2 + random.uniform(0, step / 2)


# Rejections that retrying the same bytes cannot fix: the release is set aside (never dropped silently).
PERMANENT_REJECTIONS = {400, 413, 422}
OK, WARN, ERROR = "OK", "WARN", "ERROR"


@dataclass(frozen=True)
class Health:
    """The sender's state for the node's diagnostics: a level and a message."""

    level: str
    message: str


class Sender:
    """Drains the outbox oldest-first; stops at the first transient failure so order is kept.

    Every failure class waits the same backoff: network, TLS rejection (pin, certificate), 5xx, 401
    wrong key, 408 clock skew, and a failing dependency (audit log, outbox disk, database), which is
    raised by it, caught per step, reported as an ERROR and retried: the loop never dies silently.
    Permanent (400, 413, 422): moved to the dead-letter table with the reason, loudly.
    409 on the sequence (the device's counter fell behind, e.g. a restored outbox): jump past the
    ingest's last sequence and resend.
    `on_delivered` runs before the release is acknowledged in the outbox, so a release whose audit
    entry could not be written is sent again (the ingest answers "duplicate") until it can be.
    """

    def __init__(
        self,
        outbox: Outbox,
        client: PinnedClient,
        base_delay_s: float = 0.5,
        max_delay_s: float = 60.0,
        on_delivered: Callable[[OutboxItem], None] | None = None,
        on_outage: Callable[[bool, str], None] | None = None,
    ) -> None:
        self.on_delivered = on_delivered
        self.on_outage = on_outage
        self.outbox = outbox
        self.client = client
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.delivered = 0
        self.failures = 0
        self.dead_lettered = 0
        self.tls_rejected = False
        self.dependency_failed = False
        self.last_error = ""
        self.in_outage = False
        self._outage_entries: list[tuple[bool, str]] = []  # outage starts/ends whose hook (audit entry) is still due
        self._consecutive_failures = 0

    def drain_once(self) -> float:
        """Send what is queued; returns how long to wait before the next try (0 when empty)."""
        self.outbox.reopen_if_replaced()
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
                if self.on_delivered is not None:
                    self.on_delivered(item)
                self.outbox.acknowledge(item.row_id)
                self.delivered += 1
                self._consecutive_failures = 0
                self.dependency_failed = False
                self._set_outage(False, "")
                continue
            if result.status in PERMANENT_REJECTIONS:
                self.outbox.dead_letter(item.row_id, f"{result.status}: {result.detail[:500]}")
                self.dead_lettered += 1
                self.last_error = f"release {item.release_id} rejected for good ({result.status}: {result.detail[:200]}); kept in the dead-letter table"
                continue
            if result.status == 409 and (last := _last_sequence(result.detail)) is not None:
                if last >= MAX_SEQUENCE - SEQUENCE_WINDOW:  # following it would overflow the counter's int64
                    return self._failed(
                        f"the ingest holds sequence {last} for this device, beyond any it can send above; "
                        "the ingest must be updated (it now refuses such sequences and lets them lapse)"
                    )
                self.outbox.advance_sequence(last)
                continue
            return self._failed(f"release {item.release_id}: status {result.status}: {result.detail[:200]}")
        self.dependency_failed = False
        self._set_outage(False, "")  # nothing queued: no outage; writes any outage entry still due
        return 0.0

    def step(self) -> float:
        """drain_once, with a failing dependency (audit, disk, database) turned into a reported, retried failure."""
        try:
            return self.drain_once()
        except Exception as error:  # any dependency: reported as ERROR by health() and retried with backoff
            self.dependency_failed = True
            return self._failed(f"dependency failed: {type(error).__name__}: {error}")

    def _failed(self, error: str) -> float:
        self.failures += 1
        self._consecutive_failures += 1
        self.last_error = error
        delay = backoff_delay(self._consecutive_failures, self.base_delay_s, self.max_delay_s)
        self._set_outage(True, error)
        return delay

    def _set_outage(self, outage: bool, error: str) -> None:
        """Report the start and the end of an outage once each (the hook writes the audit entry).

        The hook is a dependency like any other: when it fails (the audit log is what is failing), the failure is
        reported and the entry stays due, written before any later one once the hook works again. It never raises
        here, inside the failure handling, where it used to end the sender thread."""
        if outage != self.in_outage:
            self.in_outage = outage
            self._outage_entries.append((outage, error))
        while self._outage_entries and self.on_outage is not None:
            try:
                self.on_outage(*self._outage_entries[0])
            except Exception as hook_error:  # reported as ERROR by health() and tried again at the next step
                self.dependency_failed = True
                self.last_error = (
                    f"{self.last_error}; outage not yet audit-logged: {type(hook_error).__name__}: {hook_error}"
                )
                return
            self._outage_entries.pop(0)

    def run(self, stop: threading.Event, wake: threading.Event, log: Callable[[str, str], None]) -> None:
        """The sender thread's loop: one backoff for every failure, one log line per failed attempt."""
        reported_dead = 0
        while not stop.is_set():
            delay = self.step()
            if self.dead_lettered != reported_dead:
                reported_dead = self.dead_lettered
                log(ERROR, self.last_error)
            if delay:
                hint = "; check the 'pins' and 'ca_file' parameters" if self.tls_rejected else ""
                log(
                    ERROR if self.tls_rejected or self.dependency_failed else WARN,
                    f"delivery failed, retrying in {delay:.1f} s: {self.last_error}{hint}",
                )
                stop.wait(delay)
            else:
                wake.wait(timeout=1.0)
                wake.clear()

    def health(self) -> Health:
        """ERROR for anything that needs a person (TLS rejection, failing dependency, dead letters, disk)."""
        if self.tls_rejected:
            return Health(ERROR, "TLS peer rejected: nothing sent")
        if self.dependency_failed:
            return Health(ERROR, "uplink dependency failing (audit log, outbox disk or database); retrying")
        if self.outbox.storage_error:
            return Health(ERROR, "outbox storage failing")
        if self.dead_lettered:
            return Health(ERROR, "releases rejected for good (dead-letter table)")
        if self.in_outage:
            return Health(WARN, "ingest unreachable; retrying")
        return Health(OK, "uplink")


def _last_sequence(detail: str) -> int | None:
    try:
        value = json.loads(detail).get("last_sequence")
    except (ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) else None
