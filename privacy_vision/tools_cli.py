"""`privacy-vision record` (an MCAP recorder) and `privacy-vision foxglove` (a live Foxglove view): the ROS user's
own tools, limited to what may be recorded (core/graph.py's recording policy). Both join a running graph by its
ROS_DOMAIN_ID; record registers every recording in the audit log (the DPIA lists them) and deletes per-person ones
once their retention limit has passed."""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
import threading
import time
from pathlib import Path

from privacy_vision.core.audit import AuditLog
from privacy_vision.core.graph import RECORD_PER_PERSON, state_paths
from privacy_vision.core.protocol import KeyFileError
from privacy_vision.core.recordings import (
    DEFAULT_PER_PERSON_RETENTION_H,
    MAX_PER_PERSON_RETENTION_H,
    RECORDING_FINISHED,
    RECORDING_STARTED,
    McapRecording,
    RecordingRefused,
    purge_expired,
    select_topics,
)

PROGRESS_EVERY_S = 5.0


def _domain(args: argparse.Namespace) -> int:
    return args.domain_id if args.domain_id is not None else int(os.environ.get("ROS_DOMAIN_ID", "0"))


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _audit(args: argparse.Namespace, command: str) -> AuditLog:
    state = state_paths(args.var_dir)
    try:
        return AuditLog.from_key_file(state["audit"], args.audit_key or state["pki"] / "audit.key")
    except KeyFileError as error:
        raise SystemExit(
            f"{command}: the audit log is needed to register what is taken from the graph: {error}"
        ) from None


def _topics(args: argparse.Namespace, command: str):
    try:
        return select_topics(args.topic, args.per_person)
    except RecordingRefused as error:
        raise SystemExit(f"{command}: refused: {error}") from None


def cmd_record(args: argparse.Namespace) -> int:
    from privacy_vision.tap import GraphTap  # loads rclpy: only when the graph is joined

    topics = _topics(args, "record")
    per_person = any(topic.recording == RECORD_PER_PERSON for topic in topics)
    if per_person and not 0 < args.retention_hours <= MAX_PER_PERSON_RETENTION_H:
        raise SystemExit(
            f"record: --retention-hours must be in (0, {MAX_PER_PERSON_RETENTION_H:g}] for per-person topics"
        )
    audit = _audit(args, "record")
    for file in purge_expired(audit.directory, lambda event, **data: audit.append(event, "record", **data)):
        print(f"record: deleted {file} (its retention limit has passed)")
    out = Path(args.out or f"{args.var_dir}/recordings/privacy_vision-{time.strftime('%Y%m%dT%H%M%S')}.mcap").resolve()
    if out.exists():
        raise SystemExit(f"record: {out} exists; choose another --out")
    names = [topic.name for topic in topics]
    expires_at = time.time() + args.retention_hours * 3600.0 if per_person else None
    stop = _stop_event()
    recording = McapRecording(out, {"topics": ",".join(names), "per_person": str(per_person).lower()})
    try:
        tap = GraphTap(_domain(args), Path(args.config_dir), topics, recording.write, "privacy_vision_recorder")
    except RecordingRefused as error:
        recording.finish()
        out.unlink()
        raise SystemExit(f"record: refused: {error}") from None
    for topic in topics:
        recording.add_topic(topic.name, topic.type, tap.schemas[topic.name])
    audit.append(RECORDING_STARTED, "record", file=str(out), topics=names, per_person=per_person, expires_at=expires_at)
    print(
        f"record: {out}: {', '.join(names)}"
        + (f" (per-person: deleted after {args.retention_hours:g} h)" if per_person else "")
    )
    started = last = time.monotonic()
    try:
        while not stop.is_set() and not (args.duration and time.monotonic() - started >= args.duration):
            tap.spin_for(0.2)
            if time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                tap.check_live_types()
                print("record: " + ", ".join(f"{t} {n}" for t, n in recording.counts.items()), flush=True)
    except RecordingRefused as error:
        print(f"record: stopped: {error}", file=sys.stderr)
        return 2
    finally:
        tap.close()
        recording.finish()
        total = sum(recording.counts.values())
        audit.append(RECORDING_FINISHED, "record", file=str(out), messages=total, counts=recording.counts)
    print(f"record: wrote {out}: " + ", ".join(f"{t} {n} messages" for t, n in recording.counts.items()))
    return 0


