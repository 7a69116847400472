"""Compliance commands for machines without the ROS CLI: audit verification, DPIA, data-subject
requests and forget, talking to the running graph over its ROS services where it is running."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import time
import uuid
from pathlib import Path

import yaml

from privacy_vision.core.audit import AuditBroken, AuditLog, entries_of, verify
from privacy_vision.core.compliance import build_dpia, dpia_json, render_markdown, system_facts
from privacy_vision.core.graph import REQUEST_NODES, parse_overrides, state_paths
from privacy_vision.core.protocol import KeyFileError, load_key_file
from privacy_vision.core.recordings import dpia_recordings


def _config_parameters(config_dir: Path, overrides: dict[str, dict[str, str]]) -> dict[str, dict]:
    data = yaml.safe_load((config_dir / "params.yaml").read_text())
    params = {node: dict(body["ros__parameters"]) for node, body in data.items()}
    for node, values in overrides.items():
        params.setdefault(node, {}).update({k: yaml.safe_load(v) for k, v in values.items()})
    return params


def cmd_audit_verify(args: argparse.Namespace) -> int:
    try:
        key = load_key_file(args.key)
    except KeyFileError as error:
        print(f"audit verify: {error}", file=sys.stderr)
        return 2
    if not Path(args.dir).is_dir():
        print(f"audit verify: {args.dir} is not a folder", file=sys.stderr)
        return 2
    try:
        recovered = AuditLog(args.dir, key).recover()  # a write cut short (full disk, crash), never an edit
    except (OSError, ValueError) as error:
        recovered = [f"nothing recovered: {error}"]
    for line in recovered:
        print(f"audit verify: {line}")
    result = verify(args.dir, key)
    print(result)
    return 0 if result.ok else 1


def cmd_dpia(args: argparse.Namespace) -> int:
    config_dir = Path(args.config_dir)
    if args.domain_id is not None:
        from privacy_vision.graph_client import (
            GraphClient,  # ROS only where the graph is asked: offline commands run without it
        )
        from privacy_vision_msgs.srv import GenerateDpia

        client = GraphClient(args.domain_id, config_dir)
        try:
            answer = client.call(GenerateDpia, "/aggregator/generate_dpia", GenerateDpia.Request(format=args.format))
        finally:
            client.close()
        if answer is None or not answer.success:
            print(
                f"dpia: the running graph on ROS_DOMAIN_ID={args.domain_id} did not answer "
                f"({answer.message if answer else 'no /aggregator/generate_dpia service'})",
                file=sys.stderr,
            )
            return 2
        if answer.message != "complete":
            print(f"dpia: warning: {answer.message}", file=sys.stderr)
        document = answer.document
    else:
        try:
            params = _config_parameters(config_dir, parse_overrides(args.set, config_dir / "params.yaml"))
        except ValueError as error:
            raise SystemExit(str(error)) from None
        pins_file = state_paths(args.var_dir)["pki"] / "pins.txt"
        if not any(params["uplink"].get("pins", [])) and pins_file.is_file():
            params["uplink"]["pins"] = pins_file.read_text().split()  # what the run command configures
        environment = {
            "ROS_AUTOMATIC_DISCOVERY_RANGE": args.discovery_range,
            "FASTDDS_DEFAULT_PROFILES_FILE": str(config_dir / "fastdds.xml")
            if args.discovery_range == "LOCALHOST"
            else "",
        }
        facts = system_facts(
            environment,
            {},
            float(params["uplink"].get("ingest_retention_days", 90.0)),
            "config files",
            dpia_recordings(state_paths(args.var_dir)["audit"]),
        )
        dpia = build_dpia(params, facts)
        document = render_markdown(dpia) if args.format == "markdown" else dpia_json(dpia)
    if args.out:
        Path(args.out).write_text(document)
        print(f"DPIA written to {args.out}")
    else:
        print(document)
    return 0


def _on_disk_facts(var_dir: Path) -> dict:
    """Stores on this device and what they hold; none of them is per person."""
    facts: dict = {}
    stores = state_paths(var_dir)
    releases = stores["releases"]
    if releases.exists():
        with sqlite3.connect(str(releases)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            facts["release_store"] = {
                "queued_releases": db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] if "outbox" in tables else 0,
                "released_spans": db.execute("SELECT COUNT(*) FROM released").fetchone()[0]
                if "released" in tables
                else 0,
                "content": "DP releases waiting for the ingest, the keys of released spans and the ledger's charges "
                "(no per-person data)",
            }
    ingest = stores["ingest"]
    if ingest.exists():
        with sqlite3.connect(str(ingest)) as db:
            facts["ingest_store"] = {
                "releases": db.execute("SELECT COUNT(*) FROM releases").fetchone()[0],
                "content": "released differentially private aggregates (no per-person data)",
            }
    facts["audit_log"] = {"content": "events and settings; refuses boxes, positions, IDs and pixels by construction"}
    return facts


def cmd_releases_restore(args: argparse.Namespace) -> int:
    """Rebuild a deleted, emptied or edited release store's spans and charges from the audit log (audited)."""
    from privacy_vision.core.release.store import AUDIT_CHARGE_EVENT, AUDIT_RELEASE_EVENT, ReleaseStore

    try:
        audit = AuditLog.from_key_file(args.audit_dir, args.audit_key)
        entries = entries_of(audit, {AUDIT_RELEASE_EVENT, AUDIT_CHARGE_EVENT})
    except (KeyFileError, AuditBroken) as error:
        print(f"releases restore: {error}", file=sys.stderr)
        return 2
    store = ReleaseStore(args.store, daily_epsilon_cap=float("inf"))
    try:
        spans, charges = store.restore_from_audit(entries)
        store.check_against_audit(entries)
    finally:
        store.close()
    audit.append("release_store_restored", "cli", store=str(args.store), spans=spans, charges=charges)
    print(
        f"restored {spans} released span(s) and {charges} charge(s) into {args.store} from the audit log; releases "
        "that had not reached the ingest are not restored (their values were only in the lost store)"
    )
    return 0


