"""DPIA, Art. 30 record and data-subject answers, generated from the configuration actually in force.

Nothing here is boilerplate about "k ≥ 5" or "ε = 1": every statement is computed from the parameters
passed in (live values from the running nodes, or the config files when the graph is not running).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

from privacy_vision.core.graph import DIAGNOSTICS_CARRIES, IMAGE_TOPIC, RELEASE_CELLS_SERVICE, TOPICS, leaves_device
from privacy_vision.core.graph import topics as graph_topics
from privacy_vision.core.release.measured import LINEAGES_PER_PERSON, SAME_BODY
from privacy_vision.core.release.mechanisms import (
    EVENTS_UNIT,
    MECHANISM,
    PRESENCE_METRICS,
    PRESENCE_UNIT,
    STRICT_MECHANISM,
    EventAccount,
    PresenceAccount,
    ReleaseSettings,
    StrictAccount,
)
from privacy_vision.core.release.totals import TotalsSettings, TotalsValues

EXAMPLE_PEOPLE = {"a 15-minute visit": 900.0, "a 1-hour stay": 3600.0, "8 hours of staff presence": 8 * 3600.0}

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
    if aggregator.get("epsilon_per_presence_hour", 0) > 4:
        flags.append(
            RiskFlag(
                "aggregator.epsilon_per_presence_hour",
                aggregator.get("epsilon_per_presence_hour"),
                "more than ε = 4 for one hour of a person's presence: the releases say much about anyone who stays",
            )
        )
    if aggregator.get("daily_epsilon_cap", 0) > 4 * aggregator.get("epsilon_events_per_track_day", 1):
        flags.append(
            RiskFlag(
                "aggregator.daily_epsilon_cap",
                aggregator.get("daily_epsilon_cap"),
                "the cap allows more than four bound instances a day (restarts, forget requests, changed bounds): each "
                "one lets a person's stitched track count again",
                "medium",
            )
        )
    if anonymizer.get("same_body_radius_m", SAME_BODY["radius_m"]) < SAME_BODY["radius_m"]:
        flags.append(
            RiskFlag(
                "anonymizer.same_body_radius_m",
                anonymizer.get("same_body_radius_m"),
                f"below the measured {SAME_BODY['radius_m']} m: two tracks on one person count twice more often",
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
    settings, totals = release_settings(aggregator), totals_settings(anonymizer)
    capture = "in_process" if in_process_capture(params) else "camera"
    topics = facts.topics or {topic.name: [topic.type] for topic in graph_topics(capture)}
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "configuration_source": facts.source,
        "processing": {
            "purpose": "anonymous spatial analytics (occupancy, flow direction, dwell time, footfall per zone)",
            "legal_basis_note": "to be confirmed by the controller (typically legitimate interest, Art. 6(1)(f) GDPR)",
            "data_categories_on_device": {
                "camera frames": frames_statement(params),
                "person boxes and tracks": "in memory only; a lost track is dropped after "
                f"{params.get('tracking', {}).get('track_buffer_s', '?')} s; track IDs are never reused across restarts",
                "anonymised records": f"keyed HMAC IDs rotated every {anonymizer.get('rotation_interval_s')} s (and on request), "
                f"{anonymizer.get('grid_size_m')} m grid, timestamps floored to {anonymizer.get('time_precision_s')} s, "
                f"heading in {anonymizer.get('direction_sectors')} sectors, no speed",
                "lineages (stitched tracks)": "in the anonymizer's memory only: each lineage's last floor position, zone "
                "stays and arrival times, and the zones and strict-mode groups it counted in today; dropped a minute "
                "after its track ends; a forget request drops them all and starts a new bound instance",
                "true totals of open segments": "in the anonymizer's memory only (never on disk, never on a topic): "
                f"handed to the aggregator through its {RELEASE_CELLS_SERVICE} service, kept until it has recorded them",
                "releases": "noisy values with intervals, in the release store until the ingest acknowledges them; "
                "only these leave the device",
                "diagnostics": DIAGNOSTICS_CARRIES,
            },
            "recipients": f"ingest at {uplink.get('ingest_url')}",
            "retention": {
                "device_outbox": "until acknowledged by the ingest",
                "ingest_releases_days": facts.ingest_retention_days,
                "release_store": "released spans (keys), ledger charges and strict-mode thresholds: no personal data",
            },
        },
        "privacy_guarantee": strict_statement(settings, totals)
        if settings.mode == "strict"
        else default_statement(settings, totals),
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
            "categories_of_recipients": "none for personal data; the analytics ingest receives differentially private "
            "aggregates (not k-anonymous: k is a display rule on noisy values"
            + ("; strict mode releases only groups of at least k people)" if settings.mode == "strict" else ")"),
            "transfers_to_third_countries": "depends on where the ingest runs: " + str(uplink.get("ingest_url")),
            "time_limits_for_erasure": f"frames: immediately ({detection.get('retention_frames', 0)} retained); tracks: seconds; "
            f"aggregates: {facts.ingest_retention_days} days at the ingest",
            "security_measures": "TLS ≥ 1.2 with SPKI pinning, HMAC-signed requests with replay protection, "
            "host-only DDS discovery, tamper-evident audit log checked against the release store at every start, "
            "per-person state only in memory",
        },
        "risks": [flag.__dict__ for flag in risk_flags(params, facts)],
    }


def default_statement(settings: ReleaseSettings, totals: TotalsSettings) -> dict:
    """The default mode's guarantee, composed by the code that releases (mechanisms.py), never restated by hand."""
    presence = PresenceAccount(settings, totals.grid, totals.presence.weight_steps)
    events = EventAccount(settings, totals.events.zones_per_day)
    lineages = LINEAGES_PER_PERSON["by_time_in_view"]
    return {
        "presence": {
            "metrics": "occupancy (people present on average) in every tier; heading and dwell class in the hour tier",
            "mechanism": MECHANISM,
            "privacy_unit": PRESENCE_UNIT,
            "delta": 0.0,
            "epsilon_per_presence_hour": round(presence.epsilon_per_presence_hour, 6),
            "epsilon_per_presence_hour_by_tier": {
                tier: round(presence.epsilon_of_tier_per_presence_hour(tier), 6) for tier in PRESENCE_METRICS
            },
            "periods_s": {tier: totals.grid.period_s(tier) for tier in PRESENCE_METRICS},
            "examples": {
                name: round(presence.epsilon_for_presence(seconds), 6) for name, seconds in EXAMPLE_PEOPLE.items()
            },
            "why_it_holds": "identity-free: at every tick of "
            f"{totals.grid.tick_s:g} s each body present adds at most one unit to one bin of the zone it stands in "
            f"(zones never overlap; tracks closer than {totals.presence.same_body_radius_m:g} m count once), so a "
            "person's presence of D seconds changes every tier by at most D seconds' worth of units in L1, whatever "
            "the tracker does over time (fragments, reused IDs, restarts, key rotation); every span of time is "
            "released once per tier (the release store refuses an overlap), so no restart, lifecycle cycle, "
            "outage or clock step adds to it; ε grows linearly with presence (w-event privacy over the presence)",
            "assumption_measured": SAME_BODY,
            "noise_library": "OpenDP discrete Laplace (exact sampler); composition by its privacy maps",
        },
        "events": {
            "metrics": ", ".join(events.noise) + " per zone and day, footfall also for the whole site",
            "mechanism": MECHANISM,
            "privacy_unit": EVENTS_UNIT,
            "delta": 0.0,
            "epsilon_per_stitched_track_day": round(events.epsilon_per_track_day, 6),
            "epsilon_by_metric": {m: round(e, 6) for m, e in events.epsilon_by_metric.items()},
            "zones_per_lineage_day": totals.events.zones_per_day,
            "stitching": f"a track born within {totals.lineage.stitch_radius_m:g} m and "
            f"{totals.lineage.stitch_window_s:g} s of where a track was lost continues its lineage (over-merging only undercounts)",
            "bound_instances": "the per-lineage bound lives in memory: every start, forget request or change of the "
            "bound begins a new bound instance, which the ledger charges again; the daily cap "
            f"({settings.daily_epsilon_cap:g} per device day) allows at most "
            f"{int(settings.daily_epsilon_cap / events.epsilon_per_track_day + 1e-9)} instances a day",
            "per_person": "a person whose visit breaks into V lineages gets V × ε per stitched-track-day (per bound "
            "instance); V is measured, not bounded: "
            + "; ".join(
                f"{span}: p50 {q['p50']:g}, p90 {q['p90']:g}, max {q['max']:g}" for span, q in lineages.items()
            ),
            "measured": LINEAGES_PER_PERSON,
        },
        "examples_total": {
            name: {
                "presence_bound": round(presence.epsilon_for_presence(seconds), 6),
                "events_per_lineage": round(events.epsilon_per_track_day, 6),
                "total_if_one_lineage": round(presence.epsilon_for_presence(seconds) + events.epsilon_per_track_day, 6),
            }
            for name, seconds in EXAMPLE_PEOPLE.items()
        },
        "k": {
            "k": settings.k,
            "rule": "a display rule on noisy values (post-processing, no δ): a footfall release whose noisy head count "
            "is below k is shown as '< k' by the terminal summary and the dashboard; its values and intervals still "
            "travel so that sums stay unbiased (presence values are people present on average, not head counts, and "
            "are shown with their intervals). This is not k-anonymity (strict mode is)",
        },
        "daily_epsilon_cap": settings.daily_epsilon_cap,
        "exactly_once": "each released span's key is stored with its ledger charge in one transaction before the "
        "release is published; at every start the store is checked against the audit log and a missing, emptied or "
        "edited store refuses to release until restored from the audit log; the ledger's day is the device clock's "
        "and never goes back",
        "zones": "zones may not overlap (refused at start); staff exclusion areas contribute nothing to any metric",
    }


