"""Uplink ↔ ingest over real TLS on loopback: pins, signatures, replays, outbox retries."""

from __future__ import annotations

import json
import os
import time

import pytest

from privacy_vision.cloud.ingest import RELEASES_PATH
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.pki import PkiPaths, create_pki, read_pins
from privacy_vision.core.protocol import (
    KeyFileError,
    RequestRejected,
    canonical_release_bytes,
    load_key_file,
    sign_request,
    verify_request,
)
from privacy_vision.core.release_schema import example_release, validate_release
from privacy_vision.core.uplink import Outbox, PinMismatch, PinnedClient, Sender
from testkit.ingest import IngestThread


@pytest.fixture
def pki(tmp_path):
    create_pki(tmp_path / "pki")
    return PkiPaths(tmp_path / "pki")


@pytest.fixture
def ingest(pki, tmp_path):
    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    yield server
    server.stop()


def release(zone: str = "hall") -> dict:
    return example_release(zone_id=zone)


def client_for(server: IngestThread, pki: PkiPaths, pins=None, key=None) -> PinnedClient:
    return PinnedClient(
        server.url, pins or read_pins(pki), str(pki.ca_cert), "dev-1", key or load_key_file(pki.device_key)
    )


def test_signed_release_is_stored_once(ingest, pki):
    client = client_for(ingest, pki)
    body = canonical_release_bytes(release())
    first = client.send(body, sequence=1)
    assert first.delivered and json.loads(first.detail)["status"] == "stored"
    again = client.send(body, sequence=2)  # a retry after a lost acknowledgement: same bytes, new signature
    assert again.delivered and json.loads(again.detail)["status"] == "duplicate"
    assert len(ingest.store.releases()) == 1


def test_wrong_pin_sends_nothing(ingest, pki):
    client = client_for(ingest, pki, pins=["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="])
    with pytest.raises(PinMismatch, match="matches none of the configured pins"):
        client.send(canonical_release_bytes(release()), sequence=1)
    time.sleep(0.2)
    assert ingest.requests == 0 and ingest.store.releases() == []


def test_backup_pin_alone_does_not_match_the_live_key(ingest, pki):
    backup = read_pins(pki)[1]
    with pytest.raises(PinMismatch):
        client_for(ingest, pki, pins=[backup]).send(canonical_release_bytes(release()), sequence=1)


def test_wrong_key_is_rejected(ingest, pki):
    result = client_for(ingest, pki, key=os.urandom(32)).send(canonical_release_bytes(release()), sequence=1)
    assert result.status == 401 and not result.delivered
    assert ingest.store.releases() == []


def test_tampering_staleness_and_replay_are_rejected():
    key = os.urandom(32)
    body = canonical_release_bytes(release())
    now = time.time()
    headers = sign_request(key, "POST", RELEASES_PATH, "dev-1", body, int(now), 1).as_dict()
    assert verify_request(key, "POST", RELEASES_PATH, headers, body, now).sequence == 1
    with pytest.raises(RequestRejected) as tampered:
        verify_request(key, "POST", RELEASES_PATH, headers, body.replace(b"7", b"8"), now)
    assert tampered.value.status == 400
    with pytest.raises(RequestRejected) as stale:
        verify_request(key, "POST", RELEASES_PATH, headers, body, now + 301)
    assert stale.value.status == 408
    with pytest.raises(RequestRejected) as other_path:
        verify_request(key, "POST", "/v1/other", headers, body, now)
    assert other_path.value.status == 401


def test_store_rejects_reused_nonce_and_old_sequence(tmp_path):
    store = ReleaseStore(tmp_path / "s.sqlite")
    item = release()
    body = json.dumps(item)
    assert store.accept("dev-1", "n1", 5, validate_release(item), body, time.time()) == "stored"
    for nonce, sequence in (("n1", 6), ("n2", 5), ("n3", 4)):
        with pytest.raises(RequestRejected) as rejected:
            store.accept("dev-1", nonce, sequence, validate_release(item), body, time.time())
        assert rejected.value.status == 409
    assert len(store.releases()) == 1


def test_outbox_resends_identical_bytes_after_an_outage(pki, tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite", max_items=100)
    bodies = [canonical_release_bytes(release(f"z{i}")) for i in range(5)]
    for body in bodies:
        assert outbox.put(json.loads(body)["release_id"], body)
    assert not outbox.put(json.loads(bodies[0])["release_id"], bodies[0])  # same release twice: stored once
    down = PinnedClient(
        "https://127.0.0.1:9/v1/releases",
        read_pins(pki),
        str(pki.ca_cert),
        "dev-1",
        load_key_file(pki.device_key),
        timeout_s=1,
    )
    sender = Sender(outbox, down, base_delay_s=0.01, max_delay_s=0.02)
    assert sender.drain_once() > 0 and outbox.size() == 5 and "ConnectionRefused" in sender.last_error
    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    try:
        sender.client = client_for(server, pki)
        assert sender.drain_once() == 0.0
        assert outbox.size() == 0
        stored = server.store.releases()
        assert sorted(canonical_release_bytes(r) for r in stored) == sorted(bodies)
    finally:
        server.stop()


def test_key_file_must_be_private(tmp_path):
    path = tmp_path / "device.key"
    path.write_text(os.urandom(32).hex())
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_key_file(path)
    os.chmod(path, 0o600)
    assert len(load_key_file(path)) == 32
    path.write_text("abcd")
    with pytest.raises(KeyFileError, match="at least 32"):
        load_key_file(path)
