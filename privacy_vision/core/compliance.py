"""DPIA, Art. 30 record and data-subject answers, generated from the configuration actually in force.

Nothing here is boilerplate about "k ≥ 5" or "ε = 1": every statement is computed from the parameters
passed in (live values from the running nodes, or the config files when the graph is not running).
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from privacy_vision.core.aggregator import METRICS, AggregatorSettings

LEAVES_DEVICE = {"/zone_analytics": "via the uplink (HTTPS, pinned, signed) to the ingest"}
IMAGE_TOPIC = "/camera/image_raw"
RAW_TOPICS = {
    IMAGE_TOPIC: "camera frames (pixels) from the camera node to the detection node; a local ROS topic, so any process "
                 "on this device that joins the ROS domain can subscribe to it (e.g. `ros2 topic echo /camera/image_raw`); "
                 "the detection node zeroes its copy after inference, copies held by the middleware or by other "
                 "subscribers are outside its control",
    "/detections": "person boxes in image pixels, per frame",
    "/tracks": "motion-only tracks: tracker ID, floor position and velocity, box",
    "/anonymized_tracks": "rotating keyed IDs, grid cells, size class, heading sector",
    "/zone_analytics": "per-zone, per-window k-anonymous DP aggregates",
}


@dataclass(frozen=True)
class RiskFlag:
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


def system_facts(environment: dict[str, str], topics: dict[str, list[str]], ingest_retention_days: float, source: str) -> SystemFacts:
    """Discovery range and DDS profile as the environment sets them for the nodes."""
    from pathlib import Path

    profile = Path(environment.get("FASTDDS_DEFAULT_PROFILES_FILE", ""))
    localhost = profile.is_file() and "<address>127.0.0.1</address>" in profile.read_text()
    return SystemFacts(discovery_range=environment.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "SUBNET (ROS default)"),
                       dds_profile_localhost=localhost, topics=topics, ingest_retention_days=ingest_retention_days, source=source)


def in_process_capture(params: dict[str, dict]) -> bool:
    """The detection node reads the source itself: no camera node and no image topic."""
    return params.get("detection", {}).get("capture", "topic") == "in_process"


def frames_statement(params: dict[str, dict]) -> str:
    retained = params.get("detection", {}).get("retention_frames", 0)
    if in_process_capture(params):
        return ("read from the source by the detection node in its own process (in-process capture): no image topic exists, "
                "frames never reach the middleware; every buffer that held a frame (decoded, resized, converted, letterboxed, "
                f"network input) is zeroed after inference; frames retained after inference: {retained}")
    return ("published by the camera node on /camera/image_raw, a local topic that any process on this device can read; "
            "the camera zeroes its frame and message, the detection node every copy it makes, after inference; "
            f"frames retained after inference: {retained}")


def risk_flags(params: dict[str, dict], facts: SystemFacts) -> list[RiskFlag]:
    aggregator, anonymizer = params.get("aggregator", {}), params.get("anonymizer", {})
    detection, uplink = params.get("detection", {}), params.get("uplink", {})
    flags: list[RiskFlag] = []
    if aggregator.get("k", 0) < 5:
        flags.append(RiskFlag("aggregator.k", aggregator.get("k"), "groups smaller than 5 people can be released; small groups are easier to single out"))
    if aggregator.get("epsilon", 0) > 2:
        flags.append(RiskFlag("aggregator.epsilon", aggregator.get("epsilon"), "more than ε = 2 per zone-window: each release says much about any one person"))
    if aggregator.get("mechanism") == "discrete_gaussian" and aggregator.get("delta", 0) > 1e-5:
        flags.append(RiskFlag("aggregator.delta", aggregator.get("delta"), "δ above 1e-5 per release allows rare large leaks"))
    if aggregator.get("suppression_delta", 0) > 1e-4:
        flags.append(RiskFlag("aggregator.suppression_delta", aggregator.get("suppression_delta"),
                              "groups of exactly k people pass the noisy threshold more often than 1 in 10,000 windows"))
    if aggregator.get("daily_epsilon_cap", 0) > 5000:
        flags.append(RiskFlag("aggregator.daily_epsilon_cap", aggregator.get("daily_epsilon_cap"), "the daily cap hardly limits what a person present all day costs", "medium"))
    if detection.get("retention_frames", 0) > 0:
        flags.append(RiskFlag("detection.retention_frames", detection.get("retention_frames"), "frames are kept in memory after inference instead of being destroyed at once"))
    if in_process_capture(params) and any("sensor_msgs/msg/Image" in types for types in facts.topics.values()):
        flags.append(RiskFlag("detection.capture", "in_process", "an image topic exists although capture is in process: "
                              "another process publishes frames on this device"))
    if anonymizer.get("grid_size_m", 1) < 0.5:
        flags.append(RiskFlag("anonymizer.grid_size_m", anonymizer.get("grid_size_m"), "positions finer than 0.5 m approach exact trajectories", "medium"))
    if anonymizer.get("time_precision_s", 5) < 1:
        flags.append(RiskFlag("anonymizer.time_precision_s", anonymizer.get("time_precision_s"), "timestamps finer than 1 s make records easier to link to other sources", "medium"))
    if anonymizer.get("rotation_interval_s", 0) > 24 * 3600:
        flags.append(RiskFlag("anonymizer.rotation_interval_s", anonymizer.get("rotation_interval_s"), "privacy IDs stay linkable for more than a day"))
    if facts.discovery_range not in ("LOCALHOST", "OFF") and not facts.dds_profile_localhost:
        flags.append(RiskFlag("ROS_AUTOMATIC_DISCOVERY_RANGE", facts.discovery_range, "raw topics (camera, tracks) can be discovered and subscribed from other hosts"))
    pins = [p for p in uplink.get("pins", []) if p]
    if len(pins) < 2:
        flags.append(RiskFlag("uplink.pins", len(pins), "no backup pin: a server key rotation forces an unpinned or offline period", "medium"))
    if not str(uplink.get("ingest_url", "")).startswith("https://"):
        flags.append(RiskFlag("uplink.ingest_url", uplink.get("ingest_url"), "the ingest is not reached over HTTPS"))
    return flags


def build_dpia(params: dict[str, dict], facts: SystemFacts, now: dt.datetime | None = None) -> dict:
    now = now or dt.datetime.now(dt.timezone.utc)
    aggregator, anonymizer = params.get("aggregator", {}), params.get("anonymizer", {})
    detection, uplink = params.get("detection", {}), params.get("uplink", {})
    window_s = float(aggregator.get("window_s", 60.0))
    epsilon = float(aggregator.get("epsilon", 0.0))
    windows_per_day = 86400.0 / window_s
    defaults = AggregatorSettings()
    suppression_delta = float(aggregator.get("suppression_delta", defaults.suppression_delta))
    split = [float(w) for w in aggregator.get("epsilon_split", defaults.epsilon_split)]
    delta_per_release = float(aggregator.get("delta", 0.0)) + suppression_delta
    topics = facts.topics or {t: [] for t in RAW_TOPICS if not (t == IMAGE_TOPIC and in_process_capture(params))}
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
                "aggregates": "per zone and window; only these leave the device",
            },
            "recipients": f"ingest at {uplink.get('ingest_url')}",
            "retention": {"device_outbox": "until acknowledged by the ingest", "ingest_releases_days": facts.ingest_retention_days,
                          "privacy_ledger": "daily ε totals, no personal data"},
        },
        "privacy_guarantee": {
            "k_anonymity": {"k": aggregator.get("k"), "over": "distinct people per zone-window",
                            "decision": "never below k people; at or above k, released only if the DP-noised count reaches k plus a "
                                        f"margin that lets a group of exactly k through with probability ≤ {suppression_delta:g} (the δ it costs)"},
            "differential_privacy": {"mechanism": aggregator.get("mechanism"), "epsilon_per_release": epsilon,
                                     "delta_per_release": delta_per_release, "privacy_unit": aggregator.get("privacy_unit"),
                                     "epsilon_by_metric": {name: round(epsilon * w / sum(split), 4) for name, w in zip(METRICS, split)},
                                     "window_s": window_s, "noise_library": "OpenDP (exact integer samplers)"},
            "daily_epsilon_cap": aggregator.get("daily_epsilon_cap"),
            "daily_footfall_counter": {"epsilon_per_zone_per_day": aggregator.get("footfall_epsilon_per_day", 0.0),
                                       "delta_per_zone_per_day": suppression_delta,
                                       "mechanism": "binary-tree continual release, discrete Laplace (OpenDP) per node"},
            "person_present_all_day": {
                "zone_windows_per_day": windows_per_day,
                "epsilon_if_in_one_zone_all_day": round(min(epsilon * windows_per_day, float(aggregator.get("daily_epsilon_cap", 0))), 3),
                "delta_if_in_one_zone_all_day": float(f"{delta_per_release * windows_per_day:.3g}"),
                "note": "basic composition over the day's windows, bounded by the daily cap, which stops all releases once reached",
            },
        },
        "data_flows": {
            "topics": {t: {"types": types, "content": RAW_TOPICS.get(t, ""), "leaves_device": t in LEAVES_DEVICE}
                       for t, types in sorted(topics.items())},
            "leaves_device": LEAVES_DEVICE,
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
        f"- k-anonymity: k = {g['k_anonymity']['k']} over {g['k_anonymity']['over']} ({g['k_anonymity']['decision']})",
        f"- Differential privacy: {dp_['mechanism']}, ε = {dp_['epsilon_per_release']}, δ = {dp_['delta_per_release']} per release; "
        f"privacy unit {dp_['privacy_unit']}; window {dp_['window_s']} s; noise from {dp_['noise_library']}; ε per metric: "
        + ", ".join(f"{name} {value:g}" for name, value in dp_["epsilon_by_metric"].items()),
        f"- Cumulative daily footfall per zone: {g['daily_footfall_counter']['mechanism']}, "
        f"ε = {g['daily_footfall_counter']['epsilon_per_zone_per_day']}, δ = {g['daily_footfall_counter']['delta_per_zone_per_day']:g} "
        "per zone and day (a total below k is never released; the same noisy threshold, over every step of the day)",
        f"- Daily ε cap: {g['daily_epsilon_cap']}; a person present in one zone all day: ε ≤ "
        f"{g['person_present_all_day']['epsilon_if_in_one_zone_all_day']}, δ ≤ {g['person_present_all_day']['delta_if_in_one_zone_all_day']} "
        f"({g['person_present_all_day']['note']})",
        "",
        "## Data flows",
        "| topic | content | leaves the device |",
        "|---|---|---|",
        *[f"| {t} | {v['content']} | {'yes' if v['leaves_device'] else 'no'} |" for t, v in f["topics"].items()],
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
