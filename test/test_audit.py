"""Audit log: chain and MACs catch edits, deletions, reordering, truncation; rotation keeps the chain."""

from __future__ import annotations

import json
import multiprocessing
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy_vision.core.audit import AuditFieldError, AuditLog, verify

KEY = b"k" * 32


def filled(tmp_path, n: int = 10, max_bytes: int = 10 * 2**20) -> AuditLog:
    log = AuditLog(tmp_path, KEY, max_bytes)
    for i in range(n):
        log.append("release_sent", "uplink", zone="hall", epsilon=1.0, k=5, index=i)
    return log


def lines(log: AuditLog) -> list[bytes]:
    return [line for path in log.files() for line in path.read_bytes().splitlines()]


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
