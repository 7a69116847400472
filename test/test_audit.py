"""Audit log: chain and MACs catch edits, deletions, reordering, truncation; rotation keeps the chain."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.audit import AuditBroken, AuditFieldError, AuditLog, entries_of, verify
from testkit.core import fill_up

KEY = b"k" * 32


def filled(tmp_path, n: int = 10, max_bytes: int = 10 * 2**20) -> AuditLog:
    log = AuditLog(tmp_path, KEY, max_bytes)
    for i in range(n):
        log.append("release_sent", "uplink", zone="hall", epsilon=1.0, k=5, index=i)
    return log


def lines(log: AuditLog) -> list[bytes]:
    return [line for path in log.files() for line in path.read_bytes().splitlines()]


def events(log: AuditLog) -> list[str]:
    return [json.loads(line)["event"] for line in lines(log)]


def test_intact_log_verifies(tmp_path):
    filled(tmp_path)
    result = verify(tmp_path, KEY)
    assert result.ok and result.entries == 10, str(result)


def test_editing_one_byte_is_caught_at_that_entry(tmp_path):
    log = filled(tmp_path)
    path = log.files()[0]
    data = bytearray(path.read_bytes())
    offset = data.index(b'"index":4')
    data[offset + len(b'"index":')] = ord("7")
    path.write_bytes(bytes(data))
    result = verify(tmp_path, KEY)
    assert not result.ok and result.first_broken.startswith(f"{path.name}:5: HMAC mismatch")


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda ls: ls[:3] + ls[4:], ":4: chain broken"),  # delete entry 4
        (lambda ls: [*ls[:3], ls[4], ls[3], *ls[5:]], ":4: chain broken"),  # swap 4 and 5
        (lambda ls: ls[:-2], "end of log"),  # cut the last two
    ],
)
def test_deletion_reordering_and_truncation_are_caught(tmp_path, damage, expected):
    log = filled(tmp_path)
    path = log.files()[0]
    path.write_bytes(b"\n".join(damage(lines(log))) + b"\n")
    result = verify(tmp_path, KEY)
    assert not result.ok and expected in result.first_broken, str(result)


def test_wrong_key_fails(tmp_path):
    filled(tmp_path, 2)
    assert not verify(tmp_path, b"x" * 32).ok


def test_rotation_keeps_the_chain_across_files(tmp_path):
    log = filled(tmp_path, 40, max_bytes=1500)
    assert len(log.files()) > 3
    assert verify(tmp_path, KEY).ok
    second = log.files()[1]
    second.write_bytes(b"")  # drop a whole middle file
    result = verify(tmp_path, KEY)
    assert not result.ok and "chain broken" in result.first_broken


@pytest.mark.parametrize("field", ["box", "x_m", "privacy_id", "track_id", "image", "position"])
def test_per_person_fields_are_refused(tmp_path, field):
    with pytest.raises(AuditFieldError, match=field):
        AuditLog(tmp_path, KEY).append("oops", "test", **{field: 1})
    with pytest.raises(AuditFieldError):
        AuditLog(tmp_path, KEY).append("oops", "test", nested={"inner": [{field: 1}]})


def _writer(directory, count):
    log = AuditLog(directory, KEY)
    for i in range(count):
        log.append("frames", f"proc-{os.getpid()}", processed=i)


def test_concurrent_writers_in_separate_processes_keep_one_chain(tmp_path):
    processes = [multiprocessing.Process(target=_writer, args=(tmp_path, 50)) for _ in range(4)]
    for p in processes:
        p.start()
    for p in processes:
        p.join()
    result = verify(tmp_path, KEY)
    assert result.ok and result.entries == 200, str(result)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["zone", "epsilon", "k", "note", "count"]),
            st.one_of(st.integers(), st.text(max_size=20), st.floats(allow_nan=False)),
            max_size=4,
        ),
        min_size=1,
        max_size=15,
    ),
    st.floats(0, 1, exclude_max=True),
    st.integers(1, 94),
)
def test_any_single_edit_is_detected(tmp_path_factory, payloads, where, shift):
    directory = tmp_path_factory.mktemp("audit")
    log = AuditLog(directory, KEY)
    for payload in payloads:
        log.append("event", "test", **payload)
    path = log.files()[0]
    raw = bytearray(path.read_bytes())
    position = int(where * (len(raw) - 1))  # the file ends with a newline; every other byte is fair game
    if raw[position] == ord("\n"):
        position -= 1
    raw[position] = (raw[position] - 32 + shift) % 95 + 32 if 32 <= raw[position] < 127 else 65
    path.write_bytes(bytes(raw))
    assert not verify(directory, KEY).ok


@pytest.mark.parametrize("emptied", ["never written", "files and head deleted", "files deleted, head kept"])
def test_finding_9_missing_or_emptied_log_is_an_error(tmp_path, emptied):
    """An emptied audit folder used to verify as "OK: 0 entries"."""
    if emptied != "never written":
        log = filled(tmp_path, 3)
        for path in log.files():
            path.unlink()
        if emptied == "files and head deleted":
            log.head_path.unlink()
    result = verify(tmp_path, KEY)
    assert not result.ok and result.entries == 0, str(result)
    assert "missing or empty" in str(result) or "cut off" in str(result)


def test_audit_verify_command_fails_on_an_empty_log(tmp_path):
    import subprocess
    import sys

    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    (tmp_path / "audit").mkdir()
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "privacy_vision.cli",
            "audit",
            "verify",
            "--dir",
            str(tmp_path / "audit"),
            "--key",
            str(key_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1 and "missing or empty" in run.stdout, run.stdout + run.stderr


def test_entries_carry_the_injected_clock_and_still_verify(tmp_path):
    """The clock is injected (as in the aggregator), so a test can pin an entry's time."""
    log = AuditLog(tmp_path, KEY, clock=lambda: 1_700_000_000.1234)
    log.append("first", "test", n=1)
    entry = json.loads(log.files()[0].read_text().splitlines()[0])
    assert entry["ts"] == 1_700_000_000.123
    assert verify(tmp_path, KEY).ok


