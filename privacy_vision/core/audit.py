"""Tamper-evident audit log: append-only JSON Lines, hash-chained and HMAC'd, shared by all processes.

Each entry holds the SHA-256 of the previous entry's line and an HMAC-SHA256 over its own canonical
content under the device audit key, so editing, deleting or reordering any entry breaks the chain or a
MAC. A head file (also MAC'd) names the last entry, so cutting entries off the end is detected too.
Rotation starts a new file whose first entry chains to the last entry of the previous one. Writers in
several processes serialise on an flock of a lock file; the head is replaced atomically, so a failed
write (a full disk) leaves the old head intact. Entries may never carry pixels, boxes, positions or
tracker/privacy IDs: append() refuses such fields.

A write cut short (a full disk, a crash) can leave two traces, and neither is confused with an edit:
a torn last line (a prefix of an entry, no newline) and a last entry the head does not name yet. The
next append (or `privacy-vision audit verify`) moves the torn bytes aside, records that with an
`audit_torn_write_recovered` entry, and moves the head on to an entry whose MAC and chain link hold.
An entry changed anywhere, a line removed or a head that names more than the log holds stays BROKEN.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterator
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
        self._lock_path = self.directory / "audit.lock"

    @classmethod
    def from_key_file(cls, directory: str | Path, key_file: str | Path, max_bytes: int = 10 * 2**20) -> AuditLog:
        return cls(directory, load_key_file(key_file), max_bytes)

    def files(self) -> list[Path]:
        return sorted(self.directory.glob("audit-*.jsonl"))

    def append(self, event: str, source: str, **data) -> dict:
        _check_fields(data)
        with self._locked():
            head, _ = self._recover_tail(_read_head(self._read_head_text(), self._key))
            return self._write(head, event, source, data)[1]

    def check_writable(self) -> None:
        """ValueError when the next append would be refused for a reason known now (a head that fails its MAC):
        a change that must be audited is then refused before it is made. (A full disk shows only when written.)"""
        _read_head(self._read_head_text(), self._key)

    def recover(self) -> list[str]:
        """Recover what writes cut short left behind (see the module docstring) and record each torn write found
        in the middle of a log written before this recovery existed; returns what was done, one line each."""
        with self._locked():
            head, done = self._recover_tail(_read_head(self._read_head_text(), self._key))
            result, recorded = _walk(self.directory, self._key, {TORN_WRITE_EVENT})
            known = {(entry["data"]["file"], entry["data"]["sha256"]) for entry in recorded}
            for torn in result.torn_writes if result.ok else ():
                if torn.inline and (torn.file, torn.sha256) not in known:
                    head, _ = self._write(head, TORN_WRITE_EVENT, "audit", torn.as_data())
                    done.append(f"recorded {torn}")
            return done

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_head_text(self) -> str:
        return self.head_path.read_text() if self.head_path.exists() else ""

    def _write(self, head: dict, event: str, source: str, data: dict) -> tuple[dict, dict]:
        """Append one entry after `head`, then replace the head; returns the new head and the entry."""
        files = self.files()
        current = files[-1] if files else self.directory / "audit-000001.jsonl"
        if files and current.stat().st_size >= self.max_bytes:
            current = self.directory / f"audit-{int(current.stem.split('-')[1]) + 1:06d}.jsonl"
        entry = {
            "seq": head["seq"] + 1,
            "ts": round(self._clock(), 3),
            "event": event,
            "source": source,
            "data": data,
            "prev_sha256": head["last_sha256"],
        }
        entry["hmac"] = _mac(self._key, entry)
        line = _canonical(entry) + b"\n"
        with open(current, "ab") as log:
            log.write(line)
            log.flush()
            os.fsync(log.fileno())
        new_head = {"seq": entry["seq"], "last_sha256": hashlib.sha256(line.rstrip(b"\n")).hexdigest()}
        self._replace_head(new_head)
        return new_head, entry

    def _replace_head(self, head: dict) -> None:
        """Write a new head beside the old one and rename it over it: a failed write leaves the old head whole."""
        head = {**head, "hmac": _mac(self._key, head)}
        temporary = self.head_path.with_name(f"audit.head.{os.getpid()}.tmp")
        try:
            with open(temporary, "w") as handle:
                handle.write(json.dumps(head))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.head_path)
        finally:
            temporary.unlink(missing_ok=True)
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _recover_tail(self, head: dict) -> tuple[dict, list[str]]:
        """Before writing after it: a torn last line is moved aside (and recorded), and an intact entry the head does
        not name yet (the head's write failed) becomes the head. Anything else is left for verify() to report.
        Returns the head to write after and what was recovered."""
        files = self.files()
        if not files:
            return head, []
        current = files[-1]
        start, data = _tail_of(current)
        ends = data.rfind(b"\n") + 1  # where the last complete line ends, within data
        last_line = data[data.rfind(b"\n", 0, max(ends - 1, 0)) + 1 : max(ends - 1, 0)]
        head, notes = self._successor_head(head, last_line)
        if ends == len(data):
            return head, notes
        fragment = data[ends:]
        aside = current.with_name(f"{current.name}.torn-{start + ends}")
        aside.write_bytes(fragment)
        with open(current, "r+b") as log:
            log.truncate(start + ends)
            os.fsync(log.fileno())
        torn = TornWrite(current.name, _line_count(current) + 1, len(fragment), fragment, inline=False)
        head, _ = self._write(head, TORN_WRITE_EVENT, "audit", {**torn.as_data(), "kept_in": aside.name})
        return head, [*notes, f"moved {torn} aside to {aside.name}"]

    def _successor_head(self, head: dict, last_line: bytes) -> tuple[dict, list[str]]:
        """The head, moved on to the file's last entry when that entry is the one right after it and intact."""
        if not last_line or hashlib.sha256(last_line).hexdigest() == head["last_sha256"]:
            return head, []
        try:
            entry = json.loads(last_line)
            mac = entry.pop("hmac")
        except (ValueError, KeyError, AttributeError):
            return head, []
        if not (
            hmac.compare_digest(_mac(self._key, entry), str(mac))
            and entry.get("seq") == head["seq"] + 1
            and entry.get("prev_sha256") == head["last_sha256"]
        ):
            return head, []
        head = {"seq": entry["seq"], "last_sha256": hashlib.sha256(last_line).hexdigest()}
        self._replace_head(head)
        return head, [f"moved the head on to entry {entry['seq']}, written just before its head write failed"]


def _tail_of(path: Path) -> tuple[int, bytes]:
    """The end of a file, from far enough back to hold its last two newlines (or from its start): its offset and
    bytes. Appends read only this, never a whole 10 MiB file."""
    with open(path, "rb") as handle:
        end = handle.seek(0, os.SEEK_END)
        window = 65536
        while True:
            start = max(0, end - window)
            handle.seek(start)
            data = handle.read(end - start)
            if start == 0 or data.count(b"\n") >= 2:
                return start, data
            window *= 4


def _line_count(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(2**20), b""))


