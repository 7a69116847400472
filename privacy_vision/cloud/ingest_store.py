"""Release storage of the ingest: SQLite (embedded default) or PostgreSQL (production), one code path.

Both keep the per-device replay state (nonces, last sequence), the spans released (one value per span) and the
per-device quotas in the same transaction as the release, so a request is either fully accepted or leaves no trace. Several ingest processes may share one
database (the fleet case): the replay checks are single statements the database makes atomic (a nonce
is inserted unless present, the sequence is raised only if higher), so the same signed request sent to
two processes at once is accepted by exactly one, and the other gets a 409.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from privacy_vision.core.protocol import MAX_CLOCK_SKEW_S, SEQUENCE_WINDOW, RequestRejected, highest_sequence
from privacy_vision.core.release.grid import DAY_S
from privacy_vision.core.release_schema import WireRelease

NONCE_KEEP_S = 3 * MAX_CLOCK_SKEW_S  # a nonce older than the accepted clock skew can never be replayed successfully


@dataclass(frozen=True)
class Quotas:
    """Per-device limits; a release beyond one is refused with 429 and the reason (the device retries it later)."""

    max_zones: int = 256  # distinct zones of one device among the stored releases
    max_releases_per_day: int = 100_000  # new releases of one device per UTC day of receipt


@dataclass(frozen=True)
class _Dialect:
    placeholder: str
    begin: str
    schema_lock: str | None  # serialises schema creation between processes starting together
    insert_nonce: str  # returns a row only if the nonce was new
    raise_sequence: str  # returns a row only if the sequence was higher than the stored one (or the first)
    insert_release: str
    purge_nonces: str
    purge_releases: str
    schema: tuple[str, ...]
    body_field: str  # a field of a stored body, for the spans of releases stored before the spans table existed


_TABLES = (
    "CREATE TABLE IF NOT EXISTS releases (release_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, zone_id TEXT NOT NULL,"
    " window_start DOUBLE PRECISION NOT NULL, window_end DOUBLE PRECISION NOT NULL, body TEXT NOT NULL,"
    " received_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS releases_zone_window ON releases (zone_id, window_start)",
    "CREATE INDEX IF NOT EXISTS releases_newest ON releases (window_start, release_id)",
    "CREATE TABLE IF NOT EXISTS nonces (device_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (device_id, nonce))",
    "CREATE TABLE IF NOT EXISTS sequences (device_id TEXT PRIMARY KEY, last_sequence BIGINT NOT NULL)",
    # one release per span of a device: a period of a zone's tier, of one kind, split into segments by restarts and
    # outages; a second, different release for a span already released is refused
    "CREATE TABLE IF NOT EXISTS spans (device_id TEXT NOT NULL, kind TEXT NOT NULL, zone_id TEXT NOT NULL,"
    " tier TEXT NOT NULL, period_start DOUBLE PRECISION NOT NULL, segment_start DOUBLE PRECISION NOT NULL,"
    " segment_end DOUBLE PRECISION NOT NULL, release_id TEXT NOT NULL,"
    " PRIMARY KEY (device_id, kind, zone_id, tier, period_start, segment_start))",
    "CREATE TABLE IF NOT EXISTS device_zones (device_id TEXT NOT NULL, zone_id TEXT NOT NULL,"
    " PRIMARY KEY (device_id, zone_id))",
    "CREATE TABLE IF NOT EXISTS device_days (device_id TEXT NOT NULL, day BIGINT NOT NULL, releases BIGINT NOT NULL,"
    " PRIMARY KEY (device_id, day))",
)
_INSERT_SPAN = "INSERT INTO spans VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING 1"
_RELEASED_SPAN = (  # another release of the same cell whose span overlaps the new one
    "SELECT release_id FROM spans WHERE device_id = ? AND kind = ? AND zone_id = ? AND tier = ? AND period_start = ?"
    " AND segment_start < ? AND segment_end > ? AND release_id <> ? LIMIT 1"
)
_INSERT_ZONE = "INSERT INTO device_zones VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 1"
_COUNT_DAY = (
    "INSERT INTO device_days VALUES (?, ?, 1) ON CONFLICT (device_id, day) DO UPDATE SET releases ="
    " device_days.releases + 1 RETURNING releases"
)
# Stores made before the spans and zones existed: their releases fill them once (kind and segment are in the body;
# a release of model v2 had neither: one presence span per period).
_BACKFILL = (
    "INSERT INTO spans SELECT device_id, COALESCE({kind}, 'presence'), zone_id, {tier}, window_start,"
    " COALESCE({segment_start}, window_start), COALESCE({segment_end}, window_end), release_id FROM releases"
    " WHERE true ON CONFLICT DO NOTHING",  # WHERE: SQLite's parser needs it before an upsert clause after a SELECT
    "INSERT INTO device_zones SELECT DISTINCT device_id, zone_id FROM releases WHERE true ON CONFLICT DO NOTHING",
)
_PURGE_ZONES = (
    "DELETE FROM device_zones WHERE NOT EXISTS (SELECT 1 FROM releases WHERE releases.device_id ="
    " device_zones.device_id AND releases.zone_id = device_zones.zone_id)"
)
_INSERT_NONCE = "INSERT INTO nonces VALUES (?, ?, ?) ON CONFLICT (device_id, nonce) DO NOTHING RETURNING 1"
# A stored sequence above the highest one acceptable now (protocol.highest_sequence) was never sent by an honest
# device (an old ingest accepted 2**63 - 1): it yields to the next valid one instead of blocking the device for good.
_RAISE_SEQUENCE = (
    "INSERT INTO sequences VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET last_sequence = excluded.last_sequence"
    " WHERE sequences.last_sequence < excluded.last_sequence OR sequences.last_sequence > ? RETURNING 1"
)
_INSERT_RELEASE = "INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (release_id) DO NOTHING"

SQLITE = _Dialect(
    placeholder="?",
    begin="BEGIN IMMEDIATE",
    schema_lock=None,  # one writer at a time, across processes too
    insert_nonce=_INSERT_NONCE,
    raise_sequence=_RAISE_SEQUENCE,
    insert_release=_INSERT_RELEASE,
    purge_nonces="DELETE FROM nonces WHERE seen_at < ?",
    purge_releases="DELETE FROM releases WHERE window_end < ?",
    schema=_TABLES,
    body_field="json_extract(body, '$.{}')",
)
# PostgreSQL: rows another process is deleting are skipped, so housekeeping in several processes never deadlocks.
POSTGRES = _Dialect(
    placeholder="%s",
    begin="BEGIN",
    schema_lock="SELECT pg_advisory_xact_lock(1347830338)",
    insert_nonce=_INSERT_NONCE.replace("?", "%s"),
    raise_sequence=_RAISE_SEQUENCE.replace("?", "%s"),
    insert_release=_INSERT_RELEASE.replace("?", "%s"),
    purge_nonces="DELETE FROM nonces WHERE (device_id, nonce) IN (SELECT device_id, nonce FROM nonces WHERE seen_at < %s"
    " FOR UPDATE SKIP LOCKED)",
    purge_releases="DELETE FROM releases WHERE release_id IN (SELECT release_id FROM releases WHERE window_end < %s"
    " FOR UPDATE SKIP LOCKED)",
    schema=_TABLES,
    body_field="(body::jsonb ->> '{}')",
)


@dataclass(frozen=True)
class Page:
    """One page of the read API: the stored bodies (JSON objects), when each arrived, and where the next page starts."""

    bodies: list[str]
    received_at: list[float]
    last: tuple[float, str] | None  # period start and release id of the last row: where the next page starts

    @property
    def rows(self) -> int:
        return len(self.bodies)

    @property
    def json(self) -> str:
        return "[" + ",".join(self.bodies) + "]"


class ReleaseStore:
    """Releases keyed by release id (idempotent), plus replay state; thread-safe behind one lock."""

    def __init__(self, target: str | Path, read_only: bool = False) -> None:
        """read_only: an existing SQLite file opened for reading only (`privacy-vision dashboard`); nothing is
        created or written, and a writer may use the file meanwhile."""
        self.target = str(target)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        if is_postgres_dsn(self.target):
            import psycopg

            self.dialect = POSTGRES
            self._db = psycopg.connect(self.target, autocommit=True)
            self._reader = psycopg.connect(self.target, autocommit=True)
            self.description = "PostgreSQL " + self._db.info.dsn
            if read_only:
                for connection in (self._db, self._reader):
                    connection.execute("SET default_transaction_read_only = on")
        else:
            path = Path(self.target)
            self.dialect = SQLITE
            self.description = f"SQLite {path.resolve()}"
            if read_only:
                if not path.is_file():
                    raise FileNotFoundError(f"no release store at {path}: run the graph first (make demo)")
                uri = f"{path.resolve().as_uri()}?mode=ro"
                self._db, self._reader = (
                    sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0)
                    for _ in range(2)
                )
                self.description += " (read-only)"
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            # timeout: how long a writer waits for another process's transaction (several ingests on one file)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers on their own connection never block the writer
            self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
        if read_only:
            self.description += " (read-only)"
            return
        with self._lock:
            self._db.execute(self.dialect.begin)
            try:
                if self.dialect.schema_lock:
                    self._db.execute(self.dialect.schema_lock)
                for statement in self.dialect.schema:
                    self._db.execute(statement)
                if self._one("SELECT COUNT(*) FROM spans", ())[0] == 0:
                    field = self.dialect.body_field.format
                    numbers = "CAST({} AS DOUBLE PRECISION)" if self.dialect is POSTGRES else "{}"
                    for statement in _BACKFILL:
                        self._db.execute(
                            statement.format(
                                kind=field("kind"),
                                tier=field("tier"),
                                segment_start=numbers.format(field("segment_start_s")),
                                segment_end=numbers.format(field("segment_end_s")),
                            )
                        )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.dialect.placeholder)

    def _one(self, statement: str, args: tuple):
        return self._db.execute(self._sql(statement), args).fetchone()

    def accept(
        self,
        device_id: str,
        nonce: str,
        sequence: int,
        release: WireRelease,
        body: str,
        now_s: float,
        quotas: Quotas = Quotas(),
    ) -> str:
        """Check replay state, the span and the quotas, and store, in one transaction; returns 'stored' or 'duplicate'.

        Each check is one atomic statement (never a SELECT then an INSERT, which two processes can both
        pass); only a conflict on the release id is ignored (never INSERT OR IGNORE, which also hid NOT
        NULL failures). A release sent again (same id, same span) is a duplicate; another release for a span
        already released (or overlapping one) is refused (422); a new release beyond a quota is refused (429, retried
        by the device).
        """
        highest = highest_sequence(now_s)
        if sequence > highest:
            raise RequestRejected(
                400,
                f"sequence {sequence} is above {highest}, the highest accepted now (the server clock in µs, plus "
                f"{MAX_CLOCK_SKEW_S} s of clock skew, plus {SEQUENCE_WINDOW})",
            )
        with self._lock:
            self._db.execute(self.dialect.begin)
            try:
                if self._db.execute(self.dialect.insert_nonce, (device_id, nonce, now_s)).fetchone() is None:
                    raise RequestRejected(409, "replayed request: nonce already used")
                if self._db.execute(self.dialect.raise_sequence, (device_id, sequence, highest)).fetchone() is None:
                    last = int(self._one("SELECT last_sequence FROM sequences WHERE device_id = ?", (device_id,))[0])
                    raise RequestRejected(
                        409, f"replayed request: sequence {sequence} is not above {last}", last_sequence=last
                    )
                cell = (device_id, release.kind, release.zone_id, release.tier, release.period_start_s)
                span = (release.segment_start_s, release.segment_end_s)
                held = self._one(_RELEASED_SPAN, (*cell, span[1], span[0], release.release_id))
                if held is not None:
                    raise RequestRejected(
                        422, f"this span was released already (release {held[0]}): one value per span, ever"
                    )
                new_span = self._one(_INSERT_SPAN, (*cell, *span, release.release_id)) is not None
                cursor = self._db.execute(
                    self.dialect.insert_release,
                    (
                        release.release_id,
                        device_id,
                        release.zone_id,
                        release.period_start_s,
                        release.period_end_s,
                        body,
                        now_s,
                    ),
                )
                stored = cursor.rowcount == 1
                if new_span and not stored:
                    raise RequestRejected(422, "release_id is already used by a release of another span")
                if stored:
                    self._within_quotas(device_id, release.zone_id, now_s, quotas)
                self._db.execute("COMMIT")
                return "stored" if stored else "duplicate"
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _within_quotas(self, device_id: str, zone_id: str, now_s: float, quotas: Quotas) -> None:
        if self._one(_INSERT_ZONE, (device_id, zone_id)) is not None:
            zones = int(self._one("SELECT COUNT(*) FROM device_zones WHERE device_id = ?", (device_id,))[0])
            if zones > quotas.max_zones:
                raise RequestRejected(
                    429, f"device {device_id} would have {zones} zones; this ingest accepts {quotas.max_zones}"
                )
        today = int(self._one(_COUNT_DAY, (device_id, int(now_s // 86400)))[0])
        if today > quotas.max_releases_per_day:
            raise RequestRejected(
                429,
                f"device {device_id} sent {quotas.max_releases_per_day} new releases today (UTC), the most this "
                "ingest accepts per day; retry after midnight UTC",
            )

    def purge_nonces(self, now_s: float) -> int:
        """Forget nonces too old to be replayed (their timestamps fail the clock-skew check), and the release counts
        of past days; returns how many nonces."""
        with self._lock:
            self._db.execute(self._sql("DELETE FROM device_days WHERE day < ?"), (int(now_s // 86400) - 1,))
            return self._db.execute(self.dialect.purge_nonces, (now_s - NONCE_KEEP_S,)).rowcount

    def releases(
        self,
        zone_id: str | Sequence[str] | None = None,
        since_s: float = 0.0,
        until_s: float | None = None,
        device_id: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 1000,
    ) -> list[dict]:
        """Newest period first; `before` (period start, release id) is the keyset cursor of the next page."""
        return json.loads(self.releases_page(zone_id, since_s, until_s, device_id, before, limit).json)

    def releases_page(
        self,
        zone_id: str | Sequence[str] | None = None,
        since_s: float = 0.0,
        until_s: float | None = None,
        device_id: str | None = None,
        before: tuple[float, str] | None = None,
        limit: int = 1000,
        overlapping: bool = False,
    ) -> Page:
        """One page as a JSON array, with the (period start, release id) of its last row for the cursor.
        overlapping: every cell whose period overlaps [since, until), not only those starting in it (a day or hour
        cell that began before `since`); no cell is longer than a day, so the index still bounds the scan.

        The stored bodies are already validated JSON objects, so the page is joined, not parsed and
        re-serialised: a full page costs the ingest's CPU (and the writers) a fraction of a decode.
        Reads use their own connection and lock, so a burst of readers never holds the writers' lock.
        """
        query = "SELECT body, window_start, release_id, received_at FROM releases WHERE window_start >= ?"
        args: list = [since_s]
        if overlapping:
            query += " AND window_end > ?"
            args = [since_s - DAY_S, since_s]
        for clause, value in (("window_start < ?", until_s), ("device_id = ?", device_id)):
            if value is not None:
                query += f" AND {clause}"
                args.append(value)
        if zone_id is not None:  # one zone, or any of several
            zones = [zone_id] if isinstance(zone_id, str) else list(zone_id)
            query += f" AND zone_id IN ({', '.join('?' * len(zones))})"
            args += zones
        if before is not None:
            query += " AND (window_start < ? OR (window_start = ? AND release_id < ?))"
            args += [before[0], before[0], before[1]]
        query += f" ORDER BY window_start DESC, release_id DESC LIMIT {int(limit)}"
        with self._read_lock:
            rows = self._reader.execute(self._sql(query), tuple(args)).fetchall()
        last = (float(rows[-1][1]), str(rows[-1][2])) if rows else None
        return Page([row[0] for row in rows], [float(row[3]) for row in rows], last)

    def count(self) -> int:
        with self._lock:
            return int(self._one("SELECT COUNT(*) FROM releases", ())[0])

    def purge_older_than(self, cutoff_s: float) -> int:
        """Retention: delete releases whose period ended before cutoff_s, with their spans (no period is longer than
        a day) and the zones no stored release names any more; returns how many releases."""
        with self._lock:
            removed = self._db.execute(self.dialect.purge_releases, (cutoff_s,)).rowcount
            self._db.execute(self._sql("DELETE FROM spans WHERE period_start < ?"), (cutoff_s - 86400,))
            self._db.execute(_PURGE_ZONES)
            return removed

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def is_postgres_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or ("=" in target and "host" in target)