def strict_statement(settings: ReleaseSettings, totals: TotalsSettings) -> dict:
    """Strict mode's guarantee: groups only, per stitched track."""
    groups = totals.groups_per_day
    statement = {
        "k": {
            "k": settings.k,
            "rule": "strict mode: no grid cell is released; each zone's pending group (distinct lineages) is released "
            "only when a sparse-vector test on its noisy size passes and its true size is at least k",
        },
        "daily_epsilon_cap": settings.daily_epsilon_cap,
    }
    if groups < 1:
        return statement | {
            "groups": "nothing is released: the anonymizer forms no groups (set its groups_per_day ≥ 1)"
        }
    account = StrictAccount(settings, groups, totals.grid.window_s)
    return statement | {
        "groups": {
            "mechanism": STRICT_MECHANISM,
            "privacy_unit": EVENTS_UNIT,
            "epsilon_per_stitched_track_day": round(account.epsilon_per_track_day, 6),
            "delta_per_stitched_track_day": account.delta,
            "epsilon_per_group": round(account.epsilon_group, 6),
            "groups_per_lineage_day": groups,
            "test_threshold": account.threshold,
            "composition": f"each lineage joins at most {groups} groups a day; per group ε {account.epsilon_test:g} for the "
            f"AboveThreshold test (noisy size against k + {account.margin}, tested at every window end; its threshold "
            "is kept in the release store across reconfigures and restarts) and the rest for its noisy size; δ is the "
            "proof's (1 + e^ε_test) × the chance that a group of k - 1 passes a test, summed over a lineage's tests",
            "per_person": "V lineages per person multiply it (see the default mode's measured V)",
        }
    }