def _mac(key: bytes, content: dict) -> str:
    return hmac.new(key, _canonical(content), hashlib.sha256).hexdigest()


def _read_head(text: str, key: bytes) -> dict:
    if not text.strip():
        return {"seq": 0, "last_sha256": GENESIS}
    head = json.loads(text)
    if not hmac.compare_digest(_mac(key, {k: v for k, v in head.items() if k != "hmac"}), head.get("hmac", "")):
        raise ValueError("audit head file fails its HMAC: the log was tampered with; run 'privacy-vision audit verify'")
    return head


TORN_WRITE_EVENT = "audit_torn_write_recovered"
_ENTRY_START = b'{"data":'  # every canonical entry starts so (sorted keys): a torn write is a prefix of one


@dataclass(frozen=True)
class TornWrite:
    """A write cut short: the first bytes of an entry, at the end of a file or (written before the recovery existed)
    in front of the next entry on the same line."""

    file: str
    line: int
    length: int
    fragment: bytes
    inline: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.fragment).hexdigest()

    def as_data(self) -> dict:
        return {"file": self.file, "line": self.line, "bytes": self.length, "sha256": self.sha256}

    def __str__(self) -> str:
        place = "in front of the entry on" if self.inline else "after the last entry, on"
        return f"a torn write of {self.length} bytes {place} {self.file}:{self.line}"


