"""Hostile input to the ingest (issue 13, findings 5 and 6): every client fault is a 4xx with a reason,
never a 500, and nothing invalid is stored; a hypothesis-driven request fuzz test holds that in general."""

from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import ssl
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy_vision.cloud.devices import DeviceRegistry
from privacy_vision.cloud.ingest import RELEASES_PATH, build_app
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.pki import PkiPaths, read_pins
from privacy_vision.core.protocol import (
    HEADER_BODY_SHA256,
    HEADER_SEQUENCE,
    canonical_release_bytes,
    highest_sequence,
    load_key_file,
    sign_request,
)
from privacy_vision.core.release_schema import InvalidRelease, example_release, validate_release
from privacy_vision.core.uplink import DeliveryResult, Outbox, PinnedClient, Sender
from testkit.ingest import IngestThread

_sequence = iter(range(1, 10**9))


def post_raw(
    server: IngestThread,
    pki: PkiPaths,
    body: bytes,
    header_overrides: dict[str, bytes] | None = None,
    sequence: int | None = None,
) -> tuple[int, str]:
    """A signed POST over real TLS; overrides go out as raw header bytes (http.client passes bytes as is)."""
    sequence = sequence or next(_sequence)
    headers = sign_request(
        load_key_file(pki.device_key), "POST", RELEASES_PATH, "dev-1", body, int(time.time()), sequence
    ).as_dict()
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=10
    )
    connection.putrequest("POST", RELEASES_PATH)
    for name, value in {
        **headers,
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **(header_overrides or {}),
    }.items():
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    result = response.status, response.read().decode(errors="replace")
    connection.close()
    return result


def json_with(**fields) -> bytes:
    """A release with fields replaced, serialised the way a hostile client may (NaN and Infinity allowed)."""
    return json.dumps(example_release(**fields), allow_nan=True).encode()


def json_with_value(tier: str = "window", metric: str = "occupancy", **estimate) -> bytes:
    """A release whose one value (and interval) is replaced."""
    release = example_release(tier=tier)
    release["values"][metric] = {**release["values"][metric], **estimate}
    return json.dumps(release, allow_nan=True).encode()


FINDING_5 = {
    "NaN occupancy": (json_with_value(value=math.nan), "values.occupancy.value"),
    "Infinity epsilon": (json_with(epsilon_cell=math.inf), "epsilon_cell"),
    "NaN period start": (json_with(period_start_s=math.nan), "period_start_s"),
    "negative interval": (json_with_value(low=-3.0), "values.occupancy.low"),
    "negative epsilon": (json_with(epsilon_unit=-0.5), "epsilon_unit"),
    "bool as k": (json_with(k=True), "k"),
    "40 KB extra image field": (json_with(image="A" * 40_000), "image"),
    "20 KB zone name": (json_with(zone_id="z" * 20_000), "zone_id"),
    "interval upside down": (json_with_value(tier="hour", metric="heading.E", low=5.0, high=1.0), "low"),
    "missing field": (json.dumps({k: v for k, v in example_release().items() if k != "k"}).encode(), "k"),
    # release model v3
    "unknown tier": (json.dumps({**example_release(), "tier": "week"}).encode(), "tier"),
    "string for a bool": (json_with(below_k="false"), "below_k"),
    "period end before start": (json_with(period_start_s=900.0, period_end_s=0.0), "period"),
    "hour cell 60 s long": (
        json_with(tier="hour", period_end_s=60.0, segment_end_s=60.0),
        "period_end_s - period_start_s must be 3600",
    ),
    "a segment outside its period": (json_with(segment_end_s=5000.0), "segment must lie inside the period"),
    "coverage above 1": (json_with(coverage=1.5), "coverage"),
    "complete with a gap": (json_with(coverage=0.5), "complete must be true exactly when coverage is 1"),
    "unknown heading": (
        json_with_value(tier="hour", metric="heading.E").replace(b"heading.E", b"heading.UP"),
        "heading.UP",
    ),
    "an event metric on presence": (
        json_with(values={"footfall": {"value": 3.0, "low": 0.0, "high": 9.0}}),
        "footfall",
    ),
    "unknown privacy unit": (json_with(privacy_unit="track-day"), "privacy_unit"),
    # strict mode
    "a group in the default mode": (
        json.dumps(example_release(tier="group", mode="default")).encode(),
        "strict mode only",
    ),
    "a group not made of whole windows": (
        json.dumps(example_release(tier="group", period_end_s=1000.0, segment_end_s=1000.0)).encode(),
        "whole windows",
    ),
    "δ on a grid cell": (json_with(delta=1e-6), "delta"),
    "δ of 0.5": (json.dumps(example_release(tier="group", delta=0.5)).encode(), "delta"),
}