def cmd_foxglove(args: argparse.Namespace) -> int:
    import foxglove

    from privacy_vision.tap import GraphTap

    topics = _topics(args, "foxglove")
    if not ipaddress.ip_address(args.host).is_loopback:
        print(f"foxglove: warning: serving on {args.host}: other hosts can connect to this view", file=sys.stderr)
    per_person = any(topic.recording == RECORD_PER_PERSON for topic in topics)
    audit = _audit(args, "foxglove")
    channels: dict[str, foxglove.Channel] = {}
    tap = None
    try:
        tap = GraphTap(
            _domain(args),
            Path(args.config_dir),
            topics,
            lambda topic, data, stamp: channels[topic].log(data, log_time=stamp) if topic in channels else None,
            "privacy_vision_foxglove",
        )
    except RecordingRefused as error:
        raise SystemExit(f"foxglove: refused: {error}") from None
    for topic in topics:
        schema = foxglove.Schema(name=topic.type, encoding="ros2msg", data=tap.schemas[topic.name].encode())
        channels[topic.name] = foxglove.Channel(topic.name, schema=schema, message_encoding="cdr")
    server = foxglove.start_server(name="privacy_vision", host=args.host, port=args.port)
    audit.append(
        "viewer_started", "foxglove", host=args.host, port=server.port, topics=list(channels), per_person=per_person
    )
    print(f"foxglove: serving {', '.join(channels)} on ws://{args.host}:{server.port} (Ctrl-C stops)", flush=True)
    stop = _stop_event()
    try:
        while not stop.is_set():
            tap.spin_for(0.2)
    finally:
        server.stop()
        tap.close()
        audit.append("viewer_stopped", "foxglove", port=server.port)
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--domain-id", type=int, help="ROS_DOMAIN_ID of the running graph (default: $ROS_DOMAIN_ID or 0)"
    )
    parser.add_argument(
        "--topic", action="append", default=[], help="a topic to take (repeatable; default: all allowed)"
    )
    parser.add_argument(
        "--per-person",
        action="store_true",
        help="also the per-person topic /anonymized_tracks (audit-logged; record: deleted after --retention-hours)",
    )
    parser.add_argument("--config-dir", default="config", help="folder with fastdds.xml (the graph's DDS settings)")
    parser.add_argument("--var-dir", default="var", help="state folder: audit log and keys")
    parser.add_argument("--audit-key", help="audit key file (default: VAR_DIR/pki/audit.key)")


def add_commands(sub) -> None:
    record = sub.add_parser(
        "record",
        help="record what may leave the device or holds no per-person data (/zone_analytics, /diagnostics, /tf_static) "
        "to MCAP (Foxglove, rosbag2); "
        "pixels, detections, tracks and true totals are refused",
    )
    _common(record)
    record.add_argument("--out", help="MCAP file to write (default: VAR_DIR/recordings/privacy_vision-TIME.mcap)")
    record.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: at Ctrl-C)")
    record.add_argument(
        "--retention-hours",
        type=float,
        default=DEFAULT_PER_PERSON_RETENTION_H,
        help=f"per-person recordings are deleted after this (at most {MAX_PER_PERSON_RETENTION_H:g} h) by the next "
        "record command",
    )
    record.set_defaults(handler=cmd_record)

    view = sub.add_parser("foxglove", help="a live Foxglove view of the same allowed topics (WebSocket, loopback)")
    _common(view)
    view.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    view.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    view.set_defaults(handler=cmd_foxglove)