def _is_torn(fragment: bytes) -> bool:
    return fragment.startswith(_ENTRY_START) or _ENTRY_START.startswith(fragment)


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of checking an audit log: entries read, the first broken one if any, writes cut short."""

    ok: bool
    entries: int
    files: int
    first_broken: str  # "file:line: reason", empty when ok
    torn_writes: tuple[TornWrite, ...] = ()
    head_behind: bool = False  # the last entry is intact but its head write failed: the next append moves the head

    def __str__(self) -> str:
        if not self.ok:
            return f"audit log BROKEN at {self.first_broken} ({self.entries} entries verified before it)"
        notes = [f"{torn} (not an edit: every entry verifies)" for torn in self.torn_writes]
        if self.head_behind:
            notes.append("the last entry was written but its head was not (a write cut short); every entry verifies")
        text = f"audit log OK: {self.entries} entries in {self.files} file(s), chain and MACs intact"
        return "; ".join([text, *notes])


class AuditBroken(RuntimeError):
    """The audit log fails verification, so what it records cannot be relied on."""


def verify(directory: str | Path, key: bytes) -> VerifyResult:
    """Walk every file in order; report the first entry whose MAC, chain link or sequence is wrong."""
    return _walk(directory, key, set())[0]


def entries_of(log: AuditLog, events: set[str]) -> list[dict]:
    """The entries of these event types (each with its seq, ts, source and data), oldest first, from a log that
    verifies (an empty or missing log has none); AuditBroken otherwise. One pass: verified as they are read."""
    if not log.files():
        return []
    result, entries = _walk(log.directory, log._key, events)
    if not result.ok:
        raise AuditBroken(f"the audit log cannot be relied on: {result}; run 'privacy-vision audit verify'")
    return entries


def _walk(directory: str | Path, key: bytes, events: set[str]) -> tuple[VerifyResult, list[dict]]:
    """verify(), keeping the entries of these event types."""
    files = AuditLog(directory, key).files()
    head_path = Path(directory) / "audit.head"
    previous, before_last, expected_seq, count = GENESIS, GENESIS, 1, 0
    torn: list[TornWrite] = []
    kept: list[dict] = []

    def broken(reason: str) -> tuple[VerifyResult, list[dict]]:
        return VerifyResult(False, count, len(files), reason, tuple(torn)), []

    for path in files:
        lines = path.read_bytes().split(b"\n")
        tail = lines.pop()  # the bytes after the last newline: empty unless a write was cut short
        for number, raw in enumerate(lines, start=1):
            if not raw:
                continue
            where = f"{path.name}:{number}"
            entry, reason = _check_entry(raw, key, previous, expected_seq)
            if reason and raw.startswith(_ENTRY_START) and (cut := raw.rfind(_ENTRY_START)) > 0:
                fragment, rest = raw[:cut], raw[cut:]
                later, later_reason = _check_entry(rest, key, previous, expected_seq)
                if not later_reason:  # an intact entry written after a torn one, before this recovery existed
                    torn.append(TornWrite(path.name, number, len(fragment), fragment, inline=True))
                    entry, reason, raw = later, "", rest
            if reason:
                return broken(f"{where}: {reason}")
            if entry.get("event") in events:
                kept.append(entry)
            before_last, previous = previous, hashlib.sha256(raw).hexdigest()
            expected_seq += 1
            count += 1
        if tail:
            if path != files[-1] or not _is_torn(tail):
                return broken(f"{path.name}:{len(lines) + 1}: not a valid entry")
            torn.append(TornWrite(path.name, len(lines) + 1, len(tail), tail, inline=False))
    try:
        head = _read_head(head_path.read_text() if head_path.exists() else "", key)
    except ValueError as error:
        return broken(f"audit.head: {error}")
    if count == 0:
        return broken(
            "no entries: the log is missing or empty, yet every node writes its "
            "start configuration (deleted, or the wrong --dir?)"
        )
    head_behind = head["seq"] == count - 1 and head["last_sha256"] == before_last
    if not head_behind and (head["seq"] != count or head["last_sha256"] != previous):
        return broken(
            f"end of log: the head names entry {head['seq']} but the log ends at {count} (entries cut off the end)"
        )
    return VerifyResult(True, count, len(files), "", tuple(torn), head_behind), kept


def _check_entry(raw: bytes, key: bytes, previous: str, expected_seq: int) -> tuple[dict, str]:
    """The entry on one line and, when it is not the valid next entry of the chain, why not."""
    try:
        entry = json.loads(raw)
        mac = entry.pop("hmac")
    except (ValueError, KeyError, AttributeError):
        return {}, "not a valid entry"
    if not hmac.compare_digest(_mac(key, entry), str(mac)):
        return entry, "HMAC mismatch (entry edited or forged)"
    if entry.get("prev_sha256") != previous:
        return entry, "chain broken (an entry before it was removed, edited or reordered)"
    if entry.get("seq") != expected_seq:
        return entry, f"sequence {entry.get('seq')} where {expected_seq} was expected"
    return entry, ""
