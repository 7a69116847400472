"""The one release schema of the project: what a release (release model v2: one cell of the public
grid, a zone over one period of a tier) looks like on the wire, in the ingest and in its read API.

Why one strict model: the ingest used to check nine fields, so NaN, negative counts, ε < 0, `k: true`,
a 40 KB extra field or a 20 KB zone name were stored and served, and one such release blanked the
dashboard. Every number here is finite and ranged, every string bounded, no field is unknown, and a bool
is never taken for a number (strict mode). The tiers, periods and labels are those of
core/contributions.py, and a cell shown as "< k" carries no value (the aggregator withholds them all).
The aggregator's `Release` (core/aggregator.py) has the same field names; `wire_from_release` is the
only place that maps one to the other, so a renamed or reshaped field is adapted there.
"""

from __future__ import annotations

import dataclasses
import math
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from privacy_vision.core.contributions import (
    DAY_S,
    DIRECTION_LABELS,
    DWELL_LABELS,
    GROUP_TIER,
    HOUR_S,
    TIERS,
    ContributionSettings,
)

MAX_COUNT = 10**9
MAX_EPSILON = 10**6
MAX_TIME_S = 10**11  # about the year 5100: far beyond any real period, small enough for every database
MAX_LABELS = 32


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
Label = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:+<>\- ]+$")]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Epsilon = Annotated[float, Field(ge=0.0, le=MAX_EPSILON)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_TIME_S)]
Tier = Literal[(*TIERS, GROUP_TIER)]
DirectionLabel = Literal[DIRECTION_LABELS]
DwellLabel = Literal[DWELL_LABELS]


