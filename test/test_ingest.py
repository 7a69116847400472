"""The ingest over real TLS: distinct rejections that store nothing, pins checked before any byte,
SQLite and PostgreSQL stores, retention (the dashboard: test_dashboard.py)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from privacy_vision.cloud.ingest import RELEASES_PATH, server_ssl_context
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.pki import PkiPaths, read_pins
from privacy_vision.core.protocol import canonical_release_bytes, load_key_file, sign_request
from privacy_vision.core.release_schema import example_release, validate_release
from privacy_vision.core.uplink import PinMismatch, PinnedClient
from testkit.ingest import IngestThread


def release(zone: str = "hall", start: float = 0.0, **extra) -> dict:
    return example_release(zone, start, **extra)


@pytest.fixture
def ingest(pki, store_target):
    server = IngestThread(pki, store_target, load_key_file(pki.device_key))
    yield server
    server.stop()


def post(server: IngestThread, pki: PkiPaths, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=context, timeout=10)
    connection.request("POST", RELEASES_PATH, body=body, headers={**headers, "Content-Type": "application/json"})
    response = connection.getresponse()
    result = response.status, json.loads(response.read())
    connection.close()
    return result


def signed(
    pki: PkiPaths, body: bytes, sequence: int, timestamp: float | None = None, key: bytes | None = None
) -> dict[str, str]:
    return sign_request(
        key or load_key_file(pki.device_key),
        "POST",
        RELEASES_PATH,
        "dev-1",
        body,
        int(timestamp if timestamp is not None else time.time()),
        sequence,
    ).as_dict()


def test_each_bad_request_has_its_own_status_and_stores_nothing(ingest, pki):
    body = canonical_release_bytes(release())
    cases = [
        ("tampered body", body.replace(b'"value":7.0', b'"value":9.0'), signed(pki, body, 1), 400, "tampered"),
        ("wrong key", body, signed(pki, body, 2, key=os.urandom(32)), 401, "bad signature"),
        ("stale timestamp", body, signed(pki, body, 3, timestamp=time.time() - 301), 408, "timestamp"),
        ("unknown device", body, {**signed(pki, body, 4), "X-PV-Device": "dev-9"}, 401, "unknown device"),
        ("no signature", body, {}, 401, "unknown device"),
        ("not a release", b'{"hello": 1}', signed(pki, b'{"hello": 1}', 5), 422, "release_id"),
    ]
    for name, payload, headers, status, reason in cases:
        got_status, answer = post(ingest, pki, payload, headers)
        assert (got_status, answer["status"]) == (status, "rejected"), name
        assert reason in answer["reason"], (name, answer)
    assert ingest.store.count() == 0
    good = signed(pki, body, 10)
    assert post(ingest, pki, body, good) == (200, {"status": "stored", "release_id": json.loads(body)["release_id"]})
    status, answer = post(ingest, pki, body, good)  # the very same request again: a replay
    assert status == 409 and "nonce" in answer["reason"]
    status, answer = post(ingest, pki, body, signed(pki, body, 9))  # fresh nonce, old sequence
    assert status == 409 and answer["last_sequence"] == 10
    assert ingest.store.count() == 1


def test_store_is_idempotent_and_filters(store_target):
    store = ReleaseStore(store_target)
    first, second = release("a", 0.0), release("b", 1200.0)
    assert store.accept("dev-1", "n1", 1, validate_release(first), json.dumps(first), time.time()) == "stored"
    assert store.accept("dev-1", "n2", 2, validate_release(first), json.dumps(first), time.time()) == "duplicate"
    assert store.accept("dev-1", "n3", 3, validate_release(second), json.dumps(second), time.time()) == "stored"
    assert [r["zone_id"] for r in store.releases()] == ["b", "a"]  # newest period first
    assert [r["zone_id"] for r in store.releases(zone_id="b")] == ["b"]
    assert [r["zone_id"] for r in store.releases(since_s=1000.0)] == ["b"]
    assert store.purge_older_than(1000.0) == 1  # retention: "a" (a 15-minute window) ended at 900 s
    assert store.count() == 1
    store.close()


class RecordingTlsServer:
    """A TLS server with the ingest's certificate that records every application byte it receives."""

    def __init__(self, pki: PkiPaths) -> None:
        self.received = bytearray()
        self.handshakes = 0
        context = server_ssl_context(str(pki.server_cert), str(pki.server_key))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._context = context
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connection, _ = self._listener.accept()
        with self._context.wrap_socket(connection, server_side=True) as tls:
            self.handshakes += 1
            tls.settimeout(3)
            try:
                while chunk := tls.recv(65536):
                    self.received += chunk
            except (OSError, ssl.SSLError):
                pass

    def join(self) -> None:
        self._thread.join(5)
        self._listener.close()


