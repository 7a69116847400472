"""A real ingest: the app in a thread (tests that drive the uplink side directly), or the command in a
process (tests and the load benchmark); and a slow-connection attacker."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import ssl
import subprocess
import sys
import threading
from pathlib import Path

from aiohttp import web

from privacy_vision.cloud.devices import DeviceRegistry
from privacy_vision.cloud.ingest import RELEASES_PATH, build_app, server_ssl_context
from privacy_vision.cloud.ingest_server import ServerLimits, start_tls_server
from privacy_vision.cloud.ingest_store import ReleaseStore
from privacy_vision.cloud.trust import IngestPolicy
from privacy_vision.core.analyst_tokens import AnalystTokens
from privacy_vision.core.pki import PkiPaths, create_device_key
from privacy_vision.core.protocol import load_key_file
from testkit.core import REPO

DEFAULT_LIMITS = ServerLimits()  # frozen: one shared default is safe


def device_key(pki: PkiPaths, device_id: str) -> bytes:
    """The device's own key (pki/devices/DEVICE.key, created on first use), as IngestProcess gives it to the ingest."""
    return load_key_file(create_device_key(pki, device_id)[0])


class IngestThread:
    """The real ingest app on a loopback TLS port, in a thread, counting requests that reach it."""

    def __init__(
        self,
        pki: PkiPaths,
        db_path,
        device_key: bytes,
        port: int = 0,
        response_delay_s: float = 0.0,
        analyst_tokens=None,
        limits: ServerLimits = DEFAULT_LIMITS,
        policy: IngestPolicy | None = None,
    ) -> None:
        self.requests = 0
        self.seen: list[tuple[str, str, bool]] = []  # method, path with query, whether an Authorization header came
        self.analysts = AnalystTokens(analyst_tokens)
        self.store = None
        self._pki, self._db_path, self._key, self._port, self._delay = pki, db_path, device_key, port, response_delay_s
        self.limits = limits
        self.policy = policy
        self.log: list[str] = []  # what the server would print
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = ReleaseStore(self._db_path)

        @web.middleware
        async def count(request, handler):
            self.requests += 1
            self.seen.append((request.method, request.path_qs, "Authorization" in request.headers))
            response = await handler(request)
            if self._delay:
                await asyncio.sleep(self._delay)  # stored, but the acknowledgement is late
            return response

        app = build_app(
            self.store,
            DeviceRegistry.of_keys({"dev-1": self._key}),
            self.analysts,
            self.limits.body_timeout_s,
            self.policy,
        )
        app.middlewares.append(count)
        context = server_ssl_context(str(self._pki.server_cert), str(self._pki.server_key))
        self.server = self.loop.run_until_complete(
            start_tls_server(app, "127.0.0.1", self._port, context, self.limits, self.log.append)
        )
        self.port = self.server.port
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{RELEASES_PATH}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


class IngestProcess:
    """`python -m privacy_vision.cloud.ingest` on a free port; its output after the first line is copied to `log`
    (or dropped), so a chatty ingest can never block on a full pipe. `nofile` limits its descriptors."""

    def __init__(
        self,
        pki: PkiPaths,
        db: str,
        devices: list[str],
        extra: tuple[str, ...] = (),
        nofile: int = 0,
        log: Path | None = None,
    ) -> None:
        command = [
            sys.executable,
            "-m",
            "privacy_vision.cloud.ingest",
            "--port",
            "0",
            "--cert",
            str(pki.server_cert),
            "--key",
            str(pki.server_key),
            "--db",
            db,
            "--retention-days",
            "0",
            *extra,
        ]
        for device in devices:  # each device its own key, as the ingest requires
            command += ["--device-key", f"{device}={create_device_key(pki, device)[0]}"]
        limit = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))) if nofile else None
        self.process = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=limit
        )
        line = self.process.stdout.readline()
        match = re.search(r"https://127.0.0.1:(\d+)(/\S+)", line)
        if not match:
            raise RuntimeError(f"ingest did not start: {line}{self.process.stdout.read()}")
        self.url = f"https://127.0.0.1:{match.group(1)}{match.group(2)}"
        self.port = int(match.group(1))
        self._log = open(log or os.devnull, "w")  # noqa: SIM115 - written by the copier thread while the ingest runs
        self._log.write(line)
        self._copier = threading.Thread(target=self._copy_output, daemon=True)
        self._copier.start()

    def _copy_output(self) -> None:
        for line in self.process.stdout:
            self._log.write(line)
            self._log.flush()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self._copier.join(10)
        self._log.close()


async def slow_connections(
    host: str, port: int, connections: int, interval_s: float, stop: asyncio.Event, counts: dict[str, int]
) -> None:
    """Slowloris over TLS: `connections` connections that send request headers one line every `interval_s`
    and never finish them; each one the server closes is opened again, until `stop` is set."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    for key in ("opened", "closed by the server", "refused or failed"):
        counts.setdefault(key, 0)

    async def one() -> None:
        while not stop.is_set():
            try:
                reader, writer = await asyncio.open_connection(host, port, ssl=context)
            except (TimeoutError, OSError):  # ssl.SSLError is an OSError
                counts["refused or failed"] += 1
                await asyncio.sleep(interval_s)
                continue
            counts["opened"] += 1
            try:
                writer.write(b"POST /v1/releases HTTP/1.1\r\nHost: ingest\r\n")
                while not stop.is_set() and not reader.at_eof():
                    writer.write(b"X-Slow: %d\r\n" % counts["opened"])
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1024), timeout=interval_s)
                    except TimeoutError:
                        continue
                counts["closed by the server"] += not stop.is_set()
            except OSError:
                counts["closed by the server"] += 1
            finally:
                writer.transport.abort()

    await asyncio.gather(*(one() for _ in range(connections)))
