"""OpenDP noise calibrated as stated, intervals that cover, the ledger of bound instances (once each, capped, on the
device's day that never goes back), strict mode's kept thresholds and δ, and a store that cannot be reset silently."""

from __future__ import annotations

import math
import shutil
import sqlite3
import uuid

import numpy as np
import pytest

from privacy_vision.core.audit import AuditLog, entries_of
from privacy_vision.core.release.estimates import Estimate, exact_half_width, noise_half_width
from privacy_vision.core.release.grid import DAY_S, Context, Grid
from privacy_vision.core.release.mechanisms import (
    EventAccount,
    IntegerNoise,
    PresenceAccount,
    ReleaseSettings,
    StrictAccount,
)
from privacy_vision.core.release.releaser import CAP, PENDING, RELEASED, Releaser
from privacy_vision.core.release.store import (
    AUDIT_CHARGE_EVENT,
    AUDIT_RELEASE_EVENT,
    Charge,
    ReleaseStore,
    SpanKey,
    StoreMismatch,
)
from privacy_vision.core.release.strict import GroupTotals
from privacy_vision.core.uplink import OutboxUnavailable

DAY0 = 1_790_000_000.0 - 1_790_000_000.0 % DAY_S


@pytest.mark.parametrize("scale", [0.8, 3.0, 40.0])
def test_discrete_laplace_has_its_stated_law(scale):
    noise = IntegerNoise(scale)
    draws = np.array(noise.histogram([0] * 100_000))
    p = math.exp(-1 / scale)
    assert draws.var() == pytest.approx(2 * p / (1 - p) ** 2, rel=0.05)
    assert noise.epsilon(3) == pytest.approx(3 / scale)


@pytest.mark.parametrize("scale", [0.7, 2.0, 25.0])
def test_the_exact_interval_covers_95_percent_and_no_narrower_one_does(scale):
    h = exact_half_width(scale)
    p = math.exp(-1 / scale)
    assert 2 * p ** (h + 1) / (1 + p) <= 0.05 < 2 * p**h / (1 + p)


def test_a_combined_estimate_interval_covers_95_percent_of_its_law():
    terms = ((0.25, 3.0), (0.25, 3.0), (0.5, 8.0), (1.0, 1.5))
    h = noise_half_width(terms)
    draws = sum(c * np.array(IntegerNoise(s).histogram([0] * 50_000)) for c, s in terms)
    coverage = np.mean(np.abs(draws) <= h)
    assert 0.94 <= coverage <= 0.96


def test_an_estimate_carries_its_noise_through_post_processing():
    a, b = Estimate.draw(10, "a", 2.0), Estimate.draw(4, "b", 3.0)
    combined = (a + b) * 0.5 - b * 0.5
    assert combined.value == pytest.approx(5.0) and [t.noise_id for t in combined.terms] == ["a"]
    assert combined.interval() == (
        pytest.approx(max(0.0, 5 - 0.5 * exact_half_width(2.0))),
        pytest.approx(5 + 0.5 * exact_half_width(2.0)),
    )


def test_the_presence_guarantee_is_the_opendp_composition_and_linear_in_presence():
    settings = ReleaseSettings(epsilon_per_presence_hour=3.0)
    account = PresenceAccount(settings, Grid(), 10)
    assert account.epsilon_per_presence_hour == pytest.approx(3.0)
    assert account.epsilon_for_presence(900) == pytest.approx(0.75)
    assert account.epsilon_for_presence(8 * 3600) == pytest.approx(24.0)
    assert sum(account.epsilon_of_tier_per_presence_hour(t) for t in ("window", "hour", "day")) == pytest.approx(3.0)


def test_the_event_guarantee_divides_each_metric_by_its_bound():
    settings = ReleaseSettings(epsilon_events_per_track_day=0.6, event_metric_shares=(0.5, 0.25, 0.25))
    account = EventAccount(settings, zones_per_day=2)
    assert account.epsilon_per_track_day == pytest.approx(0.6)
    assert account.noise["footfall"].scale == pytest.approx(3 / 0.3)  # m + 1 cells, 0.3 of the budget
    assert account.noise["entries"].scale == pytest.approx(2 / 0.15)


def release_store(tmp_path, cap: float = 1.0, clock=lambda: DAY0 + 3600) -> ReleaseStore:
    return ReleaseStore(tmp_path / f"releases-{uuid.uuid4()}.sqlite", cap, clock=clock)


