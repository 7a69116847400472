"""Recordings of the graph's topics for ROS tools (no rclpy): which topics may be recorded or viewed (from the graph
description, core/graph.py), their ROS 2 message definitions as MCAP `ros2msg` schemas, an MCAP writer of the raw
CDR bytes as they came off DDS (the `mcap` library; readable by Foxglove, rosbag2 and mcap-ros2-support), and the
recordings' register in the audit log with their retention.

Pixels, boxes, tracks and true totals are refused under any name (by topic and by message type); per-person topics
(anonymised tracks) only when asked for explicitly, with an audit entry and a retention limit after which
`purge_expired` deletes the file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from mcap.well_known import MessageEncoding, SchemaEncoding
from mcap.writer import CompressionType, Writer
from rosidl_adapter.parser import parse_message_file

from privacy_vision.core.graph import RECORD_PER_PERSON, TOPICS, TopicSpec, never_recorded_types, recordable

RECORDING_STARTED, RECORDING_FINISHED, RECORDING_DELETED = (
    "recording_started",
    "recording_finished",
    "recording_deleted",
)
MAX_PER_PERSON_RETENTION_H = 7 * 24.0  # a per-person recording is kept at most a week
DEFAULT_PER_PERSON_RETENTION_H = 24.0
SCHEMA_SEPARATOR = "=" * 80


class RecordingRefused(ValueError):
    """A topic or type that may not be recorded or viewed; the message says why."""


def select_topics(requested: list[str], per_person: bool) -> tuple[TopicSpec, ...]:
    """The topics to record: the default set when none is named; each named one must be recordable, and a per-person
    one needs `per_person`. Anything else is refused with the reason (nothing is recorded then)."""
    allowed = {topic.name: topic for topic in recordable(per_person=True)}
    if not requested:
        return recordable(per_person)
    described = {topic.name: topic for topic in TOPICS}
    chosen = []
    for name in dict.fromkeys("/" + n.lstrip("/") for n in requested):
        topic = allowed.get(name)
        if topic is None:
            why = described[name].carries if name in described else "not a topic of the privacy_vision graph"
            raise RecordingRefused(f"{name} is never recorded: {why}")
        if topic.recording == RECORD_PER_PERSON and not per_person:
            raise RecordingRefused(f"{name} holds per-person records: record it only with --per-person (audit-logged)")
        chosen.append(topic)
    return tuple(chosen)


def check_type(topic: str, type_name: str) -> None:
    """Refuses a topic whose live type is one that is never recorded (pixels, boxes, tracks, true totals), whatever
    its name (a remapped topic), and a type other than the graph description's."""
    if type_name in never_recorded_types() or type_name.startswith("sensor_msgs/msg/"):
        raise RecordingRefused(f"{topic} carries {type_name}, which is never recorded")
    expected = {t.name: t.type for t in recordable(per_person=True)}.get(topic)
    if expected is not None and type_name != expected:
        raise RecordingRefused(f"{topic} carries {type_name}, not {expected} as the graph describes it")


def ros2msg_schema(type_name: str, share_dirs: list[Path]) -> str:
    """The message definition of `type_name` (pkg/msg/Type) with every nested type after it, in the concatenated
    `ros2msg` form that rosbag2 writes into MCAP and Foxglove reads. The .msg files come from the ROS prefixes'
    share/ folders; rosidl_adapter (the rosidl parser) finds the nested types."""
    texts: dict[str, str] = {}
    pending = [type_name]
    while pending:
        name = pending.pop(0)
        if name in texts:
            continue
        package, _, message = name.split("/")
        path = _msg_file(package, message, share_dirs)
        texts[name] = path.read_text()
        spec = parse_message_file(package, str(path))
        for field in spec.fields:
            if not field.type.is_primitive_type():
                pending.append(f"{field.type.pkg_name}/msg/{field.type.type}")
    main, *nested = texts
    parts = [texts[main].rstrip("\n")]
    parts += [
        f"{SCHEMA_SEPARATOR}\nMSG: {name.replace('/msg/', '/')}\n{texts[name].rstrip(chr(10))}" for name in nested
    ]
    return "\n".join(parts) + "\n"


def _msg_file(package: str, message: str, share_dirs: list[Path]) -> Path:
    for share in share_dirs:
        path = Path(share) / package / "msg" / f"{message}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no definition of {package}/msg/{message} under {[str(s) for s in share_dirs]}")


