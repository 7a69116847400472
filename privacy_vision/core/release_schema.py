"""The one release schema of the project: what a release looks like on the wire, in the ingest and in
its read API.

Why one strict model: the ingest used to check nine fields, so NaN, negative counts, ε < 0, `k: true`,
a 40 KB extra field or a 20 KB zone name were stored and served, and one such release blanked the
dashboard. Every number here is finite and ranged, every string bounded, no field is unknown, and a bool
is never taken for a number (strict mode). To add a field (release model v2: tier, period, "< k", ε per
cell and per track-day), add it to `WireRelease` and, if its name or shape differs from the aggregator's
`Release`, adapt `wire_from_release`: the only place that maps one to the other.
"""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

MAX_COUNT = 10**9
MAX_EPSILON = 10**6
MAX_TIME_S = 10**11  # about the year 5100: far beyond any real window, small enough for every database
MAX_LABELS = 32


def _utf8_encodable(value: str) -> str:
    """JSON escapes can carry lone surrogates, which no database accepts as text."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("string is not valid Unicode (lone surrogate)") from None
    return value


Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")]
Name = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"), AfterValidator(_utf8_encodable)]
Label = Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.:+<>\- ]+$")]
Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Epsilon = Annotated[float, Field(ge=0.0, le=MAX_EPSILON)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]
Seconds = Annotated[float, Field(ge=0.0, le=MAX_TIME_S)]


class WireRelease(BaseModel):
    """A zone-window release as sent by the uplink and stored by the ingest."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)

    release_id: Identifier
    zone_id: Name
    window_start_s: Seconds
    window_end_s: Seconds
    suppressed: bool
    occupancy: Count
    direction_counts: Annotated[dict[Label, Count], Field(max_length=MAX_LABELS)]
    dwell_counts: Annotated[dict[Label, Count], Field(max_length=MAX_LABELS)]
    entries: Count
    exits: Count
    cumulative_footfall_today: Count
    mechanism: Identifier
    epsilon: Epsilon
    delta: Probability
    k: Annotated[int, Field(ge=1, le=MAX_COUNT)]
    privacy_unit: Identifier
    window_s: Annotated[float, Field(gt=0.0, le=366 * 86400.0)]
    epsilon_spent_today: Epsilon
    daily_epsilon_cap: Epsilon
    footfall_epsilon_per_day: Epsilon
    epsilon_by_metric: Annotated[dict[Label, Epsilon], Field(max_length=MAX_LABELS)]
    suppression_delta: Probability
    release_threshold: Count

    @model_validator(mode="after")
    def _window_is_ordered(self) -> "WireRelease":
        if self.window_end_s < self.window_start_s:
            raise ValueError("window_end_s is before window_start_s")
        return self


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


def example_release(**overrides: Any) -> dict[str, Any]:
    """A valid wire release (for tests, the load benchmark and the docs); overrides replace fields."""
    import uuid

    release = {
        "release_id": str(uuid.uuid4()), "zone_id": "hall", "window_start_s": 0.0, "window_end_s": 60.0, "suppressed": False,
        "occupancy": 7, "direction_counts": {"E": 3, "N": 4}, "dwell_counts": {"short": 7}, "entries": 2, "exits": 1,
        "cumulative_footfall_today": 2, "mechanism": "discrete_laplace", "epsilon": 1.0, "delta": 0.0, "k": 5,
        "privacy_unit": "person-window", "window_s": 60.0, "epsilon_spent_today": 1.0, "daily_epsilon_cap": 10.0,
        "footfall_epsilon_per_day": 0.1, "epsilon_by_metric": {"occupancy": 0.4, "direction": 0.2, "dwell": 0.2, "entries": 0.1, "exits": 0.1},
        "suppression_delta": 1e-6, "release_threshold": 9,
    }
    release.update(overrides)
    return release