def test_a_bound_instance_is_charged_once_and_the_cap_refuses_more(tmp_path):
    store = release_store(tmp_path, cap=1.0)
    for instance in ("a", "a", "b"):
        assert store.charge([Charge(instance, "conf", 0.4)]).stored
    assert store.spent_today()[1] == pytest.approx(0.8)
    refused = store.charge([Charge("c", "conf", 0.4)])
    assert not refused.stored and refused.reason == "cap" and store.spent_today()[1] == pytest.approx(0.8)


def test_the_budget_day_is_the_device_clock_and_never_goes_back(tmp_path):
    now = [DAY0 + 3600]
    store = release_store(tmp_path, cap=1.0, clock=lambda: now[0])
    store.charge([Charge("a", "conf", 1.0)])
    now[0] -= DAY_S  # the clock stepped back a day: still the same (spent) day
    assert not store.charge([Charge("b", "conf", 0.5)]).stored
    now[0] += 2 * DAY_S  # the next real day: a fresh cap
    assert store.charge([Charge("b", "conf", 0.5)]).stored


def test_the_main_file_alone_holds_every_commit(tmp_path):
    store = release_store(tmp_path)
    store.charge([Charge("a", "conf", 0.5)])
    copy = tmp_path / "copy.sqlite"
    shutil.copy(store.path, copy)  # without its -wal: a checkpoint after each commit put everything in the main file
    with sqlite3.connect(str(copy)) as db:
        assert db.execute("SELECT COUNT(*) FROM charges").fetchone()[0] == 1


def audited_store(tmp_path) -> tuple[ReleaseStore, AuditLog]:
    audit = AuditLog(tmp_path / "audit", b"k" * 32)
    store = release_store(tmp_path)
    key = SpanKey("presence", "window", "hall", DAY0, DAY0, DAY0 + 900)
    assert store.record(key, "r-1", b"{}", {}, "conf", [Charge("a", "conf", 0.5)]).stored
    for event, data in store.unaudited():
        audit.append(event, "aggregator", **data)
        store.mark_audited(event, data)
    return store, audit


@pytest.mark.parametrize(
    "damage",
    [
        lambda db: db.execute("DELETE FROM charges"),
        lambda db: db.execute("UPDATE charges SET epsilon = 0"),
        lambda db: db.execute("DELETE FROM released"),
        lambda db: db.execute("DROP TABLE charges"),
    ],
)
def test_an_emptied_or_edited_store_is_refused_against_the_audit_log_and_restored_from_it(tmp_path, damage):
    store, audit = audited_store(tmp_path)
    path = store.path
    store.close()
    with sqlite3.connect(str(path)) as db:
        damage(db)
    entries = entries_of(audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT})
    reopened = ReleaseStore(path, 1.0)
    with pytest.raises(StoreMismatch, match="privacy-vision releases restore"):
        reopened.check_against_audit(entries)
    reopened.restore_from_audit(entries)
    reopened.check_against_audit(entries)
    assert reopened._db.execute("SELECT epsilon FROM charges WHERE instance = 'a'").fetchone() == (0.5,)
    assert reopened._db.execute("SELECT release_id FROM released").fetchall() == [("r-1",)]


def test_a_deleted_store_is_refused_against_the_audit_log(tmp_path):
    store, audit = audited_store(tmp_path)
    path = store.path
    store.close()
    path.unlink()
    with pytest.raises(StoreMismatch):
        ReleaseStore(path, 1.0).check_against_audit(entries_of(audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT}))


def test_an_entry_written_twice_is_one_key_to_restore(tmp_path):
    """The audit append succeeds but marking the row audited fails (a full disk): the tick writes the entry again.
    The refusal counts keys, not entries (bench/chaos.py said "lacks 28 releases" and restore put back 27)."""
    store, audit = audited_store(tmp_path)
    for entry in entries_of(audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT}):
        audit.append(entry["event"], "aggregator", **entry["data"])  # as the tick's retry does
    path = store.path
    store.close()
    path.unlink()
    entries = entries_of(audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT})
    assert len(entries) == 4
    reopened = ReleaseStore(path, 1.0)
    with pytest.raises(StoreMismatch, match=r"lacks 1 release\(s\) and 1 budget charge"):
        reopened.check_against_audit(entries)
    assert reopened.restore_from_audit(entries) == (1, 1)
    reopened.check_against_audit(entries)