def release_settings(aggregator: dict) -> ReleaseSettings:
    """The aggregator's settings in force (defaults where it did not report)."""
    defaults = ReleaseSettings()
    values = {
        name: tuple(aggregator[name])
        if isinstance(getattr(defaults, name), tuple)
        else type(getattr(defaults, name))(aggregator[name])
        for name in defaults.__dataclass_fields__
        if name in aggregator
    }
    return ReleaseSettings(**{**defaults.__dict__, **values})


def totals_settings(anonymizer: dict) -> TotalsSettings:
    """The anonymizer's release settings in force (defaults where it did not report)."""
    return TotalsValues.from_parameters(anonymizer).settings()


def render_markdown(dpia: dict) -> str:
    g, p, f, r = dpia["privacy_guarantee"], dpia["processing"], dpia["data_flows"], dpia["record_of_processing_art30"]
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
        "## Privacy guarantee of the releases",
        *_guarantee_lines(g),
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


def _guarantee_lines(g: dict) -> list[str]:
    lines = [f"- k = {g['k']['k']}: {g['k']['rule']}"]
    if "presence" in g:
        pr, ev = g["presence"], g["events"]
        lines += [
            f"- Presence ({pr['metrics']}): {pr['mechanism']}, **ε = {pr['epsilon_per_presence_hour']:g} per "
            f"presence-hour** (δ 0), by tier "
            + ", ".join(f"{t} {e:g}" for t, e in pr["epsilon_per_presence_hour_by_tier"].items())
            + "; "
            + ", ".join(f"{name}: ε {e:g}" for name, e in pr["examples"].items())
            + f". {pr['why_it_holds']}. Measured assumption: {pr['assumption_measured']['statement']}",
            f"- Events ({ev['metrics']}): **ε = {ev['epsilon_per_stitched_track_day']:g} per stitched-track-day** per "
            f"bound instance, at most {ev['zones_per_lineage_day']} zones per lineage and day; {ev['stitching']}; "
            f"{ev['bound_instances']}. {ev['per_person']}",
            "- Totals of the example people (presence bound + one lineage's events): "
            + "; ".join(f"{name} ε {v['total_if_one_lineage']:g}" for name, v in g["examples_total"].items()),
            f"- Exactly once: {g['exactly_once']}",
            f"- Zones: {g['zones']}",
        ]
    elif isinstance(g.get("groups"), dict):
        gr = g["groups"]
        lines.append(
            f"- Groups: {gr['mechanism']}, **ε = {gr['epsilon_per_stitched_track_day']:g}, δ = "
            f"{gr['delta_per_stitched_track_day']:g} per stitched-track-day**; {gr['composition']}; {gr['per_person']}"
        )
    else:
        lines.append(f"- Groups: {g.get('groups')}")
    return [*lines, f"- Daily cap: {g['daily_epsilon_cap']:g} ε per stitched-track-day per device day"]


def dpia_json(dpia: dict) -> str:
    return json.dumps(dpia, indent=2, sort_keys=True, default=str)
