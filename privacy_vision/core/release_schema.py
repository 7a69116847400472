"""The one release schema of the project (release model v3): what a release looks like on the wire, in the ingest
and in its read API.

A release is one span of one cell of the public grid (a zone over one period of a tier; a restart or an outage
splits a period into segments, each released once) for one kind of metric: presence (identity-free: people
present on average, and in the hour tier by heading and dwell class), events (footfall, entries, exits per
stitched track, day tier) or a strict-mode group. Every value carries its 95% interval and the interval's method;
`coverage` is the share of the period actually observed. Every number is finite and ranged, every string
bounded, no field is unknown, and a bool is never taken for a number (strict mode). `wire_from_release` is the
only place that maps the releaser's `Release` to the wire.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from privacy_vision.core.protocol import canonical_release_bytes
from privacy_vision.core.release.grid import (
    DAY_S,
    DWELL_LABELS,
    EVENTS_KIND,
    GROUP_KIND,
    GROUP_TIER,
    HEADING_LABELS,
    HOUR_S,
    PRESENCE_KIND,
    TIERS,
    Grid,
)

if TYPE_CHECKING:
    from privacy_vision.core.release.releaser import Release

SCHEMA_VERSION = 3
MAX_COUNT = 10**9
MAX_EPSILON = 10**6
MAX_TIME_S = 10**11  # about the year 5100: far beyond any real period, small enough for every database
MAX_LABELS = 32
PRIVACY_UNITS = ("presence-hour", "stitched-track-day")
EVENT_METRIC_NAMES = ("footfall", "entries", "exits")
HOUR_METRIC_NAMES = (
    "occupancy",
    *(f"heading.{label}" for label in HEADING_LABELS),
    *(f"dwell.{label}" for label in DWELL_LABELS),
)
METRICS = {  # which values a release of each kind and tier may carry
    (PRESENCE_KIND, "window"): ("occupancy",),
    (PRESENCE_KIND, "hour"): HOUR_METRIC_NAMES,
    (PRESENCE_KIND, "day"): ("occupancy",),
    (EVENTS_KIND, "day"): EVENT_METRIC_NAMES,
    (GROUP_KIND, GROUP_TIER): ("size",),
}


def _utf8_encodable(value: str) -> str:
    """JSON escapes can carry lone surrogates, which no database accepts as text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Name = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_utf8_encodable)
]
Label = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:+<>%,()\- ]+$")]
Epsilon = Annotated[float, Field(ge=0.0, le=MAX_EPSILON)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_TIME_S)]
Value = Annotated[float, Field(ge=-MAX_COUNT, le=MAX_COUNT)]


class WireEstimate(BaseModel):
    """A released value (unbiased, so it may fall below 0 by noise) and its 95% interval (cut at what is known)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)

    value: Value
    low: Annotated[float, Field(ge=0.0, le=MAX_COUNT)]
    high: Annotated[float, Field(ge=0.0, le=MAX_COUNT)]

    @model_validator(mode="after")
    def _ordered(self) -> WireEstimate:
        if self.low > self.high:
            raise ValueError("an interval's low must not exceed its high")
        return self


class WireRelease(BaseModel):
    """One released span as sent by the uplink and stored by the ingest (field names as in `Release`)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)

    schema_version: Literal[SCHEMA_VERSION]
    release_id: Identifier
    kind: Literal[PRESENCE_KIND, EVENTS_KIND, GROUP_KIND]
    zone_id: Name
    tier: Literal[(*TIERS, GROUP_TIER)]
    period_start_s: Seconds
    period_end_s: Seconds
    segment_start_s: Seconds
    segment_end_s: Seconds
    coverage: Annotated[float, Field(ge=0.0, le=1.0)]
    complete: bool
    below_k: bool  # events: the noisy footfall is below k, shown as "< k" (the values travel, so sums stay unbiased)
    values: Annotated[dict[Label, WireEstimate], Field(max_length=MAX_LABELS)]
    interval: Label  # how the intervals were computed
    mechanism: Label
    privacy_unit: Literal[PRIVACY_UNITS]
    epsilon_unit: Epsilon  # ε per presence-hour (presence) or per stitched-track-day (events, groups)
    epsilon_cell: Epsilon  # the most one person (presence, over the observed span) or lineage can cost through it
    delta: Annotated[float, Field(ge=0.0, lt=1e-3)]
    epsilon_by_metric: Annotated[dict[Label, Epsilon], Field(max_length=MAX_LABELS)]
    k: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    mode: Literal["default", "strict"]
    window_s: Annotated[float, Field(gt=0.0, le=HOUR_S)]
    bound: Annotated[int, Field(ge=0, le=1000)]
    epsilon_spent_today: Epsilon
    daily_epsilon_cap: Epsilon
    configuration: Identifier

    @model_validator(mode="after")
    def _consistent(self) -> WireRelease:
        try:
            Grid(window_s=self.window_s, tick_s=min(1.0, self.window_s)).validate()
        except ValueError as error:
            raise ValueError(str(error)) from None
        allowed = METRICS.get((self.kind, self.tier))
        if allowed is None:
            raise ValueError(f"a {self.kind} release has no {self.tier} tier")
        if unknown := set(self.values) - set(allowed):
            raise ValueError(
                f"a {self.kind} {self.tier} release carries no {sorted(unknown)} (allowed: {list(allowed)})"
            )
        if not self.period_start_s <= self.segment_start_s < self.segment_end_s <= self.period_end_s:
            raise ValueError("the segment must lie inside the period and end after it starts")
        length = self.period_end_s - self.period_start_s
        if self.tier == GROUP_TIER:  # strict mode: a group spans whole windows of one UTC day
            windows = length / self.window_s
            if length > DAY_S or not math.isclose(windows, round(windows), abs_tol=1e-6):
                raise ValueError(
                    f"a group's period must be whole windows of {self.window_s:g} s within a day, got {length:g} s"
                )
            if self.mode != "strict":
                raise ValueError("a group is released in strict mode only")
        else:
            expected = Grid(window_s=self.window_s).period_s(self.tier)
            if not math.isclose(length, expected, abs_tol=1e-3):
                raise ValueError(
                    f"period_end_s - period_start_s must be {expected:g} s for the {self.tier} tier, got {length:g} s"
                )
            if self.delta:
                raise ValueError("a grid cell is pure ε-DP: delta must be 0")
        if self.complete != (self.coverage >= 1.0 - 1e-9):
            raise ValueError("complete must be true exactly when coverage is 1")
        if self.coverage > 0 and self.kind != PRESENCE_KIND and not self.values:
            raise ValueError("an observed events or group release carries values")
        return self


