"""A key per device (issue 20, finding 7): `privacy-vision pki --device NAME`, an ingest that refuses one key for two
device ids, revocation without a restart, and distinct keys wherever the project starts several devices."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from privacy_vision import cli
from privacy_vision.cloud.devices import DeviceRegistryError, load_devices
from privacy_vision.core.pki import PkiPaths, create_pki, read_pins
from privacy_vision.core.protocol import canonical_release_bytes, load_key_file
from privacy_vision.core.release_schema import example_release
from privacy_vision.core.uplink import PinnedClient
from testkit.core import REPO
from testkit.ingest import IngestProcess


@pytest.fixture
def pki(tmp_path) -> PkiPaths:
    create_pki(tmp_path / "pki")
    return PkiPaths(tmp_path / "pki")


def ingest_command(pki: PkiPaths, tmp_path, *options: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "privacy_vision.cloud.ingest", "--port", "0", "--cert", str(pki.server_cert)]
    command += ["--key", str(pki.server_key), "--db", str(tmp_path / "ingest.sqlite"), *options]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=60)


def send(pki: PkiPaths, url: str, device_id: str, key: bytes, index: int) -> int:
    client = PinnedClient(url, read_pins(pki), str(pki.ca_cert), device_id, key)
    body = canonical_release_bytes(example_release(f"zone-{index}", 900.0 * index))
    try:
        return client.send(body, int(time.time() * 1e6)).status
    finally:
        client.close()


@pytest.mark.parametrize("shared", ["one key file", "a copy of the key"])
def test_finding_7_one_key_for_two_device_ids_is_refused_at_start(pki, tmp_path, shared):
    """device-1 used to post as device-2 and be stored as device-2: the ingest took one key file for both."""
    other = pki.device_key
    if shared == "a copy of the key":
        other = tmp_path / "copy.key"
        shutil.copy(pki.device_key, other)
        other.chmod(0o600)
    run = ingest_command(
        pki, tmp_path, "--device-key", f"device-1={pki.device_key}", "--device-key", f"device-2={other}"
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stdout + run.stderr
    assert "devices device-1 and device-2 share one key" in run.stderr
    assert "privacy-vision pki --device NAME" in run.stderr


def test_finding_7_each_device_has_its_own_key_and_cannot_post_as_another(pki, tmp_path):
    assert cli.main(["pki", "--out", str(pki.root), "--device", "cam-1", "--device", "cam-2"]) == 0
    keys = {name: load_key_file(pki.device_key_for(name)) for name in ("cam-1", "cam-2")}
    assert keys["cam-1"] != keys["cam-2"] and oct(pki.device_key_for("cam-1").stat().st_mode & 0o777) == "0o600"
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), [], ("--devices", str(pki.devices)))
    try:
        assert send(pki, ingest.url, "cam-2", keys["cam-1"], 1) == 401  # cam-1's key claiming to be cam-2
        assert send(pki, ingest.url, "cam-1", keys["cam-1"], 2) == 200
        assert send(pki, ingest.url, "cam-2", keys["cam-2"], 3) == 200
    finally:
        ingest.stop()


def test_finding_7_a_revoked_device_is_refused_and_a_new_one_admitted_without_a_restart(pki, tmp_path):
    assert cli.main(["pki", "--out", str(pki.root), "--device", "cam-1"]) == 0
    key = load_key_file(pki.device_key_for("cam-1"))
    log = tmp_path / "ingest.log"
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), [], ("--devices", str(pki.devices)), log=log)
    try:
        assert send(pki, ingest.url, "cam-1", key, 1) == 200
        assert cli.main(["pki", "--out", str(pki.root), "--revoke-device", "cam-1"]) == 0
        assert not pki.device_key_for("cam-1").exists()
        deadline = time.monotonic() + 10
        while send(pki, ingest.url, "cam-1", key, 2) != 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert send(pki, ingest.url, "cam-1", key, 3) == 401
        assert cli.main(["pki", "--out", str(pki.root), "--device", "cam-2"]) == 0
        new_key = load_key_file(pki.device_key_for("cam-2"))
        while send(pki, ingest.url, "cam-2", new_key, 4) != 200 and time.monotonic() < deadline + 10:
            time.sleep(0.2)
    finally:
        ingest.stop()
    text = log.read_text()
    assert "admitting 1 devices" in text and "device cam-1: key removed, revoked" in text
    assert "device cam-2: admitted" in text


def test_a_device_key_copied_into_the_devices_folder_twice_is_refused(pki):
    assert cli.main(["pki", "--out", str(pki.root), "--device", "cam-1"]) == 0
    shutil.copy(pki.device_key_for("cam-1"), pki.device_key_for("cam-9"))
    with pytest.raises(DeviceRegistryError, match="devices cam-1 and cam-9 share one key"):
        load_devices([], pki.devices)


def test_the_test_and_benchmark_ingest_gives_each_device_its_own_key(pki, tmp_path):
    ingest = IngestProcess(pki, str(tmp_path / "ingest.sqlite"), ["bench-a", "bench-b"])
    ingest.stop()
    assert load_key_file(pki.device_key_for("bench-a")) != load_key_file(pki.device_key_for("bench-b"))


def test_a_world_readable_device_key_is_one_clear_line(pki, tmp_path):
    """Low: it used to abort the ingest with a traceback."""
    pki.device_key.chmod(0o644)
    run = ingest_command(pki, tmp_path, "--device-key", f"device-1={pki.device_key}")
    assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"ingest: device device-1: key file {pki.device_key} is accessible by group/others (mode 0o644); "
        f"run: chmod 600 {pki.device_key}"
    ]


def test_a_tls_key_others_can_read_is_refused_with_one_line(pki, tmp_path):
    """Low: a TLS key with mode 644 used to be taken silently."""
    pki.server_key.chmod(0o644)
    run = ingest_command(pki, tmp_path, "--device-key", f"device-1={pki.device_key}")
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert f"TLS key file {pki.server_key} is accessible by group/others (mode 0o644)" in run.stderr
    assert f"chmod 600 {pki.server_key}" in run.stderr
