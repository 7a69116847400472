"""Load benchmark of the ingest over TLS on loopback: signed releases per second accepted by 1, 2 and 4
ingest processes on one database (SQLite and PostgreSQL), device POST latency while 64 analysts read
(reads must not starve writes), device POST latency during a slow-connection attack on an ingest limited
to 1,024 file descriptors (and its log volume), and the uplink's outbox drain after an outage of 10,000.

    .venv/bin/python bench/ingest_load.py [--parts readers,slow,throughput,drain] [--requests 2000] [--clients 4]
        [--processes 1,2,4] [--repeats 3] [--outage 10000] [--readers 64] [--posts 300]
        [--slow-connections 1000] [--nofile 1024] [--ingest-option OPTION ...]

Devices, analysts, attacker and ingest processes share this machine's cores, so the figures are for the
whole loopback system.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.core.analyst_tokens import issue_token
from privacy_vision.core.pki import PkiPaths, create_pki, read_pins
from privacy_vision.core.protocol import canonical_release_bytes
from privacy_vision.core.release_schema import example_release, validate_release
from privacy_vision.core.uplink import Outbox, PinnedClient, Sender
from testkit.ingest import (  # shared with the tests (testkit/__init__.py says why)
    IngestProcess,
    device_key,
    slow_connections,
)
from testkit.postgres import postgres_bindir, postgres_server

LATEST_PERIOD_S = (time.time() // 900 - 1) * 900  # every period in the past, as the ingest requires


def release(index: int) -> bytes:
    return canonical_release_bytes(example_release(f"zone-{index % 8}", LATEST_PERIOD_S - 900 * index))


def client(pki: PkiPaths, url: str, device: str) -> PinnedClient:
    """The device's own key: the ingest refuses one key for two devices."""
    return PinnedClient(url, read_pins(pki), str(pki.ca_cert), device, device_key(pki, device))


def _device_process(pki_root: str, url: str, device: str, first: int, count: int, go, results) -> None:
    """One device in its own process (so the clients are not one interpreter's GIL): `count` signed
    releases one after another on a kept-alive connection, once `go` is set."""
    pki = PkiPaths(Path(pki_root))
    bodies = [release(first + i) for i in range(count)]
    sender = client(pki, url, device)
    failures = []
    go.wait()
    for sequence, body in enumerate(bodies, start=1):
        result = sender.send(body, sequence)
        if not result.delivered:
            failures.append(f"{result.status} {result.detail[:200]}")
    sender.close()
    results.put(failures)


def accepted_per_second(pki: PkiPaths, db: str, requests: int, clients: int, processes: int) -> float:
    """Signed releases per second accepted by `processes` ingest processes on one database, from
    `clients` devices (each its own process) spread over them."""
    devices = [f"bench-{uuid.uuid4().hex[:8]}" for _ in range(clients)]
    ingests = [IngestProcess(pki, db, devices) for _ in range(processes)]
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    per_device = requests // clients
    workers = [
        context.Process(
            target=_device_process,
            args=(str(pki.root), ingests[i % processes].url, device, i * per_device, per_device, go, results),
        )
        for i, device in enumerate(devices)
    ]
    try:
        for worker in workers:
            worker.start()
        time.sleep(2.0 + 0.5 * clients)  # every device process started and its bodies made
        started = time.perf_counter()
        go.set()
        failures = [failure for _ in workers for failure in results.get(timeout=600)]
        elapsed = time.perf_counter() - started
        for worker in workers:
            worker.join(60)
    finally:
        for ingest in ingests:
            ingest.stop()
    if failures:
        raise RuntimeError(f"{len(failures)} requests were not accepted, e.g. {failures[0]}")
    return per_device * clients / elapsed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _read_forever(url: str, token: str, ca_file: str, readers: int, stop, results) -> None:
    """A separate process (its own interpreter, so the device's timing is not the readers' GIL): `readers`
    analysts, each on its own kept-alive connection, reading the newest 1,000 releases back to back."""
    import ssl

    import aiohttp

    async def main() -> None:
        context = ssl.create_default_context(cafile=ca_file)
        statuses: dict[int, int] = {}
        connector = aiohttp.TCPConnector(ssl=context, limit=readers)
        async with aiohttp.ClientSession(connector=connector, headers={"Authorization": f"Bearer {token}"}) as session:

            async def reader() -> None:
                while not stop.is_set():
                    async with session.get(f"{url}?limit=1000") as response:
                        await response.read()
                        statuses[response.status] = statuses.get(response.status, 0) + 1

            tasks = [asyncio.create_task(reader()) for _ in range(readers)]
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await asyncio.gather(*tasks)
        results.put(statuses)

    asyncio.run(main())


def post_latencies(pki: PkiPaths, url: str, device: str, posts: int, first_index: int) -> list[float]:
    """One device posting releases one after another on its kept-alive connection; seconds per POST."""
    sender = client(pki, url, device)
    latencies = []
    for sequence in range(1, posts + 1):
        body = release(first_index + sequence)
        started = time.perf_counter()
        result = sender.send(body, sequence)
        latencies.append(time.perf_counter() - started)
        if not result.delivered:
            raise RuntimeError(f"POST not accepted: {result.status} {result.detail}")
    sender.close()
    return latencies