# The privacy values every release states that must equal its device's registered configuration (registered at
# provisioning: `privacy-vision pki --device NAME --config params.yaml`; the ingest refuses a release that differs),
# each with the node parameter it states (by release kind where the kinds state different ones). The one list of
# them: a renamed field or parameter is changed here only.
REGISTERED_FIELDS: dict[str, tuple[str, str] | dict[str, tuple[str, str]]] = {
    "epsilon_unit": {
        PRESENCE_KIND: ("aggregator", "epsilon_per_presence_hour"),
        EVENTS_KIND: ("aggregator", "epsilon_events_per_track_day"),
        GROUP_KIND: ("aggregator", "strict_epsilon_per_track_day"),
    },
    "k": ("aggregator", "k"),
    "mode": ("aggregator", "mode"),
    "daily_epsilon_cap": ("aggregator", "daily_epsilon_cap"),
    "window_s": ("anonymizer", "window_s"),
}


class InvalidRelease(ValueError):
    """A release that does not match the schema; the message names the fields and why."""


def validation_reason(error: ValidationError) -> str:
    """Short, bounded reason for a client: field path and message of the first few errors."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)[:500]


def parse_release_json(body: bytes | str) -> WireRelease:
    """Validate raw JSON bytes (pydantic's own parser: no NaN, bounded nesting, no Python recursion)."""
    try:
        return WireRelease.model_validate_json(body)
    except ValidationError as error:
        raise InvalidRelease(validation_reason(error)) from None


def validate_release(release: dict[str, Any]) -> WireRelease:
    try:
        return WireRelease.model_validate(release)
    except ValidationError as error:
        raise InvalidRelease(validation_reason(error)) from None


def wire_from_release(release: Release) -> dict[str, Any]:
    """The releaser's `Release` as a validated wire dict: the single Release → wire mapping."""
    values = {}
    for name, estimate in release.values.items():
        low, high = estimate.interval()
        values[name] = {"value": estimate.value, "low": max(low, release.floor), "high": max(high, release.floor)}
    methods = sorted({estimate.method for estimate in release.values.values()}) or ["none (nothing observed)"]
    wire = {
        "schema_version": SCHEMA_VERSION,
        "release_id": release.release_id,
        "kind": release.kind,
        "zone_id": release.zone_id,
        "tier": release.tier,
        "period_start_s": release.period_start_s,
        "period_end_s": release.period_end_s,
        "segment_start_s": release.segment_start_s,
        "segment_end_s": release.segment_end_s,
        "coverage": release.coverage,
        "complete": release.complete,
        "below_k": release.below_k,
        "values": values,
        "interval": "; ".join(methods),
        "mechanism": release.mechanism,
        "privacy_unit": release.privacy_unit,
        "epsilon_unit": release.epsilon_unit,
        "epsilon_cell": release.epsilon_cell,
        "delta": release.delta,
        "epsilon_by_metric": release.epsilon_by_metric,
        "k": release.k,
        "mode": release.mode,
        "window_s": release.window_s,
        "bound": release.bound,
        "epsilon_spent_today": release.epsilon_spent_today,
        "daily_epsilon_cap": release.daily_epsilon_cap,
        "configuration": release.configuration,
    }
    return validate_release(wire).model_dump(mode="json")


def release_bytes(release: Release) -> bytes:
    """What is stored and sent, serialised once: retries resend exactly these bytes."""
    return canonical_release_bytes(wire_from_release(release))


def noise_dominated(estimate: dict[str, float]) -> bool:
    """A value whose 95% interval is wider than the value itself says little beyond "about this much noise"."""
    return estimate["high"] - estimate["low"] > abs(estimate["value"])


def example_release(
    zone_id: str = "hall", period_start_s: float = 0.0, tier: str = "window", **overrides: Any
) -> dict[str, Any]:
    """A valid wire release as the releaser makes it under the default settings (for tests, the load benchmark and
    the docs): presence for the window and hour tiers, events for the day tier, a group for the group tier. The
    interval half-widths are those of the default noise. Overrides replace fields."""
    from privacy_vision.core.release.estimates import exact_half_width  # OpenDP is not needed to validate
    from privacy_vision.core.release.mechanisms import (
        EventAccount,
        PresenceAccount,
        ReleaseSettings,
        StrictAccount,
    )

    settings, grid = ReleaseSettings(), Grid()
    kind = {GROUP_TIER: GROUP_KIND, "day": EVENTS_KIND}.get(tier, PRESENCE_KIND)
    if kind == PRESENCE_KIND:
        account = PresenceAccount(settings, grid, 10)
        units = grid.ticks(tier) * 10
        widths = {m: exact_half_width(account.noise[tier, m].scale) / units for t, m in account.noise if t == tier}
        values = {"occupancy": (7.0, widths["occupancy"])}
        if tier == "hour":
            values |= {f"heading.{label}": (7.0 / len(HEADING_LABELS), widths["heading"]) for label in HEADING_LABELS}
            values |= {f"dwell.{label}": (7.0 / len(DWELL_LABELS), widths["dwell"]) for label in DWELL_LABELS}
        epsilons = {m: account.noise[tier, m].epsilon(units) for t, m in account.noise if t == tier}
        unit, epsilon_unit, configuration, bound, mechanism, delta = (
            PRIVACY_UNITS[0],
            account.epsilon_per_presence_hour,
            account.configuration_id,
            0,
            "discrete_laplace",
            0.0,
        )
    elif kind == EVENTS_KIND:
        account = EventAccount(settings, 2)
        values = {m: (120.0, float(exact_half_width(noise.scale))) for m, noise in account.noise.items()}
        epsilons = {m: noise.epsilon(1) for m, noise in account.noise.items()}
        unit, epsilon_unit, configuration, bound, mechanism, delta = (
            PRIVACY_UNITS[1],
            account.epsilon_per_track_day,
            account.configuration_id,
            2,
            "discrete_laplace",
            0.0,
        )
    else:
        account = StrictAccount(settings, 1, grid.window_s)
        values = {"size": (12.0, float(exact_half_width(account.count_noise.scale)))}
        epsilons = {"test": account.epsilon_test, "size": account.epsilon_group - account.epsilon_test}
        unit, epsilon_unit, configuration, bound, mechanism, delta = (
            PRIVACY_UNITS[1],
            account.epsilon_per_track_day,
            account.configuration_id,
            1,
            "sparse_vector+discrete_laplace",
            account.delta,
        )
    length = 3 * grid.window_s if tier == GROUP_TIER else grid.period_s(tier)
    release = {
        "schema_version": SCHEMA_VERSION,
        "release_id": str(uuid.uuid4()),
        "kind": kind,
        "zone_id": zone_id,
        "tier": tier,
        "period_start_s": period_start_s,
        "period_end_s": period_start_s + length,
        "segment_start_s": period_start_s,
        "segment_end_s": period_start_s + length,
        "coverage": 1.0,
        "complete": True,
        "below_k": False,
        "values": {name: {"value": v, "low": max(0.0, v - h), "high": v + h} for name, (v, h) in values.items()},
        "interval": "exact discrete Laplace quantile",
        "mechanism": mechanism,
        "privacy_unit": unit,
        "epsilon_unit": epsilon_unit,
        "epsilon_cell": sum(epsilons.values()),
        "delta": delta,
        "epsilon_by_metric": epsilons,
        "k": settings.k,
        "mode": "strict" if kind == GROUP_KIND else settings.mode,
        "window_s": grid.window_s,
        "bound": bound,
        "epsilon_spent_today": 0.0 if kind == PRESENCE_KIND else epsilon_unit,
        "daily_epsilon_cap": settings.daily_epsilon_cap,
        "configuration": configuration,
    }
    release.update(overrides)
    return release
