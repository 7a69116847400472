"""Pipeline-level neighbouring-input audit (testkit/release_audit.py): D against D plus one worst-case person, through
a respawn, an outage, a lifecycle cycle and a clock stepped back into an hour already released. The empirical ε lower
bound of the person's scope must stay within the stated guarantee, come near it (or the audit has no power), and
exceed it when a bug is planted: the presence cap removed, a span released twice, the per-lineage bound doubled,
the event noise not divided by the bound."""

from __future__ import annotations

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


def presence_audit() -> tuple[float, float]:
    """(empirical ε lower bound, stated ε) for the staff member's audited hour: the window tier's ε per presence-hour."""
    settings = audit_settings()
    without, with_person = run_day(None, settings), run_day(staff_member, settings)
    account = with_person.releaser.presence_account(settings[1].context)
    bound = epsilon_lower_bound(presence_scope(without), presence_scope(with_person), IntegerNoise, DRAWS)
    return bound, account.epsilon_of_tier_per_presence_hour("window")


def events_audit() -> tuple[float, float]:
    """(empirical ε lower bound, stated ε) for the visitor's day of events: ε per stitched-track-day times the bound
    instances the ledger charged (a respawn begins a new one)."""
    settings = audit_settings()
    without, with_person = run_day(None, settings), run_day(visitor, settings)
    account = with_person.releaser.event_account(settings[1].events.zones_per_day)
    instances = {key[1] for key in events_scope(with_person)}
    bound = epsilon_lower_bound(events_scope(without), events_scope(with_person), IntegerNoise, DRAWS)
    assert account.epsilon_per_track_day == pytest.approx(settings[0].epsilon_events_per_track_day), (
        "the stated ε per stitched-track-day is the configured one"
    )
    return bound, account.epsilon_per_track_day * len(instances)


def test_presence_guarantee_holds_through_respawn_outage_lifecycle_and_clock_step():
    bound, stated = presence_audit()
    assert bound <= stated, f"empirical ε lower bound {bound:.3f} exceeds the stated {stated:.3f} per presence-hour"
    assert bound >= 0.6 * stated, f"audit too weak: bound {bound:.3f} for the stated {stated:.3f}"


def test_event_guarantee_holds_per_stitched_track_day_and_bound_instance():
    bound, stated = events_audit()
    assert bound <= stated, f"empirical ε lower bound {bound:.3f} exceeds the stated {stated:.3f}"
    assert bound >= 0.6 * stated, f"audit too weak: bound {bound:.3f} for the stated {stated:.3f}"


def test_the_audit_fails_without_the_presence_cap(monkeypatch):
    monkeypatch.setattr(presence_module, "one_per_body", lambda bodies, radius_m: list(bodies))
    bound, stated = presence_audit()
    assert bound > stated


def test_the_audit_fails_when_a_span_is_released_twice(monkeypatch):
    monkeypatch.setattr(ReleaseStore, "_overlaps", lambda self, key: False)
    bound, stated = presence_audit()
    assert bound > stated


def test_the_audit_fails_when_the_per_lineage_bound_is_doubled(monkeypatch):
    original = events_module.EventCounter.observe

    def observe_with_twice_the_zones(self, stamp_s, observations):
        stated = self.settings
        self.settings = events_module.EventSettings(2 * stated.zones_per_day)
        try:
            return original(self, stamp_s, observations)
        finally:
            self.settings = stated  # what the totals report: the stated bound

    monkeypatch.setattr(events_module.EventCounter, "observe", observe_with_twice_the_zones)
    bound, stated = events_audit()
    assert bound > stated


def test_the_audit_fails_when_the_event_noise_is_not_divided_by_the_bound(monkeypatch):
    class Undivided(EventAccount):
        def __init__(self, settings, zones_per_day):
            super().__init__(settings, zones_per_day)
            self.noise = {
                metric: IntegerNoise(noise.scale / self.distance[metric]) for metric, noise in self.noise.items()
            }

    monkeypatch.setattr(releaser_module, "EventAccount", Undivided)
    bound, stated = events_audit()
    assert bound > stated
