"""Uplink faults found from outside (issue 13, findings 1-4), each reproduced against the real core:
TLS rejection without backoff, a failing audit log killing the sender, a full disk, a damaged outbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from privacy_vision.core.audit import AuditLog
from privacy_vision.core.pki import read_pins
from privacy_vision.core.protocol import canonical_release_bytes, load_key_file
from privacy_vision.core.release_schema import example_release
from privacy_vision.core.uplink import ERROR, Outbox, PinnedClient, Sender, backoff_delay


def fill(outbox: Outbox, count: int) -> list[bytes]:
    bodies = [canonical_release_bytes(example_release(zone_id=f"z{i}")) for i in range(count)]
    for body in bodies:
        outbox.put(json.loads(body)["release_id"], body)
    return bodies


class CountingClient(PinnedClient):
    """The real pinned client, counting TLS handshakes."""

    handshakes = 0

    def _connect(self):
        self.handshakes += 1
        return super()._connect()


class SenderThread:
    """Sender.run in a thread, as the node runs it, with the log lines it writes."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.lines: list[tuple[str, str]] = []
        self.stop, self.wake = threading.Event(), threading.Event()
        self.thread = threading.Thread(
            target=sender.run, args=(self.stop, self.wake, lambda level, text: self.lines.append((level, text)))
        )
        self.thread.start()

    def join(self) -> None:
        self.stop.set()
        self.wake.set()
        self.thread.join(10)


def until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_backoff_grows_is_capped_and_never_zero():
    for attempt in range(1, 40):
        step = min(4.0, 0.1 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 0.1, 4.0) for _ in range(50)]
        assert all(step / 2 <= delay <= step for delay in delays)


def test_finding_1_tls_rejection_waits_the_same_backoff(ingest, pki, tmp_path):
    """A wrong pin used to be retried with no wait (1,687 handshakes in 10 s)."""
    outbox = Outbox(tmp_path / "outbox.sqlite", 100)
    fill(outbox, 3)
    backup_only = [read_pins(pki)[1]]
    client = CountingClient(ingest.url, backup_only, str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
    running = SenderThread(Sender(outbox, client, base_delay_s=0.2, max_delay_s=0.4))
    time.sleep(2.0)
    running.join()
    assert 1 <= client.handshakes <= 12, client.handshakes  # at ≥ 0.1 s per try; the old loop made hundreds
    assert len(running.lines) == client.handshakes and all(level == ERROR for level, _ in running.lines)
    assert "pins" in running.lines[0][1] and running.sender.health().level == ERROR
    assert ingest.requests == 0 and outbox.size() == 3


def test_finding_2_failing_audit_log_is_an_error_and_retried(ingest, pki, tmp_path):
    """A tampered audit head used to kill the sender thread while /diagnostics said OK."""
    audit_key = os.urandom(32)
    audit = AuditLog(tmp_path / "audit", audit_key)
    audit.append("start", "test")
    head = audit.head_path.read_text()
    audit.head_path.write_text(head.replace('"seq": 1', '"seq": 7'))  # tampered: append() refuses to write
    outbox = Outbox(tmp_path / "outbox.sqlite", 100)
    bodies = fill(outbox, 3)
    client = PinnedClient(ingest.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
    sender = Sender(
        outbox,
        client,
        base_delay_s=0.05,
        max_delay_s=0.1,
        on_delivered=lambda item: audit.append("release_sent", "uplink", release_id=item.release_id),
    )
    running = SenderThread(sender)
    try:
        assert until(lambda: sender.failures >= 3)
        assert running.thread.is_alive()
        assert sender.health().level == ERROR and "audit" in sender.health().message
        assert any(level == ERROR and "tampered" in text for level, text in running.lines)
        assert outbox.size() == 3  # not acknowledged without its audit entry
        audit.head_path.write_text(head)  # the operator repairs the log
        assert until(lambda: outbox.size() == 0)
    finally:
        running.join()
    assert sender.health().level != ERROR
    assert sorted(canonical_release_bytes(r) for r in ingest.store.releases()) == sorted(bodies)


DISK_FULL_CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from privacy_vision.core.uplink import Outbox, OutboxUnavailable, PinnedClient, Sender
    from privacy_vision.core.protocol import load_key_file
    path, url, pins, ca, key = sys.argv[1:6]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    outbox = Outbox(path, 1000)
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))  # no file may grow: a full disk
    queued = outbox.size()
    try:
        outbox.put("new-release", b"{}")
        refused = ""
    except OutboxUnavailable as error:
        refused = str(error)
    sender = Sender(outbox, PinnedClient(url, json.loads(pins), ca, "dev-1", load_key_file(key)), 0.01, 0.02)
    delays = [sender.drain_once() for _ in range(3)]
    print(json.dumps({"queued": queued, "refused": refused, "left": outbox.size(), "delivered": sender.delivered,
                      "health": sender.health().level, "delays": delays}))
