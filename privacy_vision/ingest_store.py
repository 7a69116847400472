"""Release storage of the ingest: SQLite (embedded default) or PostgreSQL (production), one code path.

Both keep the per-device replay state (nonces, last sequence) in the same transaction as the release,
so a request is either fully accepted or leaves no trace.
"""
from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from privacy_vision.core.protocol import MAX_CLOCK_SKEW_S, RequestRejected
from privacy_vision.core.release_schema import WireRelease


@dataclass(frozen=True)
class _Dialect:
    placeholder: str
    begin: str
    insert_nonce: str
    upsert_sequence: str
    insert_release: str
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

SQLITE = _Dialect(
    placeholder="?", begin="BEGIN IMMEDIATE",
    insert_nonce="INSERT INTO nonces VALUES (?, ?, ?)",
    upsert_sequence="INSERT OR REPLACE INTO sequences VALUES (?, ?)",
    insert_release="INSERT INTO releases VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (release_id) DO NOTHING",
    schema=_TABLES,
)
POSTGRES = _Dialect(
    placeholder="%s", begin="BEGIN",
    insert_nonce="INSERT INTO nonces VALUES (%s, %s, %s)",
    upsert_sequence="INSERT INTO sequences VALUES (%s, %s) ON CONFLICT (device_id) DO UPDATE SET last_sequence = EXCLUDED.last_sequence",
    insert_release="INSERT INTO releases VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (release_id) DO NOTHING",
    schema=_TABLES,
)


class ReleaseStore:
    """Releases keyed by release id (idempotent), plus replay state; thread-safe behind one lock."""

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        if is_postgres_dsn(self.target):
            import psycopg

            self.dialect = POSTGRES
            self._db = psycopg.connect(self.target, autocommit=True)
            self._reader = psycopg.connect(self.target, autocommit=True)
            self.description = "PostgreSQL " + self._db.info.dsn
        else:
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.dialect = SQLITE
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")  # readers on their own connection never block the writer
            self._reader = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self.description = f"SQLite {path.resolve()}"
        with self._lock:
            for statement in self.dialect.schema:
                self._db.execute(statement)

    def _sql(self, statement: str) -> str:
        return statement.replace("?", self.dialect.placeholder)

    def _one(self, statement: str, args: tuple):
        return self._db.execute(self._sql(statement), args).fetchone()

    def accept(self, device_id: str, nonce: str, sequence: int, release: WireRelease, body: str, now_s: float) -> str:
        """Check replay state and store in one transaction; returns 'stored' or 'duplicate'.

        Only a conflict on the release id is ignored (never INSERT OR IGNORE, which also hid NOT NULL failures).
        """
        with self._lock:
            self._db.execute(self.dialect.begin)
            try:
                if self._one("SELECT 1 FROM nonces WHERE device_id = ? AND nonce = ?", (device_id, nonce)):
                    raise RequestRejected(409, "replayed request: nonce already used")
                row = self._one("SELECT last_sequence FROM sequences WHERE device_id = ?", (device_id,))
                if row and sequence <= row[0]:
                    raise RequestRejected(409, f"replayed request: sequence {sequence} is not above {row[0]}", last_sequence=int(row[0]))
                self._db.execute(self.dialect.insert_nonce, (device_id, nonce, now_s))
                self._db.execute(self.dialect.upsert_sequence, (device_id, sequence))
                # A nonce older than the accepted clock skew can never be replayed successfully.
                self._db.execute(self._sql("DELETE FROM nonces WHERE seen_at < ?"), (now_s - 3 * MAX_CLOCK_SKEW_S,))
                cursor = self._db.execute(self.dialect.insert_release, (
                    release.release_id, device_id, release.zone_id, release.period_start_s, release.period_end_s, body, now_s))
                self._db.execute("COMMIT")
                return "stored" if cursor.rowcount == 1 else "duplicate"
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def releases(self, zone_id: str | None = None, since_s: float = 0.0, until_s: float | None = None, device_id: str | None = None,
                 before: tuple[float, str] | None = None, limit: int = 1000) -> list[dict]:
        """Newest period first; `before` (period start, release id) is the keyset cursor of the next page.

        Reads use their own connection and lock, so a burst of readers never holds the writers' lock.
        """
        query, args = "SELECT body FROM releases WHERE window_start >= ?", [since_s]
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
        return [json.loads(row[0]) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._one("SELECT COUNT(*) FROM releases", ())[0])

    def purge_older_than(self, cutoff_s: float) -> int:
        """Retention: delete releases whose period ended before cutoff_s; returns how many."""
        with self._lock:
            return self._db.execute(self._sql("DELETE FROM releases WHERE window_end < ?"), (cutoff_s,)).rowcount

    def close(self) -> None:
        with self._lock, self._read_lock:
            self._reader.close()
            self._db.close()


def is_postgres_dsn(target: str) -> bool:
    return target.startswith(("postgresql://", "postgres://")) or ("=" in target and "host" in target)