class McapRecording:
    """An MCAP file of raw CDR messages with ros2msg schemas, one channel per topic (the rosbag2 layout)."""

    def __init__(self, path: Path, metadata: dict[str, str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by finish()
        self._writer = Writer(self._file, compression=CompressionType.ZSTD)
        self._writer.start(profile="ros2", library="privacy_vision record")
        self._writer.add_metadata("privacy_vision", metadata)
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def add_topic(self, topic: str, type_name: str, schema_text: str) -> None:
        schema = self._writer.register_schema(type_name, SchemaEncoding.ROS2, schema_text.encode())
        self._channels[topic] = self._writer.register_channel(topic, MessageEncoding.CDR, schema, {})
        self.counts[topic] = 0

    def write(self, topic: str, cdr: bytes, log_time_ns: int) -> None:
        """One message as received (its CDR bytes); the receive time stands for the publish time, as ros2 bag does."""
        self._writer.add_message(
            self._channels[topic],
            log_time=log_time_ns,
            data=cdr,
            publish_time=log_time_ns,
            sequence=self.counts[topic],
        )
        self.counts[topic] += 1

    def finish(self) -> None:
        self._writer.finish()
        self._file.close()


@dataclass(frozen=True)
class RecordingEntry:
    """A recording as the audit log knows it."""

    path: str
    topics: tuple[str, ...]
    per_person: bool
    started_at: float
    expires_at: float | None  # None: no retention limit (nothing per person in it)
    messages: int | None  # None while it is being written (or the recorder died)
    deleted: bool


def read_audit_entries(audit_dir: Path) -> list[dict]:
    """The audit log's entries in order (no MAC check: `privacy-vision audit verify` does that)."""
    entries = []
    for path in sorted(Path(audit_dir).glob("audit-*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                entries.append(json.loads(line))
    return entries


def recordings(audit_dir: Path) -> list[RecordingEntry]:
    """Every recording the audit log registered, with what it holds, its retention and whether it was deleted."""
    found: dict[str, dict] = {}
    for entry in read_audit_entries(audit_dir):
        data = entry.get("data", {})
        if entry.get("event") == RECORDING_STARTED:
            found[data["file"]] = {**data, "started_at": entry["ts"], "messages": None, "deleted": False}
        elif entry.get("event") == RECORDING_FINISHED and data.get("file") in found:
            found[data["file"]]["messages"] = data.get("messages")
        elif entry.get("event") == RECORDING_DELETED and data.get("file") in found:
            found[data["file"]]["deleted"] = True
    return [
        RecordingEntry(
            path=file,
            topics=tuple(item.get("topics", ())),
            per_person=bool(item.get("per_person")),
            started_at=float(item["started_at"]),
            expires_at=item.get("expires_at"),
            messages=item["messages"],
            deleted=item["deleted"],
        )
        for file, item in found.items()
    ]


def purge_expired(audit_dir: Path, append_audit, now: float | None = None) -> list[str]:
    """Deletes every registered recording past its retention limit (and audit-logs each deletion); returns the files."""
    now = time.time() if now is None else now
    deleted = []
    for entry in recordings(audit_dir):
        if entry.deleted or entry.expires_at is None or entry.expires_at > now:
            continue
        Path(entry.path).unlink(missing_ok=True)
        append_audit(RECORDING_DELETED, file=entry.path, reason="retention limit reached")
        deleted.append(entry.path)
    return deleted


def dpia_recordings(audit_dir: Path | None, now: float | None = None) -> list[dict]:
    """The recordings on this device for the DPIA: what each holds, until when it is kept, whether it still exists."""
    if audit_dir is None or not Path(audit_dir).is_dir():
        return []
    now = time.time() if now is None else now
    return [
        {
            "file": entry.path,
            "topics": list(entry.topics),
            "per_person": entry.per_person,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.started_at)),
            "kept_until": "no limit (no per-person data)"
            if entry.expires_at is None
            else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.expires_at)),
            "messages": entry.messages,
            "on_disk": Path(entry.path).exists(),
            "overdue": entry.expires_at is not None and entry.expires_at <= now and Path(entry.path).exists(),
        }
        for entry in recordings(audit_dir)
        if not entry.deleted
    ]
