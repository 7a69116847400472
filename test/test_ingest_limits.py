"""Connection limits and timeouts of the ingest (issue 13, finding 8: 1,100 slow TLS connections under a
1,024 descriptor limit stalled every valid POST for 15 s and wrote 43 MB of tracebacks in 30 s).
The ingest runs as its own process, as deployed, so its whole output is what the test measures."""

from __future__ import annotations

import asyncio
import http.client
import socket
import ssl
import statistics
import threading
import time

from privacy_vision.cloud.ingest import RELEASES_PATH
from privacy_vision.cloud.ingest_server import ServerLimits
from privacy_vision.core.pki import PkiPaths, read_pins
from privacy_vision.core.protocol import canonical_release_bytes, load_key_file, sign_request
from privacy_vision.core.release_schema import example_release
from privacy_vision.core.uplink import PinnedClient
from testkit.ingest import IngestProcess, IngestThread, device_key, slow_connections


def post_on_a_new_connection(pki: PkiPaths, url: str, sequence: int) -> tuple[bool, float]:
    client = PinnedClient(url, read_pins(pki), str(pki.ca_cert), "dev-1", device_key(pki, "dev-1"), timeout_s=10)
    started = time.perf_counter()
    result = client.send(canonical_release_bytes(example_release("hall", 900.0 * sequence)), sequence)
    client.close()
    return result.delivered, time.perf_counter() - started


class Attack:
    """The slow-connection attack in a thread with its own event loop."""

    def __init__(self, port: int, connections: int, interval_s: float) -> None:
        self.counts: dict[str, int] = {}
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(slow_connections("127.0.0.1", port, connections, interval_s, self._stop, self.counts),),
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


def test_a_device_posts_quickly_through_hundreds_of_slow_connections_and_the_log_stays_small(pki, tmp_path):
    """300 slow connections against an ingest limited to 256 descriptors (so to 192 connections): each
    new one evicts the least recently active idle one, so the device's fresh connection (TLS handshake
    included) is served at once, and the log gets a summary line per interval, not a traceback per
    connection. Before the limits: accept() failed with EMFILE in a loop, a traceback each time."""
    log = tmp_path / "ingest.log"
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), ["dev-1"], nofile=256, log=log)
    try:
        attack = Attack(ingest.port, 300, interval_s=0.5)
        deadline = time.monotonic() + 60
        while attack.counts.get("opened", 0) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert attack.counts["opened"] >= 300, attack.counts  # every attacking connection got a handshake, ...
        results = [post_on_a_new_connection(pki, ingest.url, sequence) for sequence in range(1, 21)]
        attack.stop()
    finally:
        ingest.stop()
    output = log.read_text()
    assert attack.counts["closed by the server"] >= 200, attack.counts  # ... and most were closed again for newer ones
    assert all(delivered for delivered, _ in results)
    seconds = [elapsed for _, elapsed in results]
    assert statistics.median(seconds) < 0.5 and max(seconds) < 2.0, seconds
    assert "connections: at most 192" in output and "evicted" in output and "Traceback" not in output, output[-3000:]
    assert len(output) < 5000 and len(output.splitlines()) < 40, output[-3000:]


def test_slow_headers_silent_connections_and_stalled_handshakes_are_closed_in_time(pki, tmp_path):
    ingest = IngestProcess(
        pki, str(tmp_path / "ingest.sqlite"), ["dev-1"], ("--idle-timeout", "2", "--handshake-timeout", "1")
    )
    context = ssl.create_default_context(cafile=str(pki.ca_cert))

    def seconds_until_closed(connection: socket.socket, trickle: bool) -> float:
        started = time.monotonic()
        connection.settimeout(0.5)
        if trickle:
            connection.sendall(b"POST /v1/releases HTTP/1.1\r\n")
        while time.monotonic() - started < 20:
            try:
                if connection.recv(1024) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                if trickle:
                    connection.sendall(b"X-Slow: 1\r\n")  # progress, but never the end of the headers
            except (ConnectionResetError, ssl.SSLError):
                return time.monotonic() - started
        return float("inf")

    try:
        slow = seconds_until_closed(
            context.wrap_socket(socket.create_connection(("127.0.0.1", ingest.port)), server_hostname="localhost"), True
        )
        silent = seconds_until_closed(
            context.wrap_socket(socket.create_connection(("127.0.0.1", ingest.port)), server_hostname="localhost"),
            False,
        )
        no_handshake = seconds_until_closed(socket.create_connection(("127.0.0.1", ingest.port)), False)
    finally:
        ingest.stop()
    assert 1.5 < slow < 5.0, slow  # the header deadline (--idle-timeout 2), though bytes keep coming
    assert 1.5 < silent < 5.0, silent
    assert 0.5 < no_handshake < 4.0, no_handshake  # --handshake-timeout 1


def test_a_body_must_follow_signed_headers_in_time_and_unsigned_ones_are_not_read(pki, tmp_path):
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), ["dev-1"], ("--body-timeout", "1"))
    body = canonical_release_bytes(example_release())

    def answer_to_a_stalled_body(headers: dict[str, str]) -> tuple[int, str, float]:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", ingest.port, context=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=10
        )
        connection.putrequest("POST", RELEASES_PATH)
        for name, value in {**headers, "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
            connection.putheader(name, value)
        connection.endheaders(body[:10])  # the rest never comes
        started = time.monotonic()
        response = connection.getresponse()
        result = response.status, response.read().decode(), time.monotonic() - started
        connection.close()
        return result

    try:
        signed = sign_request(
            device_key(pki, "dev-1"), "POST", RELEASES_PATH, "dev-1", body, int(time.time()), 1
        ).as_dict()
        status, reason, waited = answer_to_a_stalled_body(signed)
        assert status == 408 and "body not received" in reason and 0.8 < waited < 5.0, (status, reason, waited)
        status, reason, waited = answer_to_a_stalled_body({**signed, "X-PV-Signature": "0" * 64})
        assert status == 401 and "bad signature" in reason and waited < 0.8, (status, reason, waited)
    finally:
        ingest.stop()


def test_a_device_whose_idle_connection_was_closed_sends_again_without_a_failure(pki, tmp_path):
    """The idle timeout closes a device's kept-alive connection between releases; the uplink's next
    POST on it fails before any answer and is sent once more on a new connection (no backoff, no ERROR)."""
    server = IngestThread(
        pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key), limits=ServerLimits(idle_timeout_s=0.5)
    )
    client = PinnedClient(server.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
    try:
        assert client.send(canonical_release_bytes(example_release("hall", 0.0)), 1).delivered
        time.sleep(1.5)  # the server closes the idle connection
        assert client.send(canonical_release_bytes(example_release("hall", 900.0)), 2).delivered
        assert server.store.count() == 2
    finally:
        client.close()
        server.stop()
