"""Tamper-evident audit log: append-only JSON Lines, hash-chained and HMAC'd, shared by all processes.

Each entry holds the SHA-256 of the previous entry's line and an HMAC-SHA256 over its own canonical
content under the device audit key, so editing, deleting or reordering any entry breaks the chain or a
MAC. A head file (also MAC'd) names the last entry, so cutting entries off the end is detected too.
Rotation starts a new file whose first entry chains to the last entry of the previous one. Writers in
several processes serialise on an flock of the head file. Entries may never carry pixels, boxes,
positions or tracker/privacy IDs: append() refuses such fields.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from privacy_vision.core.protocol import load_key_file

GENESIS = "0" * 64
FORBIDDEN_FIELDS = {
    "pixels",
    "image",
    "frame",
    "box",
    "boxes",
    "bbox",
    "x",
    "y",
    "x_m",
    "y_m",
    "position",
    "positions",
    "cell_x_m",
    "cell_y_m",
    "track_id",
    "track_ids",
    "privacy_id",
    "privacy_ids",
    "tracks",
}


class AuditFieldError(ValueError):
    """An audit entry tried to record per-person or pixel data."""


def _canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _check_fields(value, path: str = "") -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.lower() in FORBIDDEN_FIELDS:
                raise AuditFieldError(f"audit entries may not record '{path}{key}' (per-person or pixel data)")
            _check_fields(inner, f"{path}{key}.")
    elif isinstance(value, (list, tuple)):
        for inner in value:
            _check_fields(inner, path)


def configuration_digest(parameters: dict) -> str:
    """SHA-256 of a configuration's canonical JSON: equal digests mean every parameter was equal."""
    return hashlib.sha256(
        json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str).encode()
    ).hexdigest()


class AuditLog:
    """Tamper-evident record of what the system did (HMAC chain over JSON lines) that refuses per-person fields."""

    def __init__(
        self, directory: str | Path, key: bytes, max_bytes: int = 10 * 2**20, clock: Callable[[], float] = time.time
    ) -> None:
        self._clock = clock  # wall time of each entry (injected, as in the aggregator's CellReleaser)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._key = key
        self.max_bytes = max_bytes
        self.head_path = self.directory / "audit.head"

    @classmethod
    def from_key_file(cls, directory: str | Path, key_file: str | Path, max_bytes: int = 10 * 2**20) -> AuditLog:
        return cls(directory, load_key_file(key_file), max_bytes)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("audit-*.jsonl"))

    def append(self, event: str, source: str, **data) -> dict:
        _check_fields(data)
        with open(self.head_path, "a+") as head:
            fcntl.flock(head, fcntl.LOCK_EX)
            try:
                head.seek(0)
                state = _read_head(head.read(), self._key)
                files = self.files()
                current = files[-1] if files else self.directory / "audit-000001.jsonl"
                if files and current.stat().st_size >= self.max_bytes:
                    current = self.directory / f"audit-{int(current.stem.split('-')[1]) + 1:06d}.jsonl"
                entry = {
                    "seq": state["seq"] + 1,
                    "ts": round(self._clock(), 3),
                    "event": event,
                    "source": source,
                    "data": data,
                    "prev_sha256": state["last_sha256"],
                }
                entry["hmac"] = hmac.new(self._key, _canonical(entry), hashlib.sha256).hexdigest()
                line = _canonical(entry) + b"\n"
                with open(current, "ab") as log:
                    log.write(line)
                    log.flush()
                    os.fsync(log.fileno())
                new_head = {"seq": entry["seq"], "last_sha256": hashlib.sha256(line.rstrip(b"\n")).hexdigest()}
                new_head["hmac"] = hmac.new(self._key, _canonical(new_head), hashlib.sha256).hexdigest()
                head.seek(0)
                head.truncate()
                head.write(json.dumps(new_head))
                head.flush()
                os.fsync(head.fileno())
            finally:
                fcntl.flock(head, fcntl.LOCK_UN)
        return entry


def _read_head(text: str, key: bytes) -> dict:
    if not text.strip():
        return {"seq": 0, "last_sha256": GENESIS}
    head = json.loads(text)
    expected = hmac.new(key, _canonical({k: v for k, v in head.items() if k != "hmac"}), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, head.get("hmac", "")):
        raise ValueError("audit head file fails its HMAC: the log was tampered with; run 'privacy-vision audit verify'")
    return head


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking an audit log: entries read and the first broken one, if any."""

    ok: bool
    entries: int
    files: int
    first_broken: str  # "file:line: reason", empty when ok

    def __str__(self) -> str:
        if self.ok:
            return f"audit log OK: {self.entries} entries in {self.files} file(s), chain and MACs intact"
        return f"audit log BROKEN at {self.first_broken} ({self.entries} entries verified before it)"


def verify(directory: str | Path, key: bytes) -> VerifyResult:
    """Walk every file in order; report the first entry whose MAC, chain link or sequence is wrong."""
    log = AuditLog(directory, key)
    previous, expected_seq, count = GENESIS, 1, 0
    files = log.files()
    for path in files:
        for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
            if not raw:
                continue
            where = f"{path.name}:{number}"
            try:
                entry = json.loads(raw)
                mac = entry.pop("hmac")
            except (ValueError, KeyError, AttributeError):
                return VerifyResult(False, count, len(files), f"{where}: not a valid entry")
            if not hmac.compare_digest(hmac.new(key, _canonical(entry), hashlib.sha256).hexdigest(), mac):
                return VerifyResult(False, count, len(files), f"{where}: HMAC mismatch (entry edited or forged)")
            if entry.get("prev_sha256") != previous:
                return VerifyResult(
                    False,
                    count,
                    len(files),
                    f"{where}: chain broken (an entry before it was removed, edited or reordered)",
                )
            if entry.get("seq") != expected_seq:
                return VerifyResult(
                    False, count, len(files), f"{where}: sequence {entry.get('seq')} where {expected_seq} was expected"
                )
            previous = hashlib.sha256(raw).hexdigest()
            expected_seq += 1
            count += 1
    try:
        head = _read_head(log.head_path.read_text() if log.head_path.exists() else "", key)
    except ValueError as error:
        return VerifyResult(False, count, len(files), f"audit.head: {error}")
    if count == 0:
        return VerifyResult(
            False,
            0,
            len(files),
            "no entries: the log is missing or empty, yet every node writes its "
            "start configuration (deleted, or the wrong --dir?)",
        )
    if head["seq"] != count or head["last_sha256"] != previous:
        return VerifyResult(
            False,
            count,
            len(files),
            f"end of log: the head names entry {head['seq']} but the log ends at {count} (entries cut off the end)",
        )
    return VerifyResult(True, count, len(files), "")


class AuditBroken(RuntimeError):
    """The audit log fails verification, so what it records cannot be relied on."""


def entries_of(log: AuditLog, events: set[str]) -> list[dict]:
    """The entries of these event types, from a log that verifies (an empty or missing log has none)."""
    if not log.files():
        return []
    result = verify(log.directory, log._key)
    if not result.ok:
        raise AuditBroken(f"the audit log cannot be relied on: {result}; run 'privacy-vision audit verify'")
    entries = []
    for path in log.files():
        for raw in path.read_bytes().split(b"\n"):
            if raw:
                entry = json.loads(raw)
                if entry.get("event") in events:
                    entries.append(entry)
    return entries
