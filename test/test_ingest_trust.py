"""An ingest that trusts nothing it can check (issue 20, finding 9): periods within a stated skew of receipt, stated
privacy values within plausible ranges and equal to the device's registered configuration, one value per cell, and
per-device quotas with 429 and a reason."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import yaml

from privacy_vision import cli
from privacy_vision.cloud.ingest_store import Quotas, ReleaseStore
from privacy_vision.cloud.trust import IngestPolicy
from privacy_vision.core.pki import PkiPaths, create_pki, read_pins
from privacy_vision.core.protocol import RequestRejected, canonical_release_bytes, load_key_file
from privacy_vision.core.release_schema import example_release, validate_release
from privacy_vision.core.uplink import Outbox, PinnedClient, Sender
from testkit.core import CONFIG
from testkit.ingest import IngestProcess, IngestThread

NOW = time.time()
RECENT = (NOW // 900 - 4) * 900  # an hour ago: a period any device may state


def post(url: str, pki: PkiPaths, release: dict, device_id: str = "dev-1", key: bytes | None = None):
    client = PinnedClient(url, read_pins(pki), str(pki.ca_cert), device_id, key or load_key_file(pki.device_key))
    try:
        result = client.send(canonical_release_bytes(release), int(time.time() * 1e6))
    finally:
        client.close()
    return result.status, json.loads(result.detail)


def stating(zone: str = "hall", **fields) -> dict:
    """A presence release of a recent window, with fields replaced."""
    return example_release(zone, RECENT, **fields)


REFUSED = {
    "a period in the year 5138": (example_release("hall", 10**11 - 900), "after receipt"),
    "a period 2 hours ahead": (example_release("hall", (NOW // 900 + 8) * 900), "after receipt"),
    "ε per presence-hour 1e-300": (stating(epsilon_unit=1e-300), "epsilon_unit 1e-300 of a presence release"),
    "ε per presence-hour 20,000": (stating(epsilon_unit=20000.0), "epsilon_unit 20000 of a presence release"),
    "ε per track-day 2,000 (events)": (
        example_release("hall", (RECENT // 86400 - 1) * 86400, tier="day", epsilon_unit=2000.0),
        "epsilon_unit 2000 of a events release",
    ),
    "k of a million": (stating(k=10**6), "k 1000000 is outside"),
    "more spent than the cap": (stating(epsilon_spent_today=7.0), "exceeds daily_epsilon_cap"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_finding_9_implausible_statements_are_refused(ingest, pki, case):
    """Each of these used to be stored (and served: a year-5138 row became the dashboard's newest day, ε 1e-300 hung
    its interval computation)."""
    release, reason = REFUSED[case]
    validate_release(release)  # the schema alone takes it
    status, answer = post(ingest.url, pki, release)
    assert status == 422 and reason in answer["reason"], answer
    assert ingest.store.count() == 0


def test_a_period_within_the_stated_skew_is_taken(ingest, pki):
    """A recording played faster than its rate runs ahead of the clock: up to an hour is accepted."""
    assert post(ingest.url, pki, example_release("hall", (NOW // 900 + 2) * 900))[0] == 200


def test_a_period_older_than_the_retention_is_refused(pki, tmp_path):
    server = IngestThread(
        pki, tmp_path / "i.sqlite", load_key_file(pki.device_key), policy=IngestPolicy(retention_s=86400)
    )
    try:
        status, answer = post(server.url, pki, example_release("hall", NOW - 3 * 86400))
        assert status == 422 and "retention of 1 days" in answer["reason"], answer
        assert post(server.url, pki, example_release("hall", RECENT))[0] == 200
    finally:
        server.stop()


def test_finding_9_one_value_per_span(ingest, pki):
    """The same cell posted twice with different values used to be stored twice."""
    first = stating()
    assert post(ingest.url, pki, first) == (200, {"status": "stored", "release_id": first["release_id"]})
    values = {"occupancy": {"value": 40.0, "low": 30.0, "high": 50.0}}
    second = stating(values=values)  # another release id, another value, the same span
    status, answer = post(ingest.url, pki, second)
    assert status == 422 and f"released already (release {first['release_id']})" in answer["reason"], answer
    half = stating(segment_start_s=RECENT + 300, coverage=2 / 3, complete=False)  # overlaps the released span
    assert post(ingest.url, pki, half)[0] == 422
    assert post(ingest.url, pki, first) == (200, {"status": "duplicate", "release_id": first["release_id"]})
    assert [r["values"]["occupancy"]["value"] for r in ingest.store.releases()] == [7.0]
    assert post(ingest.url, pki, example_release("hall", RECENT, tier="hour"))[0] == 200  # another tier: another cell
    # a restart splits a period into segments, each released once: the rest of an earlier window is a span of its own
    parts = [
        example_release(
            "hall", RECENT - 900, segment_start_s=start, segment_end_s=end, coverage=(end - start) / 900, complete=False
        )
        for start, end in ((RECENT - 900, RECENT - 600), (RECENT - 600, RECENT))
    ]
    assert [post(ingest.url, pki, part)[0] for part in parts] == [200, 200]


def test_finding_9_quotas_are_429_with_a_reason_and_the_device_retries(pki, tmp_path):
    """50,000 releases with 50,000 zone names from 8 devices used to be accepted."""
    policy = IngestPolicy(quotas=Quotas(max_zones=3, max_releases_per_day=5))
    server = IngestThread(pki, tmp_path / "i.sqlite", load_key_file(pki.device_key), policy=policy)
    try:
        for zone in ("a", "b", "c"):
            assert post(server.url, pki, stating(zone))[0] == 200
        status, answer = post(server.url, pki, stating("d"))
        assert status == 429 and "would have 4 zones; this ingest accepts 3" in answer["reason"], answer
        for start in (RECENT - 900, RECENT - 1800):
            assert post(server.url, pki, example_release("a", start))[0] == 200
        status, answer = post(server.url, pki, example_release("b", RECENT - 900))
        assert status == 429 and "sent 5 new releases today" in answer["reason"], answer
        # the device keeps what the quota refuses (429 is retried later, never dead-lettered)
        outbox = Outbox(tmp_path / "outbox.sqlite", 10)
        body = canonical_release_bytes(example_release("c", RECENT - 900))
        outbox.put(json.loads(body)["release_id"], body)
        client = PinnedClient(server.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
        sender = Sender(outbox, client, base_delay_s=0.01, max_delay_s=0.02)
        assert sender.step() > 0 and sender.dead_lettered == 0 and outbox.size() == 1
        assert "429" in sender.last_error
    finally:
        server.stop()
    assert server.store.count() == 5


def test_finding_9_stated_values_must_equal_the_registered_configuration(tmp_path):
    """A device running one ε could claim 0.001 (or any k) and be stored with that claim."""
    create_pki(tmp_path / "pki")
    pki = PkiPaths(tmp_path / "pki")
    params = str(CONFIG / "params.yaml")
    assert cli.main(["pki", "--out", str(pki.root), "--device", "cam-1", "--config", params]) == 0
    key = load_key_file(pki.device_key_for("cam-1"))
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), [], ("--devices", str(pki.devices)))
    day = (RECENT // 86400 - 1) * 86400
    try:
        assert post(ingest.url, pki, stating(), "cam-1", key)[0] == 200
        assert post(ingest.url, pki, example_release("hall", day, tier="day"), "cam-1", key)[0] == 200  # events
        status, answer = post(ingest.url, pki, stating("b", epsilon_unit=0.001), "cam-1", key)
        assert status == 422, answer
        registered = yaml.safe_load((CONFIG / "params.yaml").read_text())["aggregator"]["ros__parameters"]
        assert f"epsilon_unit: stated 0.001, registered {registered['epsilon_per_presence_hour']}" in answer["reason"]
        assert "privacy-vision pki --device cam-1 --config" in answer["reason"]
        status, answer = post(ingest.url, pki, stating("b", k=2), "cam-1", key)
        assert status == 422 and "k: stated 2, registered 5" in answer["reason"], answer
        # registered again with the new setting: taken without a restart
        again = ["pki", "--out", str(pki.root), "--device", "cam-1", "--config", params, "--set", "aggregator.k=2"]
        assert cli.main(again) == 0
        deadline = time.monotonic() + 10
        while post(ingest.url, pki, stating(f"z{time.monotonic()}", k=2), "cam-1", key)[0] != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        ingest.stop()


def test_a_store_made_before_the_spans_existed_knows_its_spans(store_target):
    """Upgrading the ingest: the releases already stored fill the spans table once, so none can be posted again."""
    store = ReleaseStore(store_target)
    first = validate_release(stating())
    store.accept("dev-1", "a" * 32, 1, first, first.model_dump_json(), NOW)
    store._db.execute("DELETE FROM spans")  # as before the table existed
    store._db.execute("DELETE FROM device_zones")
    store.close()
    store = ReleaseStore(store_target)
    try:
        other = validate_release(stating(values={"occupancy": {"value": 40.0, "low": 30.0, "high": 50.0}}))
        with pytest.raises(RequestRejected, match="released already"):
            store.accept("dev-1", "b" * 32, 2, other, other.model_dump_json(), NOW)
        assert store.accept("dev-1", "c" * 32, 3, first, first.model_dump_json(), NOW) == "duplicate"
        zones = store._one("SELECT COUNT(*) FROM device_zones", ())[0]
        assert zones == 1
    finally:
        store.close()


def test_retention_removes_the_cells_and_zones_of_what_it_deletes(tmp_path):
    store = ReleaseStore(tmp_path / "i.sqlite")
    old = validate_release(example_release("gone", NOW - 10 * 86400))
    store.accept("dev-1", "a" * 32, 1, old, old.model_dump_json(), NOW)
    assert store.purge_older_than(NOW - 5 * 86400) == 1
    with sqlite3.connect(tmp_path / "i.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 0
        assert db.execute("SELECT COUNT(*) FROM device_zones").fetchone()[0] == 0
    store.close()