def audit_verify_command(directory, tmp_path):
    import subprocess
    import sys

    key_file = tmp_path / "audit.key"
    key_file.write_text(KEY.hex())
    key_file.chmod(0o600)
    command = [sys.executable, "-m", "privacy_vision.cli", "audit", "verify", "--dir", str(directory)]
    return subprocess.run([*command, "--key", str(key_file)], capture_output=True, text=True, timeout=120)


def test_finding_4_a_torn_last_line_is_recovered_as_such_and_recorded(tmp_path):
    """A full disk leaves the first bytes of an entry with no newline; `audit verify` used to call that BROKEN
    forever, exactly as it does an edit."""
    log = filled(tmp_path / "audit", 5)
    path = log.files()[0]
    intact = path.read_bytes()
    torn = intact.splitlines(keepends=True)[-1][:57]  # the first 57 bytes of an entry: the write was cut short
    path.write_bytes(intact + torn)
    result = verify(log.directory, KEY)
    assert result.ok and result.entries == 5 and "torn write of 57 bytes" in str(result), str(result)
    run = audit_verify_command(log.directory, tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "moved a torn write of 57 bytes after the last entry, on audit-000001.jsonl:6 aside" in run.stdout
    assert "audit log OK: 6 entries" in run.stdout
    [recorded] = entries_of(log, {"audit_torn_write_recovered"})
    assert recorded["data"]["bytes"] == 57 and recorded["data"]["line"] == 6
    assert (log.directory / recorded["data"]["kept_in"]).read_bytes() == torn  # kept, not thrown away
    log.append("release_sent", "uplink", zone="hall")
    assert verify(log.directory, KEY).ok and verify(log.directory, KEY).entries == 7


def test_finding_4_the_next_entry_recovers_a_torn_line_by_itself(tmp_path):
    log = filled(tmp_path, 3)
    with open(log.files()[0], "ab") as handle:
        handle.write(b'{"data":{"zone":"ha')
    log.append("release_sent", "uplink", zone="hall")  # before, it was written after the torn bytes, on their line
    assert events(log)[-2:] == ["audit_torn_write_recovered", "release_sent"]
    assert str(verify(tmp_path, KEY)) == "audit log OK: 5 entries in 1 file(s), chain and MACs intact"


def test_finding_4_an_entry_whose_head_write_failed_is_taken_not_called_truncation(tmp_path):
    log = filled(tmp_path, 3)
    head = log.head_path.read_bytes()
    log.append("release_sent", "uplink", zone="hall")
    log.head_path.write_bytes(head)  # what a head write that failed on a full disk leaves
    result = verify(tmp_path, KEY)
    assert result.ok and result.head_behind and result.entries == 4, str(result)
    log.append("release_sent", "uplink", zone="hall")
    assert verify(tmp_path, KEY).ok and not verify(tmp_path, KEY).head_behind and len(events(log)) == 5


def test_finding_4_a_torn_write_inside_an_old_log_is_recorded_once(tmp_path):
    """Before this recovery, the next entry was appended right after the torn bytes, on the same line."""
    log = filled(tmp_path, 3)
    path = log.files()[0]
    before = path.read_bytes()
    log.append("release_sent", "uplink", zone="hall")
    entry = path.read_bytes()[len(before) :]
    path.write_bytes(before + entry[:40] + entry)
    result = verify(tmp_path, KEY)
    assert result.ok and [str(t) for t in result.torn_writes] == [
        "a torn write of 40 bytes in front of the entry on audit-000001.jsonl:4"
    ]
    assert len(log.recover()) == 1 and log.recover() == []
    assert len(entries_of(log, {"audit_torn_write_recovered"})) == 1 and verify(tmp_path, KEY).ok


@pytest.mark.parametrize(
    "damage",
    ["edit entry 2", "garbage after the last line", "torn bytes inside a line"],
)
def test_finding_4_edits_stay_broken_whatever_the_tail(tmp_path, damage):
    log = filled(tmp_path, 4)
    path = log.files()[0]
    data = path.read_bytes()
    last = data.splitlines(keepends=True)[-1]
    if damage == "edit entry 2":
        data = data.replace(b'"index":1', b'"index":9') + last[:30]  # a torn tail does not excuse an edit
    elif damage == "garbage after the last line":
        data += b"not the start of an entry"
    else:
        data = data.replace(b'"index":1', b'"index":1' + b'{"data":{"x')  # not a prefix followed by an entry
    path.write_bytes(data)
    result = verify(tmp_path, KEY)
    assert not result.ok, str(result)
    with pytest.raises(AuditBroken):
        entries_of(log, {"release_sent"})


def test_finding_4_a_full_disk_tears_a_line_and_space_coming_back_recovers_it(small_audit_disk):
    """The real fault: the audit folder on a small file system that fills up in the middle of an entry."""
    log = filled(small_audit_disk, 3)
    filler = fill_up(small_audit_disk)
    with pytest.raises(OSError, match="No space left"):  # longer than a page: it cannot fit in the file's slack
        log.append("dpia_generated", "aggregator", summary="x" * 6000)
    during = verify(small_audit_disk, KEY)
    assert during.ok and [t.inline for t in during.torn_writes] == [False], str(during)
    filler.unlink()
    log.append("release_sent", "uplink", zone="hall", index=1000)
    result = verify(small_audit_disk, KEY)
    assert str(result) == "audit log OK: 5 entries in 1 file(s), chain and MACs intact"
    assert events(log)[-2:] == ["audit_torn_write_recovered", "release_sent"]


def test_entries_of_one_event_type_come_back_in_one_call(tmp_path):
    """What the ledger check at start reads: every `budget_charged` entry of a log that verifies."""
    log = AuditLog(tmp_path, KEY)
    log.append("configuration_at_start", "aggregator", epsilon=2.0)
    for day in ("2026-01-01", "2026-01-02"):
        log.append("budget_charged", "aggregator", day=day, epsilon=2.0)
    log.append("release_sent", "uplink", zone="hall")
    charged = entries_of(log, {"budget_charged"})
    assert [entry["data"]["day"] for entry in charged] == ["2026-01-01", "2026-01-02"]
    assert all(entry["source"] == "aggregator" and entry["seq"] in (2, 3) for entry in charged)
    assert len(entries_of(log, {"budget_charged", "release_sent"})) == 3 and len(events(log)) == 4