def posts_under_readers(
    pki: PkiPaths, workdir: Path, readers: int, posts: int, stored: int
) -> list[tuple[str, list[float], str]]:
    """Device POST latency with no readers and with `readers` concurrent analysts, side by side on one ingest."""
    db = str(workdir / f"read-{uuid.uuid4().hex[:6]}.sqlite")
    store = ReleaseStore(db)  # a store with history, so every read returns a full page of 1,000
    for index in range(stored):
        item = validate_release(example_release(f"zone-{index % 8}", LATEST_PERIOD_S - 10**7 - 900 * index))
        store.accept("history", f"{index:032x}", index + 1, item, item.model_dump_json(), time.time())
    store.close()
    token = issue_token(workdir / "analysts.sha256", workdir / "bench.token", "bench")
    ingest = IngestProcess(
        pki, db, ["device-quiet", "device-busy"], ("--analyst-tokens", str(workdir / "analysts.sha256"))
    )
    rows = []
    try:
        quiet = post_latencies(pki, ingest.url, "device-quiet", posts, 0)
        rows.append(("device POST, no readers", quiet, ""))
        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        process = context.Process(
            target=_read_forever, args=(ingest.url, token, str(pki.ca_cert), readers, stop, results)
        )
        process.start()
        time.sleep(3.0)  # every reader connected and reading
        started = time.perf_counter()
        busy = post_latencies(pki, ingest.url, "device-busy", posts, 10 * posts)
        elapsed = time.perf_counter() - started
        stop.set()
        statuses = results.get(timeout=60)
        process.join(60)
        reads = sum(statuses.values())
        rows.append(
            (
                f"device POST, {readers} concurrent analysts reading",
                busy,
                f"{reads} reads of 1,000 releases in the run, statuses {statuses}, {reads / elapsed:.0f} reads/s during the POSTs",
            )
        )
    finally:
        ingest.stop()
    return rows


def _slow_attack(host: str, port: int, connections: int, interval_s: float, stop, results) -> None:
    """A separate process running the slow-connection attack until `stop` is set."""

    async def main() -> None:
        done = asyncio.Event()
        counts: dict[str, int] = {}
        attack = asyncio.create_task(slow_connections(host, port, connections, interval_s, done, counts))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        done.set()
        await attack
        results.put(counts)

    asyncio.run(main())


def fresh_post_latencies(
    pki: PkiPaths, url: str, device: str, posts: int, first_index: int, pause_s: float
) -> tuple[list[float], list[str]]:
    """POSTs each on a new connection (TLS handshake included), as a device whose idle connection was
    closed; a failed POST counts with the time it took, and its error is returned."""
    latencies, errors = [], []
    for sequence in range(1, posts + 1):
        sender = client(pki, url, device)
        sender.timeout_s = 10.0
        started = time.perf_counter()
        try:
            result = sender.send(release(first_index + sequence), sequence)
            if not result.delivered:
                errors.append(f"{result.status} {result.detail[:100]}")
        except (OSError, http.client.HTTPException) as error:
            errors.append(f"{type(error).__name__}: {error}")
        latencies.append(time.perf_counter() - started)
        sender.close()
        time.sleep(pause_s)
    return latencies, errors


def posts_under_slow_attack(
    pki: PkiPaths, workdir: Path, connections: int, posts: int, nofile: int, extra: tuple[str, ...]
) -> list[tuple[str, list[float], str]]:
    """Device POST latency without and during a slow-connection attack, on one ingest whose file
    descriptors are limited to `nofile` (as on a default Linux host); also the ingest's log volume."""
    log = workdir / f"slow-{uuid.uuid4().hex[:6]}.log"
    ingest = IngestProcess(
        pki,
        str(workdir / f"slow-{uuid.uuid4().hex[:6]}.sqlite"),
        ["device-calm", "device-attacked"],
        extra,
        nofile=nofile,
        log=log,
    )
    rows = []
    try:
        calm, errors = fresh_post_latencies(pki, ingest.url, "device-calm", posts, 0, 0.02)
        rows.append(("device POST on a new connection, no attack", calm, f"{len(errors)} failed {errors[:2]}"))
        context = multiprocessing.get_context("spawn")
        stop, results = context.Event(), context.Queue()
        process = context.Process(target=_slow_attack, args=("127.0.0.1", ingest.port, connections, 2.0, stop, results))
        before = log.stat().st_size
        process.start()
        time.sleep(8.0)  # every attacking connection open and trickling
        attacked, errors = fresh_post_latencies(pki, ingest.url, "device-attacked", posts, 10 * posts, 0.02)
        stop.set()
        counts = results.get(timeout=120)
        process.join(60)
        logged = log.stat().st_size - before
        rows.append(
            (
                f"device POST on a new connection, {connections} slow connections attacking",
                attacked,
                f"{len(errors)} failed {errors[:2]}; attacker {counts}; ingest log grew {logged} bytes",
            )
        )
    finally:
        ingest.stop()
    return rows