NOT_ERASABLE = (
    "Released aggregates (device release store, ingest store) are differentially private values per zone and period "
    "(people present on average, footfall per stitched track); no record in them refers to a person, so there is "
    "nothing to single out and erase (GDPR Art. 11 and Recital 26). The audit log holds no personal data."
)


def cmd_dsr(args: argparse.Namespace) -> int:
    from privacy_vision.graph_client import (
        GraphClient,  # ROS only where the graph is asked: offline commands run without it
    )
    from privacy_vision_msgs.srv import DataSubjectRequest

    request_id = args.request_id or f"dsr-{uuid.uuid4().hex[:12]}"
    client = GraphClient(args.domain_id, Path(args.config_dir))
    components: dict = {}
    try:
        for node in REQUEST_NODES:
            answer = client.call(
                DataSubjectRequest,
                f"/{node}/data_subject_request",
                DataSubjectRequest.Request(request_id=request_id, request_type=args.type),
            )
            components[node] = (
                json.loads(answer.response_json)
                if answer and answer.success
                else {"status": "not running (holds no state while stopped: per-person data lives only in memory)"}
            )
    finally:
        client.close()
    response = {
        "request_id": request_id,
        "request_type": args.type,
        "answered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "identification": "the system keeps no appearance features and cannot recognise a person; the answer covers "
        "all per-person data held at this moment, whoever it belongs to",
        "live_state": components,
        "stores": _on_disk_facts(Path(args.var_dir)),
        "sent_off_device": "only the releases of /zone_analytics (differentially private aggregates) to the configured ingest",
    }
    if args.type == "erasure":
        response["not_erasable"] = NOT_ERASABLE
    try:
        audit = AuditLog.from_key_file(state_paths(args.var_dir)["audit"], args.audit_key)
        audit.append(
            "data_subject_request",
            "cli",
            request_id=request_id,
            request_type=args.type,
            components_answering=sorted(n for n, c in components.items() if "status" not in c),
        )
    except KeyFileError as error:
        print(f"dsr: warning: not audit-logged: {error}", file=sys.stderr)
    print(json.dumps(response, indent=2, default=str))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from privacy_vision.graph_client import (
        GraphClient,  # ROS only where the graph is asked: offline commands run without it
    )
    from privacy_vision_msgs.srv import Forget

    client = GraphClient(args.domain_id, Path(args.config_dir))
    try:
        results = {
            node: client.call(Forget, f"/{node}/forget", Forget.Request(reason=args.reason)) for node in REQUEST_NODES
        }
    finally:
        client.close()
    for node, result in results.items():
        print(f"{node}: {result.message if result else 'not running'}")
    return 0 if all(results.values()) else 1


def add_commands(sub) -> None:
    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify_parser = audit_sub.add_parser(
        "verify",
        help="recover writes cut short (a torn last line, recorded in the log), then check the chain and MACs; "
        "report the first broken entry",
    )
    verify_parser.add_argument("--dir", default="var/audit")
    verify_parser.add_argument("--key", default="var/pki/audit.key")
    verify_parser.set_defaults(handler=cmd_audit_verify)

    dpia = sub.add_parser("dpia", help="Data Protection Impact Assessment from the live graph or the config files")
    dpia.add_argument("--domain-id", type=int, help="ask the running graph on this ROS_DOMAIN_ID (live values)")
    dpia.add_argument("--format", choices=("markdown", "json"), default="markdown")
    dpia.add_argument("--out", help="write to this file instead of standard output")
    dpia.add_argument("--config-dir", default="config")
    dpia.add_argument("--var-dir", default="var", help="offline: where the run command keeps keys and pins")
    dpia.add_argument(
        "--set", action="append", default=[], metavar="NODE.PARAM=VALUE", help="offline: override a parameter"
    )
    dpia.add_argument(
        "--discovery-range", default="LOCALHOST", help="offline: the ROS_AUTOMATIC_DISCOVERY_RANGE deployed"
    )
    dpia.set_defaults(handler=cmd_dpia)

    dsr = sub.add_parser(
        "dsr", help="answer a data-subject request (GDPR Art. 15/17, CCPA know/delete) from the live state"
    )
    dsr.add_argument("--type", choices=("access", "erasure"), required=True)
    dsr.add_argument("--request-id", help="your reference (default: generated)")
    dsr.add_argument("--domain-id", type=int, required=True, help="ROS_DOMAIN_ID of the running graph")
    dsr.add_argument("--var-dir", default="var")
    dsr.add_argument("--config-dir", default="config")
    dsr.add_argument("--audit-key", default="var/pki/audit.key")
    dsr.set_defaults(handler=cmd_dsr)

    releases = sub.add_parser("releases", help="release store tools")
    releases_sub = releases.add_subparsers(dest="releases_command", required=True)
    restore = releases_sub.add_parser(
        "restore", help="rebuild the release store's released spans and ledger charges from the audit log"
    )
    restore.add_argument("--store", default="var/releases.sqlite")
    restore.add_argument("--audit-dir", default="var/audit")
    restore.add_argument("--audit-key", default="var/pki/audit.key")
    restore.set_defaults(handler=cmd_releases_restore)

    forget = sub.add_parser("forget", help="rotate the privacy key and purge per-person state in every node now")
    forget.add_argument("--domain-id", type=int, required=True)
    forget.add_argument("--reason", default="operator request")
    forget.add_argument("--config-dir", default="config")
    forget.set_defaults(handler=cmd_forget)
