"""The durable release store: a release exists once it is recorded here, and each span of time is released once.

One SQLite file (WAL, synchronous FULL, checkpointed after every write so a copy of the main file alone is
complete) holds, written in one transaction per release:
- `released`: the key of every released span (kind, tier, zone, bound instance, period, segment) with its release
  id and the public noise terms of its head count; a span that overlaps one already released is refused, so a flush,
  a lifecycle cycle, a respawn, a restart or a clock step can never release the same time twice with fresh noise
  (presence has no bound instance: its spans never overlap at all; events and groups may overlap only across bound
  instances, each charged by the ledger);
- `charges`: the ledger of bound instances (a process's per-lineage bound on one day) charged per device day,
  capped; the device day comes from the device's clock and never goes back;
- `strict_thresholds`: strict mode's noisy threshold per pending group, kept across reconfigures and restarts;
- the uplink's outbox tables (core/uplink.py `Outbox`): the uplink sends from this same file, so nothing between
  the aggregator and the uplink can lose a release.
Every release and charge is also written to the audit log (by the node, after the commit, retried until written);
at start `check_against_audit` refuses a store that lacks anything the audit log says was released or charged.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from privacy_vision.core.release.grid import utc_day
from privacy_vision.core.uplink import Outbox, OutboxFull, OutboxUnavailable

_TABLES = (
    "CREATE TABLE IF NOT EXISTS released (kind TEXT NOT NULL, tier TEXT NOT NULL, zone TEXT NOT NULL,"
    " instance TEXT NOT NULL, period_start REAL NOT NULL, segment_start REAL NOT NULL, segment_end REAL NOT NULL,"
    " release_id TEXT UNIQUE NOT NULL, configuration TEXT NOT NULL, head_count TEXT NOT NULL,"
    " recorded_at REAL NOT NULL, audited INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (kind, tier, zone, instance, period_start, segment_start))",
    "CREATE TABLE IF NOT EXISTS charges (instance TEXT NOT NULL, configuration TEXT NOT NULL, device_day TEXT NOT NULL,"
    " epsilon REAL NOT NULL, recorded_at REAL NOT NULL, audited INTEGER NOT NULL DEFAULT 0,"
    " PRIMARY KEY (instance, configuration))",
    "CREATE TABLE IF NOT EXISTS strict_thresholds (instance TEXT NOT NULL, zone TEXT NOT NULL, group_start REAL NOT NULL,"
    " configuration TEXT NOT NULL, threshold INTEGER NOT NULL, PRIMARY KEY (instance, zone, group_start, configuration))",
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
AUDIT_RELEASE_EVENT = "release_recorded"
AUDIT_CHARGE_EVENT = "budget_charged"


class StoreMismatch(RuntimeError):
    """The store lacks releases or charges that the audit log records: it was deleted, emptied or edited."""


@dataclass(frozen=True)
class SpanKey:
    """What a release covers: one segment of one period of one tier, for one zone and kind of metric."""

    kind: str
    tier: str
    zone_id: str
    period_start_s: float
    segment_start_s: float
    segment_end_s: float
    instance: str = ""  # events and groups: the bound instance the span was counted under


@dataclass(frozen=True)
class Charge:
    """A bound instance charged under a configuration (once, ever) at this ε per stitched-track-day."""

    instance: str
    configuration: str
    epsilon: float


@dataclass(frozen=True)
class Recorded:
    """The outcome of recording a release: stored (durable), or why not."""

    stored: bool
    reason: str = ""  # "overlap": the span was already released; "cap": today's budget refuses the charge
    spent_today: float = 0.0
    device_day: str = ""


class ReleaseStore:
    """Releases, ledger charges and strict thresholds in the uplink's outbox file; thread-safe."""

    def __init__(
        self,
        path: str | Path,
        daily_epsilon_cap: float,
        max_outbox: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.daily_epsilon_cap = daily_epsilon_cap
        self._clock = clock
        self._outbox = Outbox(path, max_outbox, clock, _TABLES)  # opens, or moves a damaged file aside and starts anew
        self.recovered_from, self.corruption = self._outbox.recovered_from, self._outbox.corruption
        self.path = Path(path)
        self._db: sqlite3.Connection = self._outbox._db
        self._lock = threading.Lock()
        self.checkpoint_each_commit = True  # the aggregator turns it off around a batch and checkpoints once after
        self.checkpoint_error = ""
        for statement in _TABLES:  # a new file has them already; one the uplink created first gets them here
            self._db.execute(statement)

    # -- recording ------------------------------------------------------------------------------------
    def record(
        self, key: SpanKey, release_id: str, body: bytes, head_count: dict, configuration: str, charges: list[Charge]
    ) -> Recorded:
        """One transaction: refuse an overlapping span, charge what is not charged yet (within today's cap), keep
        the key and queue the body for the uplink. Storage failures raise OutboxUnavailable, a full outbox
        OutboxFull: nothing is half-written."""

        def keep(now: float) -> str:
            if self._overlaps(key):
                return "overlap"
            if self._outbox_size() >= self._outbox.max_items:
                raise OutboxFull(
                    f"outbox holds {self._outbox.max_items} unsent releases (max_outbox): new releases are refused "
                    "(their totals stay with the anonymizer) until the ingest is reachable"
                )
            self._db.execute(
                "INSERT INTO released (kind, tier, zone, instance, period_start, segment_start, segment_end, release_id,"
                " configuration, head_count, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key.kind,
                    key.tier,
                    key.zone_id,
                    key.instance,
                    key.period_start_s,
                    key.segment_start_s,
                    key.segment_end_s,
                    release_id,
                    configuration,
                    json.dumps(head_count),
                    now,
                ),
            )
            self._db.execute(
                "INSERT INTO outbox (release_id, body, enqueued_at) VALUES (?, ?, ?)", (release_id, body, now)
            )
            return ""

        return self._transaction(charges, keep)

    def charge(self, charges: list[Charge]) -> Recorded:
        """Charge without a release (a strict-mode test that did not pass still spent its ε)."""
        return self._transaction(charges, lambda now: "")

    def _transaction(self, charges: list[Charge], keep: Callable[[float], str]) -> Recorded:
        now = self._clock()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                day = self._device_day(now)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('device_day', ?)", (day,))
                spent = self._spent(day)
                for charge in charges:
                    if self._charged(charge):
                        continue
                    if spent + charge.epsilon > self.daily_epsilon_cap * (1 + 1e-9):  # OpenDP rounds maps up by ulps
                        self._db.execute("ROLLBACK")
                        return Recorded(False, "cap", spent, day)
                    self._db.execute(
                        "INSERT INTO charges (instance, configuration, device_day, epsilon, recorded_at) VALUES (?, ?, ?, ?, ?)",
                        (charge.instance, charge.configuration, day, charge.epsilon, now),
                    )
                    spent += charge.epsilon
                refused = keep(now)
                if refused:
                    self._db.execute("ROLLBACK")
                    return Recorded(False, refused, spent, day)
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise OutboxUnavailable(
                    f"release store failed ({error}); the totals stay with the anonymizer"
                ) from None
            except OutboxFull:
                self._db.execute("ROLLBACK")
                raise
            if self.checkpoint_each_commit:
                self._checkpoint()
        return Recorded(True, spent_today=spent, device_day=day)

    def _overlaps(self, key: SpanKey) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM released WHERE kind = ? AND tier = ? AND zone = ? AND instance = ? AND segment_start < ?"
                " AND segment_end > ? LIMIT 1",
                (key.kind, key.tier, key.zone_id, key.instance, key.segment_end_s, key.segment_start_s),
            ).fetchone()
            is not None
        )

    def _charged(self, charge: Charge) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM charges WHERE instance = ? AND configuration = ?",
                (charge.instance, charge.configuration),
            ).fetchone()
            is not None
        )

    def _spent(self, day: str) -> float:
        return float(
            self._db.execute("SELECT COALESCE(SUM(epsilon), 0) FROM charges WHERE device_day = ?", (day,)).fetchone()[0]
        )

    def _device_day(self, now_s: float) -> str:
        """Today on the device's clock, never earlier than a day already charged (a clock stepped back keeps the day)."""
        today = utc_day(now_s)
        row = self._db.execute("SELECT value FROM meta WHERE name = 'device_day'").fetchone()
        return max(today, row[0]) if row else today

    def _outbox_size(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def _checkpoint(self) -> None:
        """Move the WAL into the main file, so that a copy of the main file alone is complete (when a reader holds
        the WAL the checkpoint is partial and the next write completes it). What was committed is durable in the WAL
        already: a checkpoint that fails (a full disk) is kept in `checkpoint_error`, for the aggregator to report as
        an ERROR and to try again, and fails nothing that was committed."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        except sqlite3.Error as error:
            self.checkpoint_error = (
                f"checkpoint failed ({error}): the releases are committed in {self.path.name}-wal, and a copy of "
                f"{self.path.name} alone lacks them until a checkpoint succeeds"
            )
        else:
            self.checkpoint_error = ""

    def checkpoint(self) -> None:
        """After a batch recorded with checkpoint_each_commit off: one checkpoint for all of it."""
        with self._lock:
            self._checkpoint()

    # -- reading ------------------------------------------------------------------------------------------
    def spent_today(self) -> tuple[str, float]:
        with self._lock:
            day = self._device_day(self._clock())
            return day, self._spent(day)

    def spent_after(self, charges: list[Charge]) -> float:
        """Today's spend once these charges are made (those already charged cost nothing more)."""
        with self._lock:
            spent = self._spent(self._device_day(self._clock()))
            return spent + sum(c.epsilon for c in charges if not self._charged(c))

    def head_counts(self, kind: str, tier: str, zone_id: str, start_s: float, end_s: float) -> list[dict]:
        """The stored head-count terms of a tier's released spans inside [start_s, end_s) (for tier nesting)."""
        rows = self._db.execute(
            "SELECT head_count FROM released WHERE kind = ? AND tier = ? AND zone = ? AND segment_start >= ?"
            " AND segment_end <= ? ORDER BY segment_start",
            (kind, tier, zone_id, start_s, end_s),
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def strict_threshold(
        self, instance: str, zone_id: str, group_start: float, configuration: str, draw: Callable[[], int]
    ) -> int:
        """The group's noisy threshold: drawn once per (bound instance, zone, group start, configuration), kept."""
        with self._lock:
            row = self._db.execute(
                "SELECT threshold FROM strict_thresholds WHERE instance = ? AND zone = ? AND group_start = ? AND configuration = ?",
                (instance, zone_id, group_start, configuration),
            ).fetchone()
            if row:
                return int(row[0])
            threshold = draw()
            try:
                self._db.execute(
                    "INSERT INTO strict_thresholds VALUES (?, ?, ?, ?, ?)",
                    (instance, zone_id, group_start, configuration, threshold),
                )
            except sqlite3.Error as error:
                raise OutboxUnavailable(f"release store failed ({error}) keeping a strict-mode threshold") from None
            self._checkpoint()
            return threshold

    # -- the audit log ----------------------------------------------------------------------------------
    def unaudited(self) -> list[tuple[str, dict]]:
        """Releases and charges committed but not yet written to the audit log: (event, data) pairs."""
        with self._lock:
            charges = self._db.execute(
                "SELECT instance, configuration, device_day, epsilon FROM charges WHERE audited = 0"
            ).fetchall()
            releases = self._db.execute(
                "SELECT release_id, kind, tier, zone, instance, period_start, segment_start, segment_end, configuration"
                " FROM released WHERE audited = 0 ORDER BY recorded_at"
            ).fetchall()
        return [
            (AUDIT_CHARGE_EVENT, {"instance": i, "configuration": c, "device_day": d, "epsilon": e})
            for i, c, d, e in charges
        ] + [
            (
                AUDIT_RELEASE_EVENT,
                {
                    "release_id": r,
                    "kind": k,
                    "tier": t,
                    "zone": z,
                    "instance": b,
                    "period_start_s": p,
                    "segment_start_s": s,
                    "segment_end_s": e,
                    "configuration": c,
                },
            )
            for r, k, t, z, b, p, s, e, c in releases
        ]

    def mark_audited(self, event: str, data: dict) -> None:
        with self._lock:
            if event == AUDIT_CHARGE_EVENT:
                self._db.execute(
                    "UPDATE charges SET audited = 1 WHERE instance = ? AND configuration = ?",
                    (data["instance"], data["configuration"]),
                )
            else:
                self._db.execute("UPDATE released SET audited = 1 WHERE release_id = ?", (data["release_id"],))

    def check_against_audit(self, entries: list[dict]) -> None:
        """Raise StoreMismatch when an audited release or charge is missing here (or its charge was lowered)."""
        missing_releases: set[str] = set()  # each key once: an entry can be in the log twice (its append succeeded,
        missing_charges: set[tuple[str, str]] = set()  # marking it audited did not, and the tick wrote it again)
        with self._lock:
            for entry in entries:
                data = entry["data"]
                if entry["event"] == AUDIT_RELEASE_EVENT:
                    found = self._db.execute(
                        "SELECT 1 FROM released WHERE release_id = ?", (data["release_id"],)
                    ).fetchone()
                    if found is None:
                        missing_releases.add(data["release_id"])
                elif entry["event"] == AUDIT_CHARGE_EVENT:
                    found = self._db.execute(
                        "SELECT epsilon FROM charges WHERE instance = ? AND configuration = ?",
                        (data["instance"], data["configuration"]),
                    ).fetchone()
                    if found is None or found[0] < data["epsilon"] * (1 - 1e-9):
                        missing_charges.add((data["instance"], data["configuration"]))
        if missing_releases or missing_charges:
            raise StoreMismatch(
                f"the release store {self.path} lacks {len(missing_releases)} release(s) and {len(missing_charges)} budget "
                "charge(s) that the audit log records (deleted, emptied, edited or copied without its WAL): releasing "
                f"is refused; restore it with `privacy-vision releases restore --store {self.path}` (rebuilds the "
                "released spans and charges from the audit log)"
            )

    def restore_from_audit(self, entries: list[dict]) -> tuple[int, int]:
        """Re-insert every audited release key and charge missing here (values of releases not yet sent are lost)."""
        restored = [0, 0]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for entry in entries:
                data, now = entry["data"], entry.get("ts", 0.0)
                if entry["event"] == AUDIT_RELEASE_EVENT:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO released (kind, tier, zone, instance, period_start, segment_start,"
                        " segment_end, release_id, configuration, head_count, recorded_at, audited)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, 1)",
                        (
                            data["kind"],
                            data["tier"],
                            data["zone"],
                            data["instance"],
                            data["period_start_s"],
                            data["segment_start_s"],
                            data["segment_end_s"],
                            data["release_id"],
                            data["configuration"],
                            now,
                        ),
                    )
                    restored[0] += cursor.rowcount
                elif entry["event"] == AUDIT_CHARGE_EVENT:
                    cursor = self._db.execute(
                        "INSERT INTO charges VALUES (?, ?, ?, ?, ?, 1) ON CONFLICT (instance, configuration) DO UPDATE"
                        " SET device_day = excluded.device_day, epsilon = excluded.epsilon, recorded_at ="
                        " excluded.recorded_at, audited = 1 WHERE excluded.epsilon > charges.epsilon",  # missing or lowered
                        (data["instance"], data["configuration"], data["device_day"], data["epsilon"], now),
                    )
                    restored[1] += cursor.rowcount
            self._db.execute("COMMIT")
            self._checkpoint()
        return restored[0], restored[1]

    def released_until(self) -> float:
        """The end of the latest released presence span: a restarted anonymizer integrates from here on, so a clock
        stepped back never re-integrates time already released (0 when nothing was released yet)."""
        row = self._db.execute("SELECT MAX(segment_end) FROM released WHERE kind = 'presence'").fetchone()
        return float(row[0] or 0.0)

    def released_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM released").fetchone()[0])

    def close(self) -> None:
        self._outbox.close()