def test_wrong_pin_fails_closed_before_any_request_byte(pki):
    server = RecordingTlsServer(pki)
    client = PinnedClient(
        f"https://127.0.0.1:{server.port}{RELEASES_PATH}",
        ["d3Jvbmcgb2YgY291cnNlIHRoaXMgaXMgbm90IGEgcGlu"],
        str(pki.ca_cert),
        "dev-1",
        load_key_file(pki.device_key),
    )
    with pytest.raises(PinMismatch):
        client.send(canonical_release_bytes(release()), sequence=1)
    server.join()
    assert server.handshakes == 1  # the TLS handshake completed ...
    assert bytes(server.received) == b""  # ... and not one byte of request or payload followed


def test_right_pin_sends_through_the_same_recorder(pki):
    server = RecordingTlsServer(pki)
    client = PinnedClient(
        f"https://127.0.0.1:{server.port}{RELEASES_PATH}",
        read_pins(pki),
        str(pki.ca_cert),
        "dev-1",
        load_key_file(pki.device_key),
        timeout_s=1,
    )
    with pytest.raises((OSError, http.client.HTTPException)):
        client.send(canonical_release_bytes(release()), sequence=1)  # the recorder never answers
    server.join()
    assert bytes(server.received).startswith(b"POST /v1/releases")  # so the empty capture above is meaningful


def test_rotating_to_the_backup_key_keeps_devices_working(pki, tmp_path):
    rotated = PkiPaths(tmp_path / "rotated")
    rotated.root.mkdir()
    for name in ("ca.crt", "device.key", "pins.txt"):
        (rotated.root / name).write_bytes((pki.root / name).read_bytes())
    (rotated.root / "device.key").chmod(0o600)
    (rotated.root / "server.crt").write_bytes(pki.backup_cert.read_bytes())
    (rotated.root / "server.key").write_bytes(pki.backup_key.read_bytes())
    (rotated.root / "server.key").chmod(0o600)  # the ingest refuses a TLS key others can read
    server = IngestThread(rotated, str(tmp_path / "ingest.sqlite"), load_key_file(pki.device_key))
    try:
        result = PinnedClient(
            server.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key)
        ).send(canonical_release_bytes(release()), sequence=1)
        assert result.delivered
        with pytest.raises(PinMismatch):  # a device that pinned only the retired key refuses the new one
            PinnedClient(server.url, read_pins(pki)[:1], str(pki.ca_cert), "dev-1", load_key_file(pki.device_key)).send(
                canonical_release_bytes(release()), sequence=2
            )
    finally:
        server.stop()


def test_the_ingest_validates_v2_releases_without_the_device_stack():
    """The schema reads tiers and labels from core/contributions.py; the cloud side must not pull in
    OpenCV, Shapely, OpenDP, NumPy or ROS for that."""
    code = "import sys, privacy_vision.cloud.ingest; print(sorted({'cv2', 'shapely', 'opendp', 'numpy', 'rclpy'} & set(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


def handshake(server: IngestThread, pki: PkiPaths, ciphers: str) -> str:
    """The cipher a TLS 1.2 client offering only `ciphers` gets, or the handshake's error."""
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    try:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            return tls.cipher()[0]
    except ssl.SSLError as error:
        return f"refused: {error.reason}"


def test_tls_1_2_offers_no_cbc_suite(pki, tmp_path):
    """Low: TLS 1.2 still offered CBC suites."""
    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    try:
        assert handshake(server, pki, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384").startswith("refused")
        assert handshake(server, pki, "ECDHE-ECDSA-AES128-GCM-SHA256") == "ECDHE-ECDSA-AES128-GCM-SHA256"
    finally:
        server.stop()


def test_the_server_header_names_no_versions(pki, tmp_path):
    """Low: `Server: Python/3.11 aiohttp/3.x`, on every answer, also to a request aiohttp cannot parse."""
    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    context = ssl.create_default_context(cafile=str(pki.ca_cert))
    answers = []
    try:
        for request in (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
            with (
                socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(request)
                answers.append(tls.recv(65536).decode(errors="replace"))
    finally:
        server.stop()
    assert answers[0].startswith("HTTP/1.1 200") and answers[1].startswith("HTTP/1.0 400"), answers
    for answer in answers:
        assert "\r\nServer: privacy_vision-ingest\r\n" in answer and "aiohttp" not in answer and "Python" not in answer
