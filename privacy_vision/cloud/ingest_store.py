"""Release storage of the ingest: SQLite (embedded default) or PostgreSQL (production), one code path.

Both keep the per-device replay state (nonces, last sequence) in the same transaction as the release,
so a request is either fully accepted or leaves no trace. Several ingest processes may share one
database (the fleet case): the replay checks are single statements the database makes atomic (a nonce
is inserted unless present, the sequence is raised only if higher), so the same signed request sent to
two processes at once is accepted by exactly one, and the other gets a 409.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from privacy_vision.core.protocol import MAX_CLOCK_SKEW_S, RequestRejected
from privacy_vision.core.release.grid import DAY_S
from privacy_vision.core.release_schema import WireRelease

NONCE_KEEP_S = 3 * MAX_CLOCK_SKEW_S  # a nonce older than the accepted clock skew can never be replayed successfully


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


_TABLES = (
    "CREATE TABLE IF NOT EXISTS releases (release_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, zone_id TEXT NOT NULL,"
    " window_start DOUBLE PRECISION NOT NULL, window_end DOUBLE PRECISION NOT NULL, body TEXT NOT NULL,"
    " received_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS releases_zone_window ON releases (zone_id, window_start)",
    "CREATE INDEX IF NOT EXISTS releases_newest ON releases (window_start, release_id)",
    "CREATE TABLE IF NOT EXISTS nonces (device_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_at DOUBLE PRECISION NOT NULL,"
    " PRIMARY KEY (device_id, nonce))",
    "CREATE TABLE IF NOT EXISTS sequences (device_id TEXT PRIMARY KEY, last_sequence BIGINT NOT NULL)",
)
_INSERT_NONCE = "INSERT INTO nonces VALUES (?, ?, ?) ON CONFLICT (device_id, nonce) DO NOTHING RETURNING 1"
_RAISE_SEQUENCE = (
    "INSERT INTO sequences VALUES (?, ?) ON CONFLICT (device_id) DO UPDATE SET last_sequence = excluded.last_sequence"
    " WHERE sequences.last_sequence < excluded.last_sequence RETURNING 1"
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
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.dialect.placeholder)

    def _one(self, statement: str, args: tuple):
        return self._db.execute(self._sql(statement), args).fetchone()

    def accept(self, device_id: str, nonce: str, sequence: int, release: WireRelease, body: str, now_s: float) -> str:
        """Check replay state and store in one transaction; returns 'stored' or 'duplicate'.

        Each check is one atomic statement (never a SELECT then an INSERT, which two processes can both
        pass); only a conflict on the release id is ignored (never INSERT OR IGNORE, which also hid NOT
        NULL failures).
        """
        with self._lock:
            self._db.execute(self.dialect.begin)
            try:
                if self._db.execute(self.dialect.insert_nonce, (device_id, nonce, now_s)).fetchone() is None:
                    raise RequestRejected(409, "replayed request: nonce already used")
                if self._db.execute(self.dialect.raise_sequence, (device_id, sequence)).fetchone() is None:
                    last = int(self._one("SELECT last_sequence FROM sequences WHERE device_id = ?", (device_id,))[0])
                    raise RequestRejected(
                        409, f"replayed request: sequence {sequence} is not above {last}", last_sequence=last
                    )
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
                self._db.execute("COMMIT")
                return "stored" if cursor.rowcount == 1 else "duplicate"
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def purge_nonces(self, now_s: float) -> int:
        """Forget nonces too old to be replayed (their timestamps fail the clock-skew check); returns how many."""
        with self._lock:
            return self._db.execute(self.dialect.purge_nonces, (now_s - NONCE_KEEP_S,)).rowcount

    def releases(
        self,
        zone_id: str | None = None,
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
        zone_id: str | None = None,
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
        for clause, value in (("window_start < ?", until_s), ("zone_id = ?", zone_id), ("device_id = ?", device_id)):
            if value is not None:
                query += f" AND {clause}"
                args.append(value)
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
        """Retention: delete releases whose period ended before cutoff_s; returns how many."""
        with self._lock:
            return self._db.execute(self.dialect.purge_releases, (cutoff_s,)).rowcount

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def is_postgres_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or ("=" in target and "host" in target)