@pytest.mark.parametrize("case", list(FINDING_5))
def test_finding_5_invalid_release_is_422_with_reason_and_not_stored(ingest, pki, case):
    body, field = FINDING_5[case]
    status, detail = post_raw(ingest, pki, body)
    assert status == 422, (status, detail)
    assert field in json.loads(detail)["reason"]
    assert ingest.store.count() == 0


FINDING_6 = {
    "non-ASCII content hash": (
        canonical_release_bytes(example_release()),
        {HEADER_BODY_SHA256: "é".encode() * 32},
        400,
    ),
    "sequence 2**63": (canonical_release_bytes(example_release()), {HEADER_SEQUENCE: str(2**63).encode()}, 400),
    "JSON nested 30,000 deep": (b"[" * 30_000 + b"]" * 30_000, {}, 422),
    "not UTF-8": (b'{"zone_id": "\xff\xfe"}', {}, 422),
}


@pytest.mark.parametrize("case", list(FINDING_6))
def test_finding_6_client_faults_are_4xx_never_500(ingest, pki, case):
    body, overrides, expected = FINDING_6[case]
    status, detail = post_raw(ingest, pki, body, overrides)
    assert status == expected, (status, detail)
    assert json.loads(detail)["reason"]
    assert ingest.store.count() == 0


@pytest.mark.parametrize("tier", ["window", "hour", "day", "group"])
def test_a_valid_release_still_goes_through(ingest, pki, tier):
    status, detail = post_raw(ingest, pki, canonical_release_bytes(example_release(tier=tier)))
    assert status == 200 and json.loads(detail)["status"] == "stored"


def device_sender(ingest: IngestThread, pki: PkiPaths, tmp_path, releases: int) -> Sender:
    """The device's own uplink core (its outbox and pinned client) with `releases` queued."""
    outbox = Outbox(tmp_path / "outbox.sqlite", 100)
    for index in range(releases):
        body = canonical_release_bytes(example_release(f"zone-{index}"))
        outbox.put(json.loads(body)["release_id"], body)
    client = PinnedClient(ingest.url, read_pins(pki), str(pki.ca_cert), "dev-1", load_key_file(pki.device_key))
    return Sender(outbox, client, base_delay_s=0.01, max_delay_s=0.02)


def test_finding_8_a_sequence_past_the_window_is_refused_and_the_device_goes_on(ingest, pki, tmp_path):
    """One signed POST with sequence 2**63 - 1 used to be accepted, after which the device's own uplink failed forever
    ("Python int too large to convert to SQLite INTEGER"), across restarts."""
    body = canonical_release_bytes(example_release("hostile"))
    status, detail = post_raw(ingest, pki, body, sequence=2**63 - 1)
    assert status == 400 and "the highest accepted now" in json.loads(detail)["reason"], detail
    status, _ = post_raw(ingest, pki, body, sequence=highest_sequence(time.time()) - 10)  # the most one may do
    assert status == 200
    sender = device_sender(ingest, pki, tmp_path, 3)
    for _ in range(5):
        sender.step()  # the device's counter is behind the hostile one: a 409 names it, and the device moves past it
    assert sender.delivered == 3 and sender.outbox.size() == 0, sender.last_error


