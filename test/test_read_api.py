"""The read side of the ingest (issue 13, finding 7 in part): newest first, filters, cursor paging, query
validation and security headers; reads have their own connection and a bounded share of worker threads."""
from __future__ import annotations

import http.client
import json
import ssl
import time

import pytest

from ingestutil import IngestThread
from privacy_vision.core.pki import PkiPaths, create_pki
from privacy_vision.core.protocol import load_key_file
from privacy_vision.core.release_schema import example_release, validate_release
from privacy_vision.ingest import RELEASES_PATH


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_pki(root)
    return PkiPaths(root)


@pytest.fixture
def ingest(pki, tmp_path):
    server = IngestThread(pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key))
    for index in range(25):
        item = validate_release(example_release(f"z{index % 2}", 900.0 * index))
        server.store.accept("dev-1", f"n{index:020d}", index + 1, item, item.model_dump_json(), time.time())
    yield server
    server.stop()


def get(server: IngestThread, pki: PkiPaths, path: str) -> tuple[int, dict[str, str], object]:
    connection = http.client.HTTPSConnection("127.0.0.1", server.port, context=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=10)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, dict(response.getheaders()), json.loads(body) if body.startswith((b"[", b"{")) else body


def test_newest_first_with_filters(ingest, pki):
    status, _, rows = get(ingest, pki, RELEASES_PATH)
    assert status == 200 and [r["period_start_s"] for r in rows] == [900.0 * i for i in reversed(range(25))]
    _, _, rows = get(ingest, pki, f"{RELEASES_PATH}?zone=z1&since=4500&until=13500")
    assert [r["period_start_s"] for r in rows] == [11700.0, 9900.0, 8100.0, 6300.0, 4500.0]
    _, _, rows = get(ingest, pki, f"{RELEASES_PATH}?device=dev-2")
    assert rows == []


def test_cursor_pages_cover_everything_once(ingest, pki):
    seen, path = [], f"{RELEASES_PATH}?limit=10"
    while True:
        status, headers, rows = get(ingest, pki, path)
        assert status == 200
        seen += [r["release_id"] for r in rows]
        if "X-Next-Cursor" not in headers:
            break
        path = f"{RELEASES_PATH}?limit=10&cursor={headers['X-Next-Cursor']}"
    assert len(seen) == len(set(seen)) == 25


@pytest.mark.parametrize("query", ["since=nan", "since=-1", "until=inf", "limit=0", "limit=100000", "zone=" + "z" * 500,
                                   "cursor=!!", "cursor=bm90LWpzb24=", "colour=red"])
def test_bad_query_is_400_with_reason(ingest, pki, query):
    status, _, answer = get(ingest, pki, f"{RELEASES_PATH}?{query}")
    assert status == 400 and answer["reason"], answer


@pytest.mark.parametrize("path", ["/", RELEASES_PATH, "/no-such-page"])
def test_security_headers_on_every_answer(ingest, pki, path):
    _, headers, _ = get(ingest, pki, path)
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert "default-src 'none'" in headers["Content-Security-Policy"] and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
