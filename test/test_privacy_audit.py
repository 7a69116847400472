"""Pipeline-level neighbouring-input audit (testkit/release_audit.py): D against D plus one worst-case person, through
a respawn, an outage, a lifecycle cycle and a clock stepped back into an hour already released. The empirical ε lower
bound of the person's scope must stay within the stated guarantee, come near it (or the audit has no power), and
exceed it when a bug is planted (testkit/planted_bugs.py): the presence cap removed, a span released twice, the
per-lineage bound doubled, the event noise not divided by the bound."""

from __future__ import annotations

import pytest

from testkit.planted_bugs import PLANTED, events_audit, presence_audit


@pytest.mark.parametrize("audit", [presence_audit, events_audit], ids=["presence-hour", "stitched-track-day"])
def test_the_guarantee_holds_through_respawn_outage_lifecycle_and_clock_step(audit):
    bound, stated = audit()
    assert bound <= stated, f"empirical ε lower bound {bound:.3f} exceeds the stated {stated:.3f}"
    assert bound >= 0.6 * stated, f"audit too weak: bound {bound:.3f} for the stated {stated:.3f}"


@pytest.mark.parametrize("bug", PLANTED, ids=list(PLANTED))
def test_the_audit_fails_when_a_bug_is_planted(bug, monkeypatch):
    plant, audit = PLANTED[bug]
    plant(monkeypatch)
    bound, stated = audit()
    assert bound > stated, f"{bug}: empirical ε lower bound {bound:.3f} within the stated {stated:.3f}"
