"""Several ingest processes on one database (the fleet case): replay protection holds across them. The
same signed request (same nonce) sent to two processes at the same moment is stored once and answered
409 once; so is a second request with the same sequence. SQLite (one file) and PostgreSQL."""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import time

from privacy_vision.cloud.ingest import RELEASES_PATH
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.protocol import RequestRejected, canonical_release_bytes, sign_request
from privacy_vision.core.release_schema import example_release, validate_release
from testkit.ingest import IngestProcess, device_key


def at_once(*calls):
    """Run the calls in threads released together; their results in order (an exception is a result)."""
    barrier, results = threading.Barrier(len(calls)), [None] * len(calls)

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # kept as the result: the test asserts on it
            results[index] = error

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_stores_race_on_the_same_nonce_and_sequence_and_exactly_one_wins(store_target):
    """Two connections, as two processes have: 25 rounds of the same request at the same moment, then
    25 rounds of different nonces with the same sequence. Before: a SELECT then an INSERT, which both
    could pass (PostgreSQL then raised a unique violation, a 500)."""
    first, second = ReleaseStore(store_target), ReleaseStore(store_target)
    try:
        for round_ in range(1, 26):
            item = validate_release(example_release("hall", 900.0 * round_))
            body = item.model_dump_json()
            # at_once() calls the lambdas within this iteration, so the loop variables they read are this round's
            outcomes = at_once(
                *(
                    lambda store=store: store.accept("dev-1", f"{round_:032x}", round_, item, body, time.time())  # noqa: B023
                    for store in (first, second)
                )
            )
            assert sorted(map(_outcome, outcomes)) == ["409 nonce", "stored"], outcomes
        for round_ in range(26, 51):
            item = validate_release(example_release("hall", 900.0 * round_))
            body = item.model_dump_json()
            outcomes = at_once(
                *(
                    lambda store=store, nonce=nonce: store.accept("dev-1", nonce, round_, item, body, time.time())  # noqa: B023
                    for store, nonce in ((first, f"a{round_:031x}"), (second, f"b{round_:031x}"))
                )
            )
            assert sorted(map(_outcome, outcomes)) == ["409 sequence", "stored"], outcomes
        assert first.count() == 50
    finally:
        first.close()
        second.close()


def _outcome(result) -> str:
    if isinstance(result, RequestRejected):
        return f"{result.status} {'nonce' if 'nonce' in result.reason else 'sequence'}"
    return result if isinstance(result, str) else repr(result)


def test_the_same_signed_request_to_two_ingest_processes_is_accepted_once(pki, store_target, tmp_path):
    ingests = [IngestProcess(pki, store_target, ["dev-1"]) for _ in range(2)]
    key = device_key(pki, "dev-1")

    def post(port: int, body: bytes, headers: dict[str, str]) -> int:
        connection = http.client.HTTPSConnection(
            "127.0.0.1", port, context=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=30
        )
        connection.request("POST", RELEASES_PATH, body=body, headers={**headers, "Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        return response.status if response.status == 200 else (response.status, answer["reason"])

    try:
        for sequence in range(1, 11):
            body = canonical_release_bytes(example_release("hall", 900.0 * sequence))
            headers = sign_request(key, "POST", RELEASES_PATH, "dev-1", body, int(time.time()), sequence).as_dict()
            statuses = at_once(*(lambda port=ingest.port: post(port, body, headers) for ingest in ingests))  # noqa: B023 - called in this iteration
            assert sorted(statuses, key=str) == sorted([200, (409, "replayed request: nonce already used")], key=str), (
                statuses
            )
    finally:
        for ingest in ingests:
            ingest.stop()
    store = ReleaseStore(store_target)
    assert store.count() == 10
    store.close()
