"""DPIA, Art. 30 record and data-subject answers, generated from the configuration actually in force.

Nothing here is boilerplate about "k ≥ 5" or "ε = 1": every statement is computed from the parameters
passed in (live values from the running nodes, or the config files when the graph is not running).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from privacy_vision.core.aggregator import (
    HOUR_METRICS,
    MECHANISM,
    PRIVACY_UNIT,
    STRICT_MECHANISM,
    AggregatorSettings,
    Bounds,
    StrictAccount,
    TrackDayAccount,
)
from privacy_vision.core.contributions import GROUP_TIER, TIERS, ContributionSettings
from privacy_vision.core.graph import IMAGE_TOPIC, TOPICS, leaves_device
from privacy_vision.core.graph import topics as graph_topics

# Tracks per annotated person (V) with the real tracker (default thresholds; IoU ≥ 0.5 matching to the ground truth,
# mean over matched people), measured 2026-11-25: PETS on vtest.avi with the SSD TFLite detector, and the five MOT15
# training sequences with their public detections (mean over 115 people; ADL-Rundle-6 alone 3.68). A person whose
# track breaks into V pieces gets V times the per-track-day guarantee. Re-measure on your own scene.
# bench/tracks_per_person.py: mean tracks per annotated person (IoU ≥ 0.5) with the default detector and tracker
MEASURED_TRACKS_PER_PERSON = {
    "PETS09-S2L1 (vtest.avi, YOLOX-nano + tracker)": 2.05,
    "MOT15 five sequences (public detections + tracker)": 2.10,
}

# What each topic carries and whether it leaves the device: the graph description (core/graph.py).
TOPIC_CONTENT = {topic.name: topic.carries for topic in TOPICS}
LEAVES_DEVICE = leaves_device()


@dataclass(frozen=True)
class RiskFlag:
    """A setting the DPIA flags as weak, with the reason."""

    setting: str
    value: object
    reason: str
    severity: str = "high"


@dataclass
class SystemFacts:
    """What the DPIA needs besides node parameters."""

    discovery_range: str  # ROS_AUTOMATIC_DISCOVERY_RANGE in force
    dds_profile_localhost: bool  # the Fast DDS profile binds UDP to 127.0.0.1
    topics: dict[str, list[str]] = field(default_factory=dict)  # live topic -> types (empty when offline)
    ingest_retention_days: float = 90.0
    source: str = "config"  # "live" or "config"
    recordings: list[dict] = field(default_factory=list)  # MCAP recordings on this device (core/recordings.py)


def system_facts(
    environment: dict[str, str],
    topics: dict[str, list[str]],
    ingest_retention_days: float,
    source: str,
    recordings: list[dict] | None = None,
) -> SystemFacts:
    """Discovery range and DDS profile as the environment sets them for the nodes."""
    profile = Path(environment.get("FASTDDS_DEFAULT_PROFILES_FILE", ""))
    localhost = profile.is_file() and "<address>127.0.0.1</address>" in profile.read_text()
    return SystemFacts(
        discovery_range=environment.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET (ROS default)"),
        dds_profile_localhost=localhost,
        topics=topics,
        ingest_retention_days=ingest_retention_days,
        source=source,
        recordings=recordings or [],
    )


def in_process_capture(params: dict[str, dict]) -> bool:
    """The detection node reads the source itself: no camera node and no image topic."""
    return params.get("detection", {}).get("capture", "topic") == "in_process"


def frames_statement(params: dict[str, dict]) -> str:
    retained = params.get("detection", {}).get("retention_frames", 0)
    if in_process_capture(params):
        return (
            "read from the source by the detection node in its own process (in-process capture): no image topic exists, "
            "frames never reach the middleware; every buffer that held a frame (decoded, resized, converted, letterboxed, "
            f"network input) is zeroed after inference; frames retained after inference: {retained}"
        )
    return (
        f"published by the camera node on {IMAGE_TOPIC}, a local topic that any process on this device can read; "
        "the camera zeroes its frame and message, the detection node every copy it makes, after inference; "
        f"frames retained after inference: {retained}"
    )


def risk_flags(params: dict[str, dict], facts: SystemFacts) -> list[RiskFlag]:
    aggregator, anonymizer = params.get("aggregator", {}), params.get("anonymizer", {})
    detection, uplink = params.get("detection", {}), params.get("uplink", {})
    flags: list[RiskFlag] = []
    if aggregator.get("k", 0) < 5:
        flags.append(
            RiskFlag(
                "aggregator.k",
                aggregator.get("k"),
                "cells with fewer than 5 people (noisy) are shown; small groups are easier to single out",
            )
        )
    if aggregator.get("epsilon_per_track_day", 0) > 4:
        flags.append(
            RiskFlag(
                "aggregator.epsilon_per_track_day",
                aggregator.get("epsilon_per_track_day"),
                "more than ε = 4 for one track's whole day: the releases say much about any one person",
            )
        )
    if aggregator.get("daily_epsilon_cap", 0) > 3 * aggregator.get("epsilon_per_track_day", 1):
        flags.append(
            RiskFlag(
                "aggregator.daily_epsilon_cap",
                aggregator.get("daily_epsilon_cap"),
                "the cap allows more than three configurations a day: each change of the privacy settings adds its ε",
                "medium",
            )
        )
    if detection.get("retention_frames", 0) > 0:
        flags.append(
            RiskFlag(
                "detection.retention_frames",
                detection.get("retention_frames"),
                "frames are kept in memory after inference instead of being destroyed at once",
            )
        )
    if in_process_capture(params) and any("sensor_msgs/msg/Image" in types for types in facts.topics.values()):
        flags.append(
            RiskFlag(
                "detection.capture",
                "in_process",
                "an image topic exists although capture is in process: another process publishes frames on this device",
            )
        )
    if anonymizer.get("grid_size_m", 1) < 0.5:
        flags.append(
            RiskFlag(
                "anonymizer.grid_size_m",
                anonymizer.get("grid_size_m"),
                "positions finer than 0.5 m approach exact trajectories",
                "medium",
            )
        )
    if anonymizer.get("time_precision_s", 5) < 1:
        flags.append(
            RiskFlag(
                "anonymizer.time_precision_s",
                anonymizer.get("time_precision_s"),
                "timestamps finer than 1 s make records easier to link to other sources",
                "medium",
            )
        )
    if anonymizer.get("rotation_interval_s", 0) > 24 * 3600:
        flags.append(
            RiskFlag(
                "anonymizer.rotation_interval_s",
                anonymizer.get("rotation_interval_s"),
                "privacy IDs stay linkable for more than a day",
            )
        )
    if facts.discovery_range not in ("LOCALHOST", "OFF") and not facts.dds_profile_localhost:
        flags.append(
            RiskFlag(
                "ROS_AUTOMATIC_DISCOVERY_RANGE",
                facts.discovery_range,
                "raw topics (camera, tracks) can be discovered and subscribed from other hosts",
            )
        )
    pins = [p for p in uplink.get("pins", []) if p]
    if len(pins) < 2:
        flags.append(
            RiskFlag(
                "uplink.pins",
                len(pins),
                "no backup pin: a server key rotation forces an unpinned or offline period",
                "medium",
            )
        )
    for recording in facts.recordings:
        if recording["per_person"] and recording["on_disk"]:
            flags.append(
                RiskFlag(
                    "recording",
                    recording["file"],
                    "a recording of per-person records (anonymised tracks) is on this device "
                    + (
                        "past its retention limit: run `privacy-vision record` or delete it"
                        if recording["overdue"]
                        else f"until {recording['kept_until']}"
                    ),
                    "high" if recording["overdue"] else "medium",
                )
            )
    if not str(uplink.get("ingest_url", "")).startswith("https://"):
        flags.append(RiskFlag("uplink.ingest_url", uplink.get("ingest_url"), "the ingest is not reached over HTTPS"))
    return flags


def build_dpia(params: dict[str, dict], facts: SystemFacts, now: dt.datetime | None = None) -> dict:
    now = now or dt.datetime.now(dt.UTC)
    aggregator, anonymizer = params.get("aggregator", {}), params.get("anonymizer", {})
    detection, uplink = params.get("detection", {}), params.get("uplink", {})
    account, settings, contribution = track_day_account(aggregator, anonymizer)
    epsilon = account.epsilon
    strict = strict_statement(settings, contribution)
    tracks_per_person = max(MEASURED_TRACKS_PER_PERSON.values())
    capture = "in_process" if in_process_capture(params) else "camera"
    topics = facts.topics or {topic.name: [topic.type] for topic in graph_topics(capture)}
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "configuration_source": facts.source,
        "processing": {
            "purpose": "anonymous spatial analytics (occupancy, flow direction, dwell time, entries/exits per zone)",
            "legal_basis_note": "to be confirmed by the controller (typically legitimate interest, Art. 6(1)(f) GDPR)",
            "data_categories_on_device": {
                "camera frames": frames_statement(params),
                "person boxes and tracks": f"in memory only; a lost track is dropped after {params.get('tracking', {}).get('track_buffer_s', '?')} s",
                "anonymised records": f"keyed HMAC IDs rotated every {anonymizer.get('rotation_interval_s')} s (and on request), "
                f"{anonymizer.get('grid_size_m')} m grid, timestamps floored to {anonymizer.get('time_precision_s')} s, "
                f"heading in {anonymizer.get('direction_sectors')} sectors, no speed",
                "per-track contribution state": "in the anonymizer's memory, keyed by tracker ID: the release cells each live track "
                f"counted in today (at most {'/'.join(map(str, contribution.cells_per_day))} per tier), its zone stays, "
                "the open cells' heading and dwell; dropped 60 s after the track ends; a forget request drops it "
                "and keeps only the IDs of the tracks live then, until midnight UTC, so they cannot count again",
                "aggregates": "per zone and period of each tier; only these leave the device",
            },
            "recipients": f"ingest at {uplink.get('ingest_url')}",
            "retention": {
                "device_outbox": "until acknowledged by the ingest",
                "ingest_releases_days": facts.ingest_retention_days,
                "privacy_ledger": "ε per track-day charged per configuration and day, no personal data",
            },
        },
        "privacy_guarantee": {
            "k_anonymity": strict["k_anonymity"]
            if strict
            else {
                "k": settings.k,
                "over": "distinct people per cell (zone x period)",
                "decision": "applied to the noisy occupancy as post-processing: a cell below k is shown as '< k' with every "
                "value withheld, and its people still count in the coarser tier; no decision looks at a true count, "
                "so it costs no δ",
            },
            "differential_privacy": strict["differential_privacy"]
            if strict
            else {
                "mechanism": MECHANISM,
                "privacy_unit": PRIVACY_UNIT,
                "delta": 0.0,
                "epsilon_per_track_day": round(epsilon, 6),
                "epsilon_per_cell": {tier: round(account.cells[tier].epsilon, 6) for tier in TIERS},
                "cells_per_track_per_day": dict(zip(TIERS, contribution.cells_per_day)),
                "hour_epsilon_by_metric": {
                    name: round(account.cells["hour"].epsilons[name], 6) for name in HOUR_METRICS
                },
                "window_s": contribution.window_s,
                "noise_library": "OpenDP (exact integer samplers; composition by its privacy maps)",
                "composition": "ε per track-day = Σ over tiers of L × ε per cell (OpenDP composition of the cell measurements)",
            },
            "daily_epsilon_cap": settings.daily_epsilon_cap,
            "ledger": "each configuration is charged its ε per track-day once per UTC day when it first releases; a change of the "
            "privacy settings or of the bound charges again; the cap bounds the day's total, so a normal day never runs out",
            "person_day": {
                "tracks_per_person_measured": MEASURED_TRACKS_PER_PERSON,
                "epsilon_per_person_day": round(
                    tracks_per_person
                    * (strict["differential_privacy"]["epsilon_per_track_day"] if strict else epsilon),
                    3,
                ),
                "note": f"a person whose track breaks into n pieces gets n × ε per track-day; the value here uses the largest measured "
                f"mean of tracks per person, V = {tracks_per_person:g} (people above the mean get more); a restart of the graph "
                "starts new tracks too",
            },
            "bias_of_the_bound": "a track counts in at most L cells per tier per day, the first ones it enters: people who stay longer "
            "or visit more zones (staff, long stays) are missing from later cells of that day",
            "overlapping_zones": "a person inside two overlapping zones counts in both (each cell counted against L)",
        },
        "data_flows": {
            "topics": {
                t: {"types": types, "content": TOPIC_CONTENT.get(t, ""), "leaves_device": t in LEAVES_DEVICE}
                for t, types in sorted(topics.items())
            },
            "leaves_device": LEAVES_DEVICE,
            "recordings": facts.recordings,
            "discovery_range": facts.discovery_range,
            "dds_udp_bound_to_loopback": facts.dds_profile_localhost,
            "uplink_pins_configured": len([p for p in uplink.get("pins", []) if p]),
        },
        "record_of_processing_art30": {
            "controller": "the operator of this device (fill in name and contact)",
            "purposes": "footfall, occupancy and flow statistics of premises",
            "categories_of_data_subjects": "people walking in the camera's field of view",
            "categories_of_personal_data": "images (transient, destroyed after detection); motion tracks (transient, on device)",
            "categories_of_recipients": "none for personal data; the analytics ingest receives only k-anonymous DP aggregates",
            "transfers_to_third_countries": "depends on where the ingest runs: " + str(uplink.get("ingest_url")),
            "time_limits_for_erasure": f"frames: immediately ({detection.get('retention_frames', 0)} retained); tracks: seconds; "
            f"aggregates: {facts.ingest_retention_days} days at the ingest",
            "security_measures": "TLS ≥ 1.2 with SPKI pinning, HMAC-signed requests with replay protection, "
            "host-only DDS discovery, tamper-evident audit log, per-person state only in memory",
        },
        "risks": [flag.__dict__ for flag in risk_flags(params, facts)],
    }


def strict_statement(settings: AggregatorSettings, contribution: ContributionSettings) -> dict | None:
    """Strict mode's guarantee for the DPIA (None in the default mode)."""
    if settings.mode != "strict":
        return None
    groups = contribution.groups_per_day
    k_anonymity = {
        "k": settings.k,
        "over": "distinct people of a released group (zone x its own period)",
        "decision": "strict mode: no grid cell is released; each zone's pending group is released only when a sparse-vector "
        "test on its noisy size passes and its true size is at least k (that hard rule is the δ)",
    }
    if groups < 1:
        return {
            "k_anonymity": k_anonymity,
            "differential_privacy": {
                "mechanism": STRICT_MECHANISM,
                "privacy_unit": PRIVACY_UNIT,
                "delta": 0.0,
                "epsilon_per_track_day": 0.0,
                "epsilon_per_cell": {},
                "cells_per_track_per_day": {GROUP_TIER: 0},
                "window_s": contribution.window_s,
                "noise_library": "OpenDP",
                "composition": "nothing is released: the anonymizer forms no groups (set its groups_per_day ≥ 1)",
            },
        }
    account = StrictAccount(settings, Bounds(contribution.window_s, contribution.cells_per_day, groups))
    return {
        "k_anonymity": k_anonymity,
        "differential_privacy": {
            "mechanism": STRICT_MECHANISM,
            "privacy_unit": PRIVACY_UNIT,
            "delta": account.delta,
            "epsilon_per_track_day": round(account.epsilon, 6),
            "epsilon_per_cell": {GROUP_TIER: round(account.epsilon_group, 6)},
            "cells_per_track_per_day": {GROUP_TIER: groups},
            "window_s": contribution.window_s,
            "test_threshold": account.threshold,
            "noise_library": "OpenDP samplers (sparse-vector test stated by hand, counts composed by OpenDP)",
            "composition": f"each track joins at most {groups} groups a day; per group ε {account.epsilon_test:g} for the AboveThreshold test "
            f"(noisy size against k + {account.margin}, tested at every window end) and the rest for its noisy size; "
            f"δ {account.delta:g} per track-day bounds the chance that a group of k - 1 passes the test",
        },
    }


