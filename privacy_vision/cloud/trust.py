"""What the ingest checks in a release beyond its schema, before storing it: nothing a device states is taken on
trust where it can be checked (issue 20, finding 9).

- Its period lies in time as receipt allows: it starts at most PERIOD_SKEW_S after receipt (a recording played faster
  than its own rate runs ahead of the clock, by at most this much), and, with a retention period, it ended within it
  (a release retention would delete at once is refused, not stored and dropped).
- Its stated privacy values are plausible: ε per unit (presence-hour, stitched-track-day) and k within the
  aggregator's own parameter ranges, ε spent today within the daily cap. (ε per cell scales with the span observed,
  so it has no floor; every value carries its own bounded interval, so nothing the dashboard computes depends on it.)
- They equal the device's registered configuration, when it has one (core/registration.py): a mismatch is refused
  (422), never stored with a flag: what the read API serves always states the guarantee the fleet was registered
  with. A device whose configuration changes is registered again first; until then its releases are refused and kept
  in its outbox's dead-letter table.
One value per cell, and the per-device quotas, need the stored state: core of ReleaseStore.accept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from privacy_vision.cloud.devices import Device
from privacy_vision.cloud.ingest_store import Quotas
from privacy_vision.core.protocol import RequestRejected
from privacy_vision.core.registration import mismatches
from privacy_vision.core.release_schema import REGISTERED_FIELDS, WireRelease

PERIOD_SKEW_S = 3600.0
# The aggregator's parameter ranges (nodes/aggregator.py: RELEASE_PARAMETERS) of what a release states, by parameter
# name; test_ingest_ranges.py checks they are the node's. ε per unit: the parameter each kind states (REGISTERED_FIELDS).
STATED_PARAMETER_RANGES = {
    "epsilon_per_presence_hour": (0.001, 10000.0),
    "epsilon_events_per_track_day": (0.001, 1000.0),
    "strict_epsilon_per_track_day": (0.001, 1000.0),
    "k": (1, 1000),
}
EPSILON_UNIT_PARAMETER = {kind: name for kind, (_, name) in REGISTERED_FIELDS["epsilon_unit"].items()}


@dataclass(frozen=True)
class IngestPolicy:
    """The limits of one ingest (command-line options): time, retention and per-device quotas."""

    period_skew_s: float = PERIOD_SKEW_S
    retention_s: float = 0.0  # 0: keep everything, and accept any past period
    quotas: Quotas = field(default_factory=Quotas)


def check_release(release: WireRelease, device: Device, now_s: float, policy: IngestPolicy) -> None:
    """RequestRejected(422) with the reason for the first check the release fails."""
    if release.period_start_s > now_s + policy.period_skew_s:
        raise RequestRejected(
            422,
            f"period_start_s is {release.period_start_s - now_s:.0f} s after receipt; at most "
            f"{policy.period_skew_s:.0f} s ahead is accepted (is the device clock right?)",
        )
    if policy.retention_s and release.period_end_s < now_s - policy.retention_s:
        raise RequestRejected(
            422, f"the period ended before the ingest's retention of {policy.retention_s / 86400:g} days"
        )
    low, high = STATED_PARAMETER_RANGES[EPSILON_UNIT_PARAMETER[release.kind]]
    if not low <= release.epsilon_unit <= high:
        raise RequestRejected(
            422, f"epsilon_unit {release.epsilon_unit:g} of a {release.kind} release is outside [{low:g}, {high:g}]"
        )
    low, high = STATED_PARAMETER_RANGES["k"]
    if not low <= release.k <= high:
        raise RequestRejected(422, f"k {release.k} is outside [{low}, {high}]")
    if release.epsilon_spent_today > release.daily_epsilon_cap * (1 + 1e-9):
        raise RequestRejected(422, "epsilon_spent_today exceeds daily_epsilon_cap")
    if device.registered is not None and (differences := mismatches(release, device.registered)):
        raise RequestRejected(
            422,
            f"differs from device {device.device_id}'s registered configuration ({'; '.join(differences)}); "
            f"register it again with 'privacy-vision pki --device {device.device_id} --config PARAMS' if it changed",
        )
