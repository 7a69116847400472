"""Load benchmark: signed releases per second accepted by the ingest over TLS on loopback (SQLite and
PostgreSQL), and the uplink's outbox drain rate after an outage of 10,000 releases.

    .venv/bin/python bench/ingest_load.py [--requests 2000] [--clients 4] [--repeats 3] [--outage 10000]

Client and server share this machine's cores, so the figures are for the whole loopback system.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test"))

from pgutil import postgres_server  # noqa: E402

from privacy_vision.core.pki import PkiPaths, create_pki, read_pins  # noqa: E402
from privacy_vision.core.protocol import canonical_release_bytes, load_key_file  # noqa: E402
from privacy_vision.core.release_schema import example_release  # noqa: E402
from privacy_vision.core.uplink import Outbox, PinnedClient, Sender  # noqa: E402


def release(index: int) -> bytes:
    return canonical_release_bytes(example_release(f"zone-{index % 8}", 1_790_000_000.0 + 900 * index))


class Ingest:
    def __init__(self, pki: PkiPaths, db: str, devices: list[str]) -> None:
        command = [sys.executable, "-m", "privacy_vision.ingest", "--port", "0", "--cert", str(pki.server_cert),
                   "--key", str(pki.server_key), "--db", db, "--retention-days", "0"]
        for device in devices:
            command += ["--device-key", f"{device}={pki.device_key}"]
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = self.process.stdout.readline()
        match = re.search(r"https://127.0.0.1:(\d+)(/\S+)", line)
        if not match:
            raise RuntimeError(f"ingest did not start: {line}{self.process.stdout.read()}")
        self.url = f"https://127.0.0.1:{match.group(1)}{match.group(2)}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def client(pki: PkiPaths, url: str, device: str) -> PinnedClient:
    return PinnedClient(url, read_pins(pki), str(pki.ca_cert), device, load_key_file(pki.device_key))


def accepted_per_second(pki: PkiPaths, db: str, requests: int, clients: int) -> float:
    devices = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(clients)]
    ingest = Ingest(pki, db, devices)
    bodies = [[release(c * requests + i) for i in range(requests // clients)] for c in range(clients)]
    failures: list[str] = []

    def run(device: str, items: list[bytes]) -> None:
        sender = client(pki, ingest.url, device)
        for sequence, body in enumerate(items, start=1):
            result = sender.send(body, sequence)
            if not result.delivered:
                failures.append(f"{result.status} {result.detail}")
        sender.close()

    threads = [threading.Thread(target=run, args=(d, b)) for d, b in zip(devices, bodies)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ingest.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} requests were not accepted, e.g. {failures[0]}")
    return sum(len(b) for b in bodies) / elapsed


def drain_rate(pki: PkiPaths, workdir: Path, outage: int) -> tuple[float, int]:
    outbox = Outbox(workdir / f"outbox-{uuid.uuid4().hex[:6]}.sqlite", max_items=outage + 1)
    for index in range(outage):
        body = release(index)
        outbox.put(f"r{index}-{uuid.uuid4().hex}", body)
    ingest = Ingest(pki, str(workdir / f"drain-{uuid.uuid4().hex[:6]}.sqlite"), ["device-1"])
    sender = Sender(outbox, client(pki, ingest.url, "device-1"))
    started = time.perf_counter()
    while outbox.size():
        delay = sender.drain_once()
        if delay:
            raise RuntimeError(f"drain failed: {sender.last_error}")
    elapsed = time.perf_counter() - started
    sender.client.close()
    ingest.stop()
    return outage / elapsed, sender.delivered


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="signed releases per load run")
    parser.add_argument("--clients", type=int, default=4, help="concurrent devices (keep-alive connections)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outage", type=int, default=10000, help="releases queued while the ingest was down")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pv-bench-"))
    create_pki(workdir / "pki")
    pki = PkiPaths(workdir / "pki")
    rows = []
    with postgres_server() as dsn:
        for name, target in (("SQLite", None), ("PostgreSQL", dsn)):
            rates = []
            for repeat in range(args.repeats):
                db = target or str(workdir / f"load-{repeat}.sqlite")
                rates.append(accepted_per_second(pki, db, args.requests, args.clients))
                print(f"  {name} run {repeat + 1}/{args.repeats}: {rates[-1]:.0f} releases/s", flush=True)
            rows.append((f"ingest accepts, {name}, {args.clients} devices", statistics.median(rates), min(rates), max(rates)))
    rates = []
    for repeat in range(args.repeats):
        rate, delivered = drain_rate(pki, workdir, args.outage)
        assert delivered == args.outage
        rates.append(rate)
        print(f"  outbox drain run {repeat + 1}/{args.repeats}: {rate:.0f} releases/s", flush=True)
    rows.append((f"uplink outbox drain after an outage of {args.outage}", statistics.median(rates), min(rates), max(rates)))
    print(f"\n{os.cpu_count()} CPU cores, {args.requests} signed releases per load run, {args.repeats} runs each\n")
    print("| measurement | median releases/s | min | max |\n|---|---:|---:|---:|")
    for name, median, low, high in rows:
        print(f"| {name} | {median:.0f} | {low:.0f} | {high:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
