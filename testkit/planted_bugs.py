"""The pipeline audits (testkit/release_audit.py) as two functions, and the bugs they must catch, planted with
pytest's MonkeyPatch: shared by test/test_privacy_audit.py (which asserts) and bench/privacy_audit.py (which prints
the figures)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from privacy_vision.core.release import events as events_module
from privacy_vision.core.release import presence as presence_module
from privacy_vision.core.release import releaser as releaser_module
from privacy_vision.core.release.mechanisms import EventAccount, IntegerNoise
from privacy_vision.core.release.store import ReleaseStore
from testkit.release_audit import (
    audit_settings,
    epsilon_lower_bound,
    events_scope,
    presence_scope,
    run_day,
    staff_member,
    visitor,
)

DRAWS = 100_000


def presence_audit(draws: int = DRAWS) -> tuple[float, float]:
    """(empirical ε lower bound, stated ε) for the staff member's audited hour: the window tier's ε per presence-hour."""
    settings = audit_settings()
    without, with_person = run_day(None, settings), run_day(staff_member, settings)
    account = with_person.releaser.presence_account(settings[1].context)
    bound = epsilon_lower_bound(presence_scope(without), presence_scope(with_person), IntegerNoise, draws)
    return bound, account.epsilon_of_tier_per_presence_hour("window")


def events_audit(draws: int = DRAWS) -> tuple[float, float]:
    """(empirical ε lower bound, stated ε) for the visitor's day of events: ε per stitched-track-day times the bound
    instances the ledger charged (a respawn begins a new one)."""
    settings = audit_settings()
    without, with_person = run_day(None, settings), run_day(visitor, settings)
    account = with_person.releaser.event_account(settings[1].events.zones_per_day)
    instances = {key[1] for key in events_scope(with_person)}
    bound = epsilon_lower_bound(events_scope(without), events_scope(with_person), IntegerNoise, draws)
    assert account.epsilon_per_track_day == pytest.approx(settings[0].epsilon_events_per_track_day), (
        "the stated ε per stitched-track-day is the configured one"
    )
    return bound, account.epsilon_per_track_day * len(instances)


def without_the_presence_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(presence_module, "one_per_body", lambda bodies, radius_m: list(bodies))


def releasing_a_span_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ReleaseStore, "_overlaps", lambda self, key: False)


def doubling_the_per_lineage_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    original = events_module.EventCounter.observe

    def observe_with_twice_the_zones(self, stamp_s, observations):
        stated = self.settings
        self.settings = events_module.EventSettings(2 * stated.zones_per_day)
        try:
            return original(self, stamp_s, observations)
        finally:
            self.settings = stated  # what the totals report: the stated bound

    monkeypatch.setattr(events_module.EventCounter, "observe", observe_with_twice_the_zones)


def not_dividing_the_event_noise_by_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    class Undivided(EventAccount):
        def __init__(self, settings, zones_per_day):
            super().__init__(settings, zones_per_day)
            self.noise = {
                metric: IntegerNoise(noise.scale / self.distance[metric]) for metric, noise in self.noise.items()
            }

    monkeypatch.setattr(releaser_module, "EventAccount", Undivided)


# Each planted bug with the audit that must catch it.
PLANTED: dict[str, tuple[Callable[[pytest.MonkeyPatch], None], Callable[..., tuple[float, float]]]] = {
    "presence cap removed": (without_the_presence_cap, presence_audit),
    "a span released twice": (releasing_a_span_twice, presence_audit),
    "per-lineage bound doubled": (doubling_the_per_lineage_bound, events_audit),
    "event noise not divided by the bound": (not_dividing_the_event_noise_by_the_bound, events_audit),
}