def drain_rate(pki: PkiPaths, workdir: Path, outage: int) -> tuple[float, int]:
    outbox = Outbox(workdir / f"outbox-{uuid.uuid4().hex[:6]}.sqlite", max_items=outage + 1)
    for index in range(outage):
        body = release(index)
        outbox.put(f"r{index}-{uuid.uuid4().hex}", body)
    ingest = IngestProcess(pki, str(workdir / f"drain-{uuid.uuid4().hex[:6]}.sqlite"), ["device-1"])
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


def throughput_rows(pki: PkiPaths, workdir: Path, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    rows = []
    if postgres_bindir() is None:
        print(
            "  PostgreSQL rows skipped: no PostgreSQL server binaries (make setup installs Debian's postgresql)",
            flush=True,
        )
    with postgres_server() if postgres_bindir() else contextlib.nullcontext() as dsn:
        for name, target in (("SQLite", None), ("PostgreSQL", dsn))[: 2 if dsn else 1]:
            for processes in args.processes:
                rates = []
                for repeat in range(args.repeats):
                    db = target or str(workdir / f"load-{processes}-{repeat}.sqlite")
                    rates.append(accepted_per_second(pki, db, args.requests, args.clients, processes))
                    print(
                        f"  {name}, {processes} ingest processes, run {repeat + 1}/{args.repeats}: {rates[-1]:.0f} releases/s",
                        flush=True,
                    )
                rows.append(
                    (
                        f"ingest accepts, {name}, {processes} ingest process{'es' if processes > 1 else ''}, {args.clients} devices",
                        statistics.median(rates),
                        min(rates),
                        max(rates),
                    )
                )
    return rows


def drain_rows(pki: PkiPaths, workdir: Path, args: argparse.Namespace) -> list[tuple[str, float, float, float]]:
    rates = []
    for repeat in range(args.repeats):
        rate, delivered = drain_rate(pki, workdir, args.outage)
        assert delivered == args.outage
        rates.append(rate)
        print(f"  outbox drain run {repeat + 1}/{args.repeats}: {rate:.0f} releases/s", flush=True)
    median = statistics.median(rates)
    return [
        (
            f"uplink outbox drain after an outage of {args.outage} (median {args.outage / median:.1f} s to empty)",
            median,
            min(rates),
            max(rates),
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="signed releases per load run")
    parser.add_argument(
        "--clients", type=int, default=4, help="concurrent devices (each its own process, kept-alive connection)"
    )
    parser.add_argument(
        "--processes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 2, 4],
        help="ingest process counts to measure, comma-separated (all on one database)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--outage", type=int, default=10000, help="releases queued while the ingest was down")
    parser.add_argument(
        "--readers", type=int, default=64, help="concurrent analysts reading during the POST latency run"
    )
    parser.add_argument("--posts", type=int, default=300, help="device POSTs per latency measurement")
    parser.add_argument("--slow-connections", type=int, default=1000, help="slow TLS connections of the attack")
    parser.add_argument("--nofile", type=int, default=1024, help="the ingest's file-descriptor limit during the attack")
    parser.add_argument(
        "--ingest-option", action="append", default=[], help="extra ingest option for the attack run (repeatable)"
    )
    parser.add_argument(
        "--parts", default="throughput,readers,slow,drain", help="comma-separated: throughput, readers, slow, drain"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="pv-bench-"))
    create_pki(workdir / "pki")
    pki = PkiPaths(workdir / "pki")
    print(f"{os.cpu_count()} CPU cores; client and ingest processes share them\n", flush=True)
    if "readers" in parts:
        latency_rows = posts_under_readers(pki, workdir, args.readers, args.posts, stored=5000)
        print(
            f"| measurement ({args.posts} POSTs each, one device, kept-alive connection) | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|"
        )
        for name, values, _ in latency_rows:
            print(
                f"| {name} | {percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} | {max(values) * 1000:.1f} |"
            )
        for name, _, note in latency_rows:
            if note:
                print(f"  {name}: {note}")
        print(flush=True)
    rows = []
    if "throughput" in parts:
        rows += throughput_rows(pki, workdir, args)
    if "drain" in parts:
        rows += drain_rows(pki, workdir, args)
    if "slow" in parts:
        latency_rows = posts_under_slow_attack(
            pki, workdir, args.slow_connections, args.posts, args.nofile, tuple(args.ingest_option)
        )
        print(
            f"| measurement ({args.posts} POSTs each, ingest limited to {args.nofile} file descriptors) | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|"
        )
        for name, values, _ in latency_rows:
            print(
                f"| {name} | {percentile(values, 50) * 1000:.1f} | {percentile(values, 99) * 1000:.1f} | {max(values) * 1000:.1f} |"
            )
        for name, _, note in latency_rows:
            print(f"  {name}: {note}")
        print(flush=True)
    if rows:
        print(f"\n{args.requests} signed releases per load run, {args.repeats} runs each\n")
        print("| measurement | median releases/s | min | max |\n|---|---:|---:|---:|")
        for name, median, low, high in rows:
            print(f"| {name} | {median:.0f} | {low:.0f} | {high:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
