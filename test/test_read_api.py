"""The read side of the ingest (issue 13, finding 7): analyst tokens (separate from device keys, stored
hashed, revocable without a restart), newest first, filters, cursor paging, query validation and security
headers; reads have their own connection and a bounded share of worker threads."""

from __future__ import annotations

import csv
import http.client
import io
import json
import ssl
import subprocess
import sys
import time

import pytest

from privacy_vision.cloud.ingest import RELEASES_PATH
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.analyst_tokens import issue_token, revoke_token
from privacy_vision.core.intervals import release_intervals
from privacy_vision.core.pki import PkiPaths, create_pki
from privacy_vision.core.protocol import load_key_file
from privacy_vision.core.release_schema import example_release, validate_release
from testkit.ingest import IngestThread


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    create_pki(root)
    paths = PkiPaths(root)
    issue_token(paths.analyst_tokens, paths.analyst_token("alice"), "alice")
    return paths


def token(pki: PkiPaths, name: str = "alice") -> str:
    return pki.analyst_token(name).read_text().strip()


@pytest.fixture
def ingest(pki, tmp_path):
    server = IngestThread(
        pki, tmp_path / "ingest.sqlite", load_key_file(pki.device_key), analyst_tokens=pki.analyst_tokens
    )
    for index in range(25):
        item = validate_release(example_release(f"z{index % 2}", 900.0 * index))
        server.store.accept("dev-1", f"n{index:020d}", index + 1, item, item.model_dump_json(), time.time())
    yield server
    server.stop()


def get(
    server: IngestThread, pki: PkiPaths, path: str, authorization: str | None = "alice"
) -> tuple[int, dict[str, str], object]:
    """GET with alice's token by default; None sends no Authorization, any other value is sent as is."""
    if authorization == "alice":
        authorization = f"Bearer {token(pki)}"
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=10
    )
    connection.request("GET", path, headers={"Authorization": authorization} if authorization is not None else {})
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


def test_several_zones_are_any_of_them_and_a_repeated_parameter_is_refused(ingest, pki):
    """Low: `zone=a&zone=b` used to read zone a alone, silently."""
    status, _, rows = get(ingest, pki, f"{RELEASES_PATH}?zone=z0&zone=z1&since=4500&until=9000")
    assert status == 200 and [(r["zone_id"], r["period_start_s"]) for r in rows] == [
        ("z1", 8100.0),
        ("z0", 7200.0),
        ("z1", 6300.0),
        ("z0", 5400.0),
        ("z1", 4500.0),
    ]
    for query, reason in (("since=1&since=2", "since: given 2 times"), ("zone=a&" * 51, "zone")):
        status, _, answer = get(ingest, pki, f"{RELEASES_PATH}?{query}")
        assert status == 400 and reason in answer["reason"], answer


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


@pytest.mark.parametrize(
    "query",
    [
        "since=nan",
        "since=-1",
        "until=inf",
        "limit=0",
        "limit=100000",
        "zone=" + "z" * 500,
        "cursor=!!",
        "cursor=bm90LWpzb24=",
        "colour=red",
    ],
)
def test_bad_query_is_400_with_reason(ingest, pki, query):
    status, _, answer = get(ingest, pki, f"{RELEASES_PATH}?{query}")
    assert status == 400 and answer["reason"], answer


