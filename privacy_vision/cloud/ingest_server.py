"""The ingest's TLS server, configured for hostile connections (issue 13, finding 8: 1,100 slow TLS
connections under a 1,024 file-descriptor limit stalled every valid POST and wrote 43 MB of tracebacks).

aiohttp serves HTTP; this module owns the connections it gets:
- its own accept loop hands each socket to asyncio's TLS with a handshake timeout and a short TLS
  shutdown, so a connection that never finishes its handshake, or never answers close_notify, is gone soon;
- at most `max_connections` connections, kept below the file-descriptor limit; when all are taken, the
  least recently active connection that is not serving a request is closed for the new one, so a flood of
  slow connections evicts itself while a device's connection (which completes requests) gets through;
- aiohttp's `keepalive_timeout` closes a connection whose first request's headers are not complete in
  that time (aiohttp ≥ 3.14 starts that timer when the connection is made), and an idle kept-alive one;
- every connection event, client protocol error and loop exception is counted and reported in at most
  one line per kind and interval (the first traceback of a server-side error per interval is kept).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import resource
import socket
import ssl
import sys
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web, web_response
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

# aiohttp's default Server header names Python and aiohttp with their versions, on every answer including those to
# requests it cannot parse (which no application hook sees): the ingest names only itself.
SERVER_NAME = "privacy_vision-ingest"
web_response.SERVER_SOFTWARE = SERVER_NAME

RESERVED_FDS = 64  # database, log, TLS and certificate files, the listener: never handed to clients
_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


@dataclass(frozen=True)
class ServerLimits:
    """Connection limits and timeouts of the ingest's accept loop, so that slow or many clients cannot starve it."""

    max_connections: int = 1000
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 10.0  # aiohttp's keepalive_timeout: also the deadline of a new connection's first headers
    body_timeout_s: float = 10.0  # for the handler: a signed POST's body must arrive within this
    tls_shutdown_timeout_s: float = 2.0
    backlog: int = 1024
    report_interval_s: float = 10.0