class WireRelease(BaseModel):
    """One cell's release as sent by the uplink and stored by the ingest (field names as in `Release`)."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)

    release_id: Identifier
    zone_id: Name
    tier: Tier
    period_start_s: Seconds
    period_end_s: Seconds
    complete: bool  # False for a period cut short by a shutdown
    below_k: bool  # shown as "< k": the noisy occupancy was below k, every value is withheld (0)
    occupancy: Count
    direction_counts: Annotated[dict[DirectionLabel, Count], Field(max_length=MAX_LABELS)]
    dwell_counts: Annotated[dict[DwellLabel, Count], Field(max_length=MAX_LABELS)]
    entries: Count
    exits: Count
    entries_today: Count  # a sum of released hourly values, so not withheld in a "< k" cell
    mechanism: Label
    epsilon_cell: Epsilon
    epsilon_track_day: Epsilon
    delta_track_day: Annotated[float, Field(ge=0.0, lt=1e-3)]  # 0 in the default mode; strict mode: the hard rule's δ
    epsilon_by_metric: Annotated[dict[Label, Epsilon], Field(max_length=MAX_LABELS)]
    k: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    privacy_unit: Identifier
    cells_per_day: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    window_s: Annotated[float, Field(gt=0.0, le=HOUR_S)]
    epsilon_spent_today: Epsilon
    daily_epsilon_cap: Epsilon
    mode: Identifier

    @model_validator(mode="after")
    def _consistent(self) -> WireRelease:
        try:
            periods = ContributionSettings(window_s=self.window_s)
            periods.validate()
        except ValueError as error:
            raise ValueError(str(error)) from None
        if self.period_end_s <= self.period_start_s:
            raise ValueError("period_end_s must be after period_start_s")
        length = self.period_end_s - self.period_start_s
        if self.tier == GROUP_TIER:  # strict mode: a group spans whole windows of one UTC day
            windows = length / self.window_s
            if length > DAY_S or not math.isclose(windows, round(windows), abs_tol=1e-6):
                raise ValueError(
                    f"a group's period must be whole windows of {self.window_s:g} s within a day, got {length:g} s"
                )
            if self.below_k or self.occupancy < self.k or self.mode != "strict":
                raise ValueError("a group (strict mode) is released only with at least k people, never as '< k'")
        elif not math.isclose(length, periods.period_s(self.tier), abs_tol=1e-3):
            raise ValueError(
                f"period_end_s - period_start_s must be {periods.period_s(self.tier):g} s for the {self.tier} tier, got {length:g} s"
            )
        elif self.delta_track_day:
            raise ValueError("a grid cell (default mode) is pure ε-DP: delta_track_day must be 0")
        if self.epsilon_cell > self.epsilon_track_day:
            raise ValueError("epsilon_cell exceeds epsilon_track_day (a track-day composes at least one cell)")
        if self.below_k and (
            self.occupancy
            or self.entries
            or self.exits
            or any(self.direction_counts.values())
            or any(self.dwell_counts.values())
        ):
            raise ValueError(
                'a cell shown as "< k" (below_k) carries no values: occupancy, histograms, entries and exits must be 0'
            )
        return self


# The privacy values every release states that must equal its device's registered configuration (registered at
# provisioning: `privacy-vision pki --device NAME --config params.yaml`; the ingest refuses a release that differs),
# each with the node parameter it states. The one list of them: a renamed field or parameter is changed here only.
REGISTERED_FIELDS: dict[str, tuple[str, str]] = {
    "epsilon_track_day": ("aggregator", "epsilon_per_track_day"),
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


def wire_from_release(release: Any) -> dict[str, Any]:
    """The aggregator's `Release` dataclass as a validated wire dict: the single Release → wire mapping.

    Today the wire names equal the dataclass fields; a renamed or reshaped field is mapped here.
    """
    return validate_release(dataclasses.asdict(release)).model_dump(mode="json")


def example_release(
    zone_id: str = "hall", period_start_s: float = 0.0, tier: str = "window", **overrides: Any
) -> dict[str, Any]:
    """A valid wire release of one cell as the aggregator makes it with the default settings (for tests,
    the load benchmark and the docs); only the hour tier carries histograms, entries and exits, and
    `below_k=True` withholds every value as the aggregator does. Overrides replace fields."""
    from privacy_vision.core.aggregator import (  # OpenDP: not needed to validate
        MECHANISM,
        PRIVACY_UNIT,
        STRICT_MECHANISM,
        AggregatorSettings,
    )

    contributions, settings = ContributionSettings(), AggregatorSettings()
    if tier == GROUP_TIER:  # strict mode: one group of 3 windows, its size and the cost of one group per track-day
        group = {
            "release_id": str(uuid.uuid4()),
            "zone_id": zone_id,
            "tier": tier,
            "period_start_s": period_start_s,
            "period_end_s": period_start_s + 3 * contributions.window_s,
            "complete": True,
            "below_k": False,
            "occupancy": 48,
            "direction_counts": {},
            "dwell_counts": {},
            "entries": 0,
            "exits": 0,
            "entries_today": 0,
            "mechanism": STRICT_MECHANISM,
            "epsilon_cell": settings.epsilon_per_track_day,
            "epsilon_track_day": settings.epsilon_per_track_day,
            "delta_track_day": settings.strict_delta,
            "epsilon_by_metric": {"test": 1.0, "occupancy": 1.0},
            "k": settings.k,
            "privacy_unit": PRIVACY_UNIT,
            "cells_per_day": 1,
            "window_s": contributions.window_s,
            "epsilon_spent_today": settings.epsilon_per_track_day,
            "daily_epsilon_cap": settings.daily_epsilon_cap,
            "mode": "strict",
        }
        return {**group, **overrides}
    cells_per_day = contributions.bound(tier)
    epsilons = settings.metric_epsilons(tier, cells_per_day)
    shown = 0 if overrides.get("below_k") else 1
    hourly = tier == "hour"
    release = {
        "release_id": str(uuid.uuid4()),
        "zone_id": zone_id,
        "tier": tier,
        "period_start_s": period_start_s,
        "period_end_s": period_start_s + contributions.period_s(tier),
        "complete": True,
        "below_k": not shown,
        "occupancy": 7 * shown,
        "direction_counts": {label: n * shown for label, n in zip(DIRECTION_LABELS, (3, 0, 4, 0, 0, 0, 0, 0, 0))}
        if hourly
        else {},
        "dwell_counts": {label: n * shown for label, n in zip(DWELL_LABELS, (5, 2, 0))} if hourly else {},
        "entries": 2 * shown * hourly,
        "exits": 1 * shown * hourly,
        "entries_today": 2 * hourly,
        "mechanism": MECHANISM,
        "epsilon_cell": sum(epsilons.values()),
        "epsilon_track_day": settings.epsilon_per_track_day,
        "delta_track_day": 0.0,
        "epsilon_by_metric": epsilons,
        "k": settings.k,
        "privacy_unit": PRIVACY_UNIT,
        "cells_per_day": cells_per_day,
        "window_s": contributions.window_s,
        "epsilon_spent_today": settings.epsilon_per_track_day,
        "daily_epsilon_cap": settings.daily_epsilon_cap,
        "mode": settings.mode,
    }
    release.update(overrides)
    return release