def group(size: int, start: float = DAY0, instance: str = "i:day") -> GroupTotals:
    return GroupTotals("hall", start, start + 900, size, 1, instance)


def test_strict_mode_keeps_one_threshold_per_group_across_reconfigures_and_restarts(tmp_path):
    store = release_store(tmp_path, cap=10.0)
    context = Context(Grid(), 10, 2, 1)
    releaser = Releaser(ReleaseSettings(mode="strict", daily_epsilon_cap=10.0), store, lambda: str(uuid.uuid4()))
    releaser.release(group(1), context)
    kept = store._db.execute("SELECT threshold FROM strict_thresholds").fetchall()
    releaser.reconfigure(ReleaseSettings(mode="strict", daily_epsilon_cap=9.0))  # a change that sets no noise
    restarted = Releaser(ReleaseSettings(mode="strict", daily_epsilon_cap=9.0), store, lambda: str(uuid.uuid4()))
    for r in (releaser, restarted):
        assert r.release(group(2), context).status in (PENDING, RELEASED)
    assert store._db.execute("SELECT threshold FROM strict_thresholds").fetchall() == kept
    assert store.spent_today()[1] == pytest.approx(StrictAccount(ReleaseSettings(), 1, 900.0).epsilon_per_track_day)


def test_strict_mode_never_releases_a_group_below_k_and_states_the_proofs_delta(tmp_path):
    settings = ReleaseSettings(mode="strict", daily_epsilon_cap=100.0)
    account = StrictAccount(settings, 1, 900.0)
    assert account.delta == settings.strict_delta
    context = Context(Grid(), 10, 2, 1)
    store = release_store(tmp_path, cap=100.0)
    releaser = Releaser(settings, store, lambda: str(uuid.uuid4()))
    statuses = [releaser.release(group(settings.k - 1, instance=f"i{n}:day"), context).status for n in range(200)]
    assert RELEASED not in statuses and set(statuses) <= {PENDING, CAP}


def test_a_full_disk_refuses_the_release_and_charges_nothing_until_space_returns(tmp_path):
    """Issue 20 finding 10: a charge that cannot be written is a refusal (OutboxUnavailable: the aggregator answers
    "failed", stays up, and the anonymizer keeps the totals), never a crash and never a release without its charge.
    SQLite's own page limit stands in for the disk: it fails the write with SQLITE_FULL, as a full disk does."""
    store = release_store(tmp_path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    key = SpanKey("presence", "window", "hall", DAY0, DAY0, DAY0 + 900)
    body = b"{" + b" " * 20_000 + b"}"  # more than the pages left
    with pytest.raises(OutboxUnavailable, match="full"):
        store.record(key, "r-1", body, {}, "conf", [Charge("a", "conf", 0.5)])
    assert store.spent_today()[1] == 0 and store.released_count() == 0 and store.released_until() == 0
    store._db.execute(f"PRAGMA max_page_count = {pages + 1000}")  # space returns: the same release goes through
    assert store.record(key, "r-1", body, {}, "conf", [Charge("a", "conf", 0.5)]).stored
    assert store.spent_today()[1] == pytest.approx(0.5)


class CheckpointOnAFullDisk:
    """The store's connection, except that a WAL checkpoint fails as on a full disk."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.full = db, True

    def execute(self, sql: str, *args):
        if self.full and "wal_checkpoint" in sql:
            raise sqlite3.OperationalError("database or disk is full")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_checkpoint_on_a_full_disk_fails_nothing_committed_and_is_reported_until_it_succeeds(tmp_path):
    """Found by bench/chaos.py's full-disk phase: the aggregator's checkpoint after a batch raised and the node
    crashed. What was committed is durable in the WAL; the failed checkpoint is reported (the aggregator's ERROR)."""
    store = release_store(tmp_path)
    store._db = CheckpointOnAFullDisk(store._db)
    key = SpanKey("presence", "window", "hall", DAY0, DAY0, DAY0 + 900)
    assert store.record(key, "r-1", b"{}", {}, "conf", [Charge("a", "conf", 0.5)]).stored
    assert "checkpoint failed" in store.checkpoint_error and store.released_count() == 1
    store.checkpoint()
    assert store.checkpoint_error
    store._db.full = False
    store.checkpoint()
    assert store.checkpoint_error == ""