def connection_budget(requested: int) -> int:
    """The connections this process can hold: `requested`, raising the soft file-descriptor limit toward
    the hard one if needed, and never more than that limit minus RESERVED_FDS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = requested + RESERVED_FDS
    if soft != resource.RLIM_INFINITY and soft < wanted and (hard == resource.RLIM_INFINITY or hard > soft):
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    available = requested if soft == resource.RLIM_INFINITY else soft - RESERVED_FDS
    if available < 1:
        raise OSError(errno.EMFILE, f"a file-descriptor limit of {soft} leaves no room for connections (ulimit -n)")
    return min(requested, available)


class EventReport:
    """Counts events by kind and writes one line per interval with every count and an example, so
    the log grows by a few lines whatever the number of hostile connections."""

    def __init__(self, interval_s: float, write: Callable[[str], None]) -> None:
        self.interval_s = interval_s
        self._write = write
        self._counts: dict[str, int] = {}
        self._examples: dict[str, str] = {}
        self.totals: dict[str, int] = {}

    def count(self, kind: str, example: str = "") -> bool:
        """Count one event; True if it is the first of its kind in this interval."""
        first = kind not in self._counts
        self._counts[kind] = self._counts.get(kind, 0) + 1
        self.totals[kind] = self.totals.get(kind, 0) + 1
        if first and example:
            self._examples[kind] = example[:200]
        return first

    def flush(self) -> None:
        if not self._counts:
            return
        parts = [
            f"{kind}: {count}" + (f" (e.g. {self._examples[kind]})" if kind in self._examples else "")
            for kind, count in sorted(self._counts.items())
        ]
        self._write(f"connections in the last {self.interval_s:g} s: " + "; ".join(parts))
        self._counts.clear()
        self._examples.clear()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            self.flush()


class _ServerLogHandler(logging.Handler):
    """aiohttp's server log: a client's protocol error (bad request line, too many headers, a broken
    connection) is counted; anything else is written in full once per message and interval, then counted."""

    def __init__(self, report: EventReport) -> None:
        super().__init__()
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, (HttpProcessingError, ConnectionError, ssl.SSLError)):
            lines = str(error).strip().splitlines() or [""]
            self.report.count("client protocol errors", f"{type(error).__name__}: {lines[-1].strip()}")
            return
        if self.report.count(f"server log '{record.getMessage()[:60]}'"):
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()


class _Slot:
    """One accepted connection, from accept to close: a descriptor the server holds."""

    __slots__ = ("busy", "handler", "handshake", "last_active", "sock")

    def __init__(self, sock: socket.socket, now: float) -> None:
        self.sock = sock
        self.last_active = now  # accept time until a request completes; then that request's end
        self.busy = 0
        self.handshake: asyncio.Task | None = None
        self.handler: RequestHandler | None = None

    def alive(self) -> bool:
        return self.sock.fileno() != -1  # asyncio closes this very socket object when the connection ends

    def close(self) -> None:
        if self.handshake is not None and not self.handshake.done():
            self.handshake.cancel()  # asyncio closes the transport and the socket
        elif self.handler is not None and self.handler.transport is not None:
            self.handler.transport.abort()  # at once: no TLS close_notify wait for a connection we evict
        else:
            self.sock.close()


class ConnectionGuard:
    """The connection slots of one server: admission, least-recently-active eviction, and the
    middleware that marks a connection busy while one of its requests is served."""

    def __init__(self, limits: ServerLimits, report: EventReport) -> None:
        self.limits = limits
        self.report = report
        self.max_connections = connection_budget(limits.max_connections)
        self._idle: OrderedDict[_Slot, None] = OrderedDict()  # oldest activity first
        self._busy = 0
        self._by_handler: dict[RequestHandler, _Slot] = {}
        self._swept_at = 0.0

    @property
    def open_connections(self) -> int:
        return len(self._idle) + self._busy

    def _drop(self, slot: _Slot) -> None:
        self._idle.pop(slot, None)
        if slot.handler is not None:
            self._by_handler.pop(slot.handler, None)

    def evict_one(self) -> bool:
        """Close the least recently active connection not serving a request; False if every one is busy."""
        while self._idle:
            slot, _ = self._idle.popitem(last=False)
            self._drop(slot)
            if slot.alive():
                slot.close()
                self.report.count("evicted (least recently active, to admit a new one)")
                return True
        return False

    def sweep(self) -> None:
        """Forget connections that ended on their own (peer, timeouts), so the count stays exact."""
        for slot in [slot for slot in self._idle if not slot.alive()]:
            self._drop(slot)

    def admit(self, sock: socket.socket, now: float) -> _Slot | None:
        if self.open_connections >= self.max_connections and now - self._swept_at > 1.0:
            self.sweep()  # at most once a second: O(connections), and eviction skips ended ones anyway
            self._swept_at = now
        while self.open_connections >= self.max_connections:
            if not self.evict_one():
                sock.close()
                self.report.count(f"refused (all {self.max_connections} connections busy)")
                return None
        slot = _Slot(sock, now)
        self._idle[slot] = None
        return slot

    def attach(self, slot: _Slot, handler: RequestHandler) -> RequestHandler:
        slot.handler = handler
        self._by_handler[handler] = slot
        return handler

    def forget(self, slot: _Slot) -> None:
        self._drop(slot)

    def cancel_handshakes(self) -> None:
        """When the site stops: connections still in their TLS handshake are dropped (aiohttp's shutdown
        closes the established ones)."""
        for slot in list(self._idle):
            if slot.handshake is not None and not slot.handshake.done():
                slot.handshake.cancel()

    @web.middleware
    async def track(self, request: web.Request, handler) -> web.StreamResponse:
        slot = self._by_handler.get(request.protocol)
        if slot is None:  # not one of this guard's connections (e.g. aiohttp's test client)
            return await handler(request)
        if slot.busy == 0:
            self._idle.pop(slot, None)
            self._busy += 1
        slot.busy += 1
        try:
            return await handler(request)
        finally:
            slot.busy -= 1
            slot.last_active = asyncio.get_running_loop().time()
            if slot.busy == 0:
                self._busy -= 1
                self._idle[slot] = None  # newest activity last


class _Listener:
    """What aiohttp's BaseSite calls a server: the listening socket and a close()."""

    def __init__(self, sock: socket.socket, task: asyncio.Task, on_close: Callable[[], None]) -> None:
        self.sockets = [sock]
        self._task = task
        self._on_close = on_close

    def close(self) -> None:
        self._task.cancel()
        for sock in self.sockets:
            sock.close()
        self._on_close()