def test_finding_8_a_sequence_an_old_ingest_accepted_lapses(ingest, pki, tmp_path):
    ingest.store._db.execute("INSERT INTO sequences VALUES ('dev-1', ?)", (2**63 - 1,))  # stored before this fix
    sender = device_sender(ingest, pki, tmp_path, 2)
    sender.step()
    assert sender.delivered == 2 and sender.outbox.size() == 0, sender.last_error


def test_finding_8_the_device_never_follows_a_sequence_it_cannot_send_above(pki, tmp_path):
    """An old ingest answering 409 with last_sequence 2**63 - 1: a reported, retried failure, never an overflow."""

    class OldIngest:
        timeout_s = 1.0

        def send(self, body, sequence):
            return DeliveryResult(False, 409, json.dumps({"status": "rejected", "last_sequence": 2**63 - 1}))

    outbox = Outbox(tmp_path / "outbox.sqlite", 10)
    outbox.put("r1", b"{}")
    sender = Sender(outbox, OldIngest(), base_delay_s=0.01, max_delay_s=0.02)
    assert sender.step() > 0 and sender.step() > 0
    assert "beyond any it can send above" in sender.last_error and "Overflow" not in sender.last_error
    assert outbox.next_sequence() < 2**62 and outbox.size() == 1


# ---- fuzz: any signed body, any header value: no 5xx, and a body the schema refuses is never stored ----


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
FIELDS = list(example_release())


_fuzz_periods = iter(range(10**9))


@st.composite
def release_bodies(draw) -> bytes:
    release = example_release(period_start_s=900.0 * next(_fuzz_periods))  # a cell of its own: one value per cell
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            release[draw(st.sampled_from(FIELDS))] = draw(json_values)
        elif action == "delete":
            release.pop(draw(st.sampled_from(FIELDS)), None)
        else:
            release[draw(st.text(min_size=1, max_size=20))] = draw(json_values)
    if draw(st.booleans()):
        return json.dumps(release, allow_nan=True).encode()
    return draw(
        st.sampled_from([json.dumps(release, allow_nan=True).encode(), b"", b"[]", b"null", b'{"a":', b"\x00\xff"])
    )


HEADER_NAMES = ["X-PV-Device", "X-PV-Timestamp", "X-PV-Nonce", "X-PV-Sequence", "X-PV-Content-SHA256", "X-PV-Signature"]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80)


@pytest.fixture(scope="module")
def fuzz_client(tmp_path_factory):
    """The real app in-process (no TLS: the fuzz is about the handlers), on one event loop."""
    key = os.urandom(32)
    store = ReleaseStore(tmp_path_factory.mktemp("fuzz") / "ingest.sqlite")
    loop = asyncio.new_event_loop()
    client = TestClient(TestServer(build_app(store, DeviceRegistry.of_keys({"dev-1": key}))), loop=loop)
    loop.run_until_complete(client.start_server())
    yield loop, client, store, key
    loop.run_until_complete(client.close())
    loop.close()
    store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=release_bodies(), bad_headers=st.dictionaries(st.sampled_from(HEADER_NAMES), header_text, max_size=2))
def test_fuzz_no_5xx_and_nothing_invalid_stored(fuzz_client, body, bad_headers):
    loop, client, store, key = fuzz_client
    headers = {
        **sign_request(key, "POST", RELEASES_PATH, "dev-1", body, int(time.time()), next(_sequence)).as_dict(),
        **bad_headers,
    }
    before = store.count()

    async def send() -> tuple[int, dict]:
        response = await client.post(
            RELEASES_PATH, data=body, headers={k: v.encode("latin-1").decode("latin-1") for k, v in headers.items()}
        )
        return response.status, await response.json()

    status, answer = loop.run_until_complete(send())
    assert status < 500, answer
    try:
        valid = validate_release(json.loads(body)) is not None
    except (ValueError, InvalidRelease):
        valid = False
    if not valid:
        assert status in (400, 401, 408, 422) and answer["reason"], answer
        assert store.count() == before
    elif not bad_headers:  # stored, or refused by the checks beyond the schema (cloud/trust.py), then not stored
        assert status == 200 or (status == 422 and store.count() == before), answer