@pytest.mark.parametrize("path", ["/", RELEASES_PATH, "/no-such-page"])
def test_security_headers_on_every_answer(ingest, pki, path):
    _, headers, _ = get(ingest, pki, path)
    assert headers["Strict-Transport-Security"].startswith("max-age=")
    assert (
        "default-src 'none'" in headers["Content-Security-Policy"]
        and "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    )
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(
    "authorization, reason",
    [
        (None, "analyst token required"),
        ("Basic YWxpY2U6c2VjcmV0", "malformed Authorization header"),
        ("Bearer ", "malformed Authorization header"),
        ("Bearer pva_" + "A" * 43, "unknown or revoked analyst token"),
        ("device key", "malformed Authorization header"),
    ],
)
def test_reads_need_an_analyst_token(ingest, pki, authorization, reason):
    if authorization == "device key":  # the device's HMAC key is no analyst token, whatever the form
        authorization = "Bearer " + pki.device_key.read_text().strip()
        reason = "unknown or revoked analyst token"
    status, headers, answer = get(ingest, pki, RELEASES_PATH, authorization)
    assert status == 401 and reason in answer["reason"], answer
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert "Content-Security-Policy" in headers


def test_a_revoked_token_stops_working_without_a_restart(ingest, pki):
    bob = issue_token(pki.analyst_tokens, pki.analyst_token("bob"), "bob")
    assert get(ingest, pki, RELEASES_PATH, f"Bearer {bob}")[0] == 200
    assert revoke_token(pki.analyst_tokens, "bob")
    status, _, answer = get(ingest, pki, RELEASES_PATH, f"Bearer {bob}")
    assert status == 401 and "revoked" in answer["reason"]
    assert get(ingest, pki, RELEASES_PATH)[0] == 200  # alice's token is untouched


def test_a_broken_token_file_admits_nobody(ingest, pki, tmp_path):
    saved = pki.analyst_tokens.read_text()
    try:
        pki.analyst_tokens.write_text("not a hash line at all\n")
        status, _, answer = get(ingest, pki, RELEASES_PATH)
        assert status == 503 and "token file" in answer["reason"]
    finally:
        pki.analyst_tokens.write_text(saved)
    assert get(ingest, pki, RELEASES_PATH)[0] == 200


def test_the_token_file_holds_hashes_only(pki):
    text = pki.analyst_tokens.read_text()
    assert token(pki) not in text and token(pki).startswith("pva_")
    assert oct(pki.analyst_token("alice").stat().st_mode & 0o777) == "0o600"


def test_the_pki_command_issues_and_revokes_without_touching_the_ca(pki, tmp_path):
    command = [sys.executable, "-m", "privacy_vision.cli", "pki", "--out", str(tmp_path / "pki")]
    subprocess.run(command, check=True, capture_output=True, timeout=60)
    ca = (tmp_path / "pki" / "ca.crt").read_bytes()
    issued = subprocess.run([*command, "--analyst", "carol"], check=True, capture_output=True, text=True, timeout=60)
    carol = (tmp_path / "pki" / "analyst-carol.token").read_text().strip()
    assert carol in issued.stdout and (tmp_path / "pki" / "ca.crt").read_bytes() == ca
    assert "carol" in (tmp_path / "pki" / "analyst-tokens.sha256").read_text()
    subprocess.run([*command, "--revoke-analyst", "carol"], check=True, capture_output=True, timeout=60)
    assert "carol" not in (tmp_path / "pki" / "analyst-tokens.sha256").read_text().split("\n", 1)[1]
    bad = subprocess.run([*command, "--analyst", "no spaces"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "analyst name" in bad.stderr


def test_every_value_comes_with_its_interval_from_the_one_function(ingest, pki):
    """The read API adds each row's intervals (core/intervals.py: the terminal summary's too) and when it arrived;
    format=csv gives one line per value with the same numbers and no spreadsheet formula from a zone name."""
    hostile = validate_release(example_release("=HYPERLINK(1)", 900.0 * 30, tier="hour"))
    ingest.store.accept("dev-1", "n" + "9" * 20, 99, hostile, hostile.model_dump_json(), time.time())
    status, _, rows = get(ingest, pki, f"{RELEASES_PATH}?limit=5")
    assert status == 200 and rows[0]["zone_id"] == "=HYPERLINK(1)"
    for row in rows:
        stored = {k: v for k, v in row.items() if k not in ("intervals", "interval_level", "received_at")}
        expected = {name: value.as_dict() for name, value in release_intervals(stored).items()}
        assert row["intervals"] == expected and row["interval_level"] == 0.95 and row["received_at"] > 0
    assert set(rows[0]["intervals"]) >= {"occupancy", "heading.E", "dwell.long"}
    status, headers, text = get(ingest, pki, f"{RELEASES_PATH}?limit=5&format=csv")
    lines = list(csv.DictReader(io.StringIO(text.decode())))
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    hour = [line for line in lines if line["zone_id"] == "'=HYPERLINK(1)"]  # quoted: a spreadsheet shows it as text
    occupancy = next(line for line in hour if line["metric"] == "occupancy")
    assert (float(occupancy["ci95_low"]), float(occupancy["ci95_high"])) == (
        rows[0]["intervals"]["occupancy"]["low"],
        rows[0]["intervals"]["occupancy"]["high"],
    )
    assert len(hour) == len(rows[0]["intervals"])  # one line per value
    _, headers, _ = get(ingest, pki, f"{RELEASES_PATH}?limit=5&format=csv")
    cursor = headers["X-Next-Cursor"]
    _, _, second = get(ingest, pki, f"{RELEASES_PATH}?limit=5&format=csv&cursor={cursor}")
    assert not second.startswith(b"zone_id,")  # the header once, on the first page


def test_overlap_finds_the_day_cell_that_began_before_the_range(ingest, pki):
    day = validate_release(example_release("z0", 0.0, tier="day"))
    ingest.store.accept("dev-1", "n" + "8" * 20, 98, day, day.model_dump_json(), time.time())
    _, _, starting = get(ingest, pki, f"{RELEASES_PATH}?since=3600&until=7200")
    _, _, overlapping = get(ingest, pki, f"{RELEASES_PATH}?since=3600&until=7200&overlap=true")
    assert "day" not in {r["tier"] for r in starting} and "day" in {r["tier"] for r in overlapping}
    assert {r["release_id"] for r in starting} < {r["release_id"] for r in overlapping}


def test_a_read_only_ingest_needs_no_device_key_and_writes_nothing(pki, tmp_path):
    """What `privacy-vision dashboard` serves: the store opened for reading, POST not routed, no retention delete."""
    store = tmp_path / "ingest.sqlite"
    writer = ReleaseStore(store)
    for index in range(5):
        item = validate_release(example_release("z0", 900.0 * index))
        writer.accept("dev-1", f"n{index:020d}", index + 1, item, item.model_dump_json(), time.time())
    writer.close()
    before = store.read_bytes()
    command = [sys.executable, "-m", "privacy_vision.cloud.ingest", "--read-only", "--port", "0", "--db", str(store)]
    command += [*pki.reader_arguments(), "--retention-days", "0.0001"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = process.stdout.readline()
        assert "read-only: no device may post" in line, line
        port = int(line.split("https://127.0.0.1:", 1)[1].split("/", 1)[0])
        context = ssl.create_default_context(cafile=str(pki.ca_cert))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        connection.request("GET", f"{RELEASES_PATH}?limit=3", headers={"Authorization": f"Bearer {token(pki)}"})
        response = connection.getresponse()
        assert response.status == 200 and len(json.loads(response.read())) == 3
        connection.request("POST", RELEASES_PATH, body=b"{}")
        assert connection.getresponse().status == 405
    finally:
        process.terminate()
        process.wait(10)
    assert store.read_bytes() == before  # retention deletes nothing, nothing is written
    missing = subprocess.run([*command[:-2], "--db", str(tmp_path / "absent.sqlite")], capture_output=True, text=True)
    assert missing.returncode != 0 and "no release store at" in missing.stderr
    both = subprocess.run([*command, "--device-key", f"d={pki.device_key}"], capture_output=True, text=True)
    assert both.returncode == 2 and "--read-only takes no --device-key" in both.stderr


def test_the_csv_guard_catches_every_formula_start_and_leaves_numbers_alone():
    """Low (issue 20): a leading space, fullwidth ＝, no-break space, BOM, | and % used to pass the guard."""
    from privacy_vision.cloud.release_views import _safe

    texts = [" =1+1", "＝1+1", "\u00a0=1", "\ufeff=1", "|calc", "%macro", "=HYPERLINK(1)", "plaza west"]
    assert [_safe(t) for t in texts] == [
        "' =1+1",
        "'＝1+1",
        "'\u00a0=1",
        "'\ufeff=1",
        "'|calc",
        "'%macro",
        "'=HYPERLINK(1)",
        "plaza west",
    ]
    assert _safe(-3.5) == -3.5