""")


def test_finding_3_full_disk_refuses_new_releases_and_still_drains(ingest, pki, tmp_path):
    """A full disk used to crash the node, and after a restart 0 of 62 queued releases were delivered."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 1000)
    bodies = fill(outbox, 62)
    outbox.close()
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            DISK_FULL_CHILD,
            str(path),
            ingest.url,
            json.dumps(read_pins(pki)),
            str(pki.ca_cert),
            str(pki.device_key),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["queued"] == 62 and "new ones are refused" in report["refused"]
    assert report["delivered"] == 62 and report["left"] == 0 and report["health"] == ERROR
    assert sorted(canonical_release_bytes(r) for r in ingest.store.releases()) == sorted(bodies)
    reopened = Outbox(
        path, 1000
    )  # space is back: the acknowledgements that could not be written are resent as duplicates
    assert reopened.recovered_from is None and reopened.size() in (0, 62)
    reopened.put("after-space-returns", b"{}")


@pytest.mark.parametrize("keep_bytes", [0, 4096, 100, 30000])
def test_finding_4_damaged_outbox_is_moved_aside_intact_and_reported(tmp_path, keep_bytes):
    """A 0-byte outbox used to start empty without a word; a truncated one was a traceback (crash loop)."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, 100)
    fill(outbox, 40)
    outbox.close()
    with open(path, "r+b") as handle:
        handle.truncate(keep_bytes)
    damaged = path.read_bytes()
    reopened = Outbox(path, 100)
    assert reopened.recovered_from is not None and reopened.recovered_from.read_bytes() == damaged
    assert reopened.corruption and reopened.size() == 0
    assert reopened.put("next", b"{}")
    reopened.close()
    assert Outbox(path, 100).recovered_from is None  # the new outbox is intact


def test_a_foreign_database_is_not_taken_for_the_outbox(tmp_path):
    import sqlite3

    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    outbox = Outbox(path, 10)
    assert outbox.recovered_from is not None and "not an outbox" in outbox.corruption


def test_a_store_replaced_under_the_sender_is_opened_again(ingest, pki, tmp_path):
    """The aggregator moves a damaged release store aside and starts a new one (or the operator restores it): the
    uplink's sender follows the new file, or what is queued in it is never sent (found by bench/chaos.py: 37 of 70
    releases stayed queued after the corrupt-file phase). The sequence never goes back."""
    path = tmp_path / "releases.sqlite"
    outbox = Outbox(path, 100)
    client = PinnedClient(ingest.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
    sender = Sender(outbox, client, base_delay_s=0.05, max_delay_s=0.1)
    first = fill(outbox, 2)
    assert sender.step() == 0 and outbox.size() == 0
    sequence = outbox.next_sequence()
    for suffix in ("", "-wal", "-shm"):  # as Outbox._move_aside does, then a new store
        if os.path.exists(f"{path}{suffix}"):
            os.replace(f"{path}{suffix}", tmp_path / f"releases.sqlite.corrupt{suffix}")
    replacement = Outbox(path, 100)
    later = [canonical_release_bytes(example_release(zone_id=f"new{i}")) for i in range(3)]
    for body in later:
        replacement.put(json.loads(body)["release_id"], body)
    assert sender.step() == 0 and replacement.size() == 0
    assert outbox.next_sequence() > sequence
    assert sorted(canonical_release_bytes(r) for r in ingest.store.releases()) == sorted(first + later)


def _open_at_once(path: str, as_store: bool, barrier) -> bool:
    """One process's start (the aggregator's store or the uplink's outbox): did it take the file for damaged?"""
    from privacy_vision.core.release.store import ReleaseStore

    barrier.wait()
    opened = ReleaseStore(path, 2.0) if as_store else Outbox(path, 10)
    return opened.recovered_from is not None


def test_aggregator_and_uplink_starting_together_never_see_a_half_made_outbox(tmp_path):
    """Both create the file when it is missing. Built in place, one could open the other's half-made file (header
    written, a table not yet), move it aside as damaged and split the store in two: the CI run of stop 24 saw it,
    and none of that launch's releases reached the ingest. Now each start sees a whole outbox or none."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    with context.Pool(4) as pool, context.Manager() as manager:
        for round_ in range(12):
            path = str(tmp_path / f"releases-{round_}.sqlite")
            barrier = manager.Barrier(4)
            damaged = pool.starmap(_open_at_once, [(path, i % 2 == 0, barrier) for i in range(4)])
            assert not any(damaged), (round_, damaged)
            assert not list(tmp_path.glob(f"releases-{round_}.sqlite.corrupt-*"))
            assert not list(tmp_path.glob(f".releases-{round_}.sqlite.new-*"))  # no draft left behind


def test_an_in_memory_outbox_leaves_a_file_named_memory_alone(tmp_path, monkeypatch):
    """':memory:' is SQLite's private database: a file of that name in the working directory was taken for a damaged
    outbox and moved aside (one ended up committed to the repository)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ":memory:").write_bytes(b"someone else's file")
    outbox = Outbox(":memory:", 10)
    assert outbox.recovered_from is None and outbox.put("r-1", b"{}") and outbox.size() == 1
    assert not outbox.reopen_if_replaced()
    assert (tmp_path / ":memory:").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == [":memory:"]