def track_day_account(
    aggregator: dict, anonymizer: dict
) -> tuple[TrackDayAccount, AggregatorSettings, ContributionSettings]:
    """The guarantee of the parameters in force (defaults where a node did not report), composed by OpenDP."""
    a, c = AggregatorSettings(), ContributionSettings()
    settings = AggregatorSettings(
        epsilon_per_track_day=float(aggregator.get("epsilon_per_track_day", a.epsilon_per_track_day)),
        tier_shares=tuple(aggregator.get("tier_shares", a.tier_shares)),
        hour_metric_shares=tuple(aggregator.get("hour_metric_shares", a.hour_metric_shares)),
        k=int(aggregator.get("k", a.k)),
        daily_epsilon_cap=float(aggregator.get("daily_epsilon_cap", a.daily_epsilon_cap)),
        mode=str(aggregator.get("mode", a.mode)),
        strict_delta=float(aggregator.get("strict_delta", a.strict_delta)),
        strict_test_share=float(aggregator.get("strict_test_share", a.strict_test_share)),
    )
    contribution = ContributionSettings(
        window_s=float(anonymizer.get("window_s", c.window_s)),
        cells_per_day=tuple(int(n) for n in anonymizer.get("cells_per_day", c.cells_per_day)),
        groups_per_day=int(anonymizer.get("groups_per_day", c.groups_per_day)),
    )
    return TrackDayAccount(settings, Bounds(contribution.window_s, contribution.cells_per_day)), settings, contribution