class GuardedTLSSite(web.BaseSite):
    """A TCP + TLS site with its own accept loop under a ConnectionGuard (aiohttp's TCPSite has no
    handshake timeout and no connection limit)."""

    def __init__(
        self, runner: web.AppRunner, guard: ConnectionGuard, host: str, port: int, ssl_context: ssl.SSLContext
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=guard.limits.backlog)
        self._guard = guard
        self._host, self._port = host, port

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server(
            (self._host, self._port), family=family, backlog=self._backlog, reuse_port=False
        )
        listener.setblocking(False)
        self._server = _Listener(
            listener, asyncio.create_task(self._accept_forever(listener)), self._guard.cancel_handshakes
        )

    async def _accept_forever(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        guard = self._guard
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as error:
                guard.report.count(
                    "accept failed", f"{errno.errorcode.get(error.errno, error.errno)}: {error.strerror}"
                )
                if error.errno in _RESOURCE_ERRNOS:
                    guard.evict_one()  # out of descriptors despite the limit: free one rather than stall
                await asyncio.sleep(0.05)
                continue
            slot = guard.admit(sock, loop.time())
            if slot is not None:
                slot.handshake = asyncio.create_task(self._establish(slot))

    async def _establish(self, slot: _Slot) -> None:
        loop = asyncio.get_running_loop()
        guard = self._guard
        try:
            await loop.connect_accepted_socket(
                lambda: guard.attach(slot, self._runner.server()),
                slot.sock,
                ssl=self._ssl_context,
                ssl_handshake_timeout=guard.limits.handshake_timeout_s,
                ssl_shutdown_timeout=guard.limits.tls_shutdown_timeout_s,
            )
        except OSError as error:  # ssl.SSLError, and the handshake timeout (ConnectionAbortedError), are OSErrors
            guard.forget(slot)
            guard.report.count("TLS handshakes failed or timed out", f"{type(error).__name__}: {error}")
        except asyncio.CancelledError:
            guard.forget(slot)  # evicted mid-handshake, or the site stops
            raise
        finally:
            slot.handshake = None


class TLSServer:
    """A running server: `port`, the event `report`, and `stop()`."""

    def __init__(self, runner: web.AppRunner, guard: ConnectionGuard, report: EventReport) -> None:
        self.runner, self.guard, self.report = runner, guard, report
        self.port = runner.addresses[0][1]
        self._reporting = asyncio.create_task(report.run())

    async def stop(self) -> None:
        self._reporting.cancel()
        await self.runner.cleanup()
        self.report.flush()


async def start_tls_server(
    app: web.Application,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext,
    limits: ServerLimits,
    write: Callable[[str], None] = lambda line: print(line, flush=True),
) -> TLSServer:
    """Serve `app` under the limits (it must not be started yet: the guard adds its middleware)."""
    report = EventReport(limits.report_interval_s, write)
    guard = ConnectionGuard(limits, report)
    app.middlewares.append(guard.track)
    server_log = logging.getLogger(f"privacy_vision.cloud.ingest.http.{id(guard)}")
    server_log.propagate = False
    server_log.addHandler(_ServerLogHandler(report))

    def loop_exception(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """Unexpected loop errors: the first of each message per interval in full, the rest counted."""
        if report.count(f"event loop '{context.get('message', '')[:60]}'"):
            loop.default_exception_handler(context)

    asyncio.get_running_loop().set_exception_handler(loop_exception)
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=limits.idle_timeout_s, logger=server_log, shutdown_timeout=5.0
    )
    await runner.setup()
    await GuardedTLSSite(runner, guard, host, port, ssl_context).start()
    return TLSServer(runner, guard, report)