def render_markdown(dpia: dict) -> str:
    g, p, f, r = dpia["privacy_guarantee"], dpia["processing"], dpia["data_flows"], dpia["record_of_processing_art30"]
    dp_ = g["differential_privacy"]
    lines = [
        "# Data Protection Impact Assessment — privacy_vision",
        "",
        f"Generated {dpia['generated_at']} from the {dpia['configuration_source']} configuration.",
        "",
        "## Processing",
        f"- Purpose: {p['purpose']}",
        f"- Legal basis: {p['legal_basis_note']}",
        *[f"- {name}: {text}" for name, text in p["data_categories_on_device"].items()],
        f"- Recipients: {p['recipients']}",
        f"- Retention: device outbox {p['retention']['device_outbox']}; ingest {p['retention']['ingest_releases_days']} days",
        "",
        "## Privacy guarantee of each release",
        f"- Differential privacy: {dp_['mechanism']}, privacy unit {dp_['privacy_unit']}: **ε = {dp_['epsilon_per_track_day']:g} per track-day**, "
        f"δ = {dp_['delta']:g}; {dp_['composition']}; ε per cell "
        + ", ".join(f"{tier} {value:g}" for tier, value in dp_["epsilon_per_cell"].items())
        + "; cells per track per day (L) "
        + ", ".join(f"{tier} {value}" for tier, value in dp_["cells_per_track_per_day"].items())
        + f"; window {dp_['window_s']:g} s; noise from {dp_['noise_library']}",
        f"- Per person-day: ε ≤ {g['person_day']['epsilon_per_person_day']:g} ({g['person_day']['note']}; measured: "
        + ", ".join(f"{name} V = {value:g}" for name, value in g["person_day"]["tracks_per_person_measured"].items())
        + ")",
        f"- k-anonymity: k = {g['k_anonymity']['k']} over {g['k_anonymity']['over']} ({g['k_anonymity']['decision']})",
        f"- Ledger: {g['ledger']}; daily cap {g['daily_epsilon_cap']:g} ε per track-day",
        f"- Bias of the bound: {g['bias_of_the_bound']}; {g['overlapping_zones']}",
        "",
        "## Data flows",
        "| topic | content | leaves the device |",
        "|---|---|---|",
        *[f"| {t} | {v['content']} | {'yes' if v['leaves_device'] else 'no'} |" for t, v in f["topics"].items()],
        "",
        "",
        "### Recordings on this device (`privacy-vision record`; pixels, boxes, tracks and true totals are never recorded)",
        *(
            [
                f"- {r['file']}: {', '.join(r['topics'])}; {'per-person; ' if r['per_person'] else ''}kept until {r['kept_until']}; "
                f"{r['messages'] if r['messages'] is not None else 'being written'} messages; "
                f"{'on disk' if r['on_disk'] else 'no longer on disk'}"
                for r in f["recordings"]
            ]
            or ["- none"]
        ),
        "",
        f"- DDS discovery range: {f['discovery_range']}; UDP bound to loopback by the DDS profile: {f['dds_udp_bound_to_loopback']}",
        f"- Uplink SPKI pins configured: {f['uplink_pins_configured']}",
        "",
        "## Record of processing (Art. 30 GDPR)",
        *[f"- {name.replace('_', ' ')}: {text}" for name, text in r.items()],
        "",
        "## Risks flagged by the configuration",
    ]
    if dpia["risks"]:
        lines += ["| setting | value | severity | why |", "|---|---|---|---|"]
        lines += [f"| {k['setting']} | {k['value']} | {k['severity']} | {k['reason']} |" for k in dpia["risks"]]
    else:
        lines.append("None: every checked setting is at or beyond the recommended level.")
    return "\n".join(lines) + "\n"


def dpia_json(dpia: dict) -> str:
    return json.dumps(dpia, indent=2, sort_keys=True, default=str)
