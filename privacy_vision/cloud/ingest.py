"""Cloud-side ingest: verifies signed releases over TLS, rejects replays, stores idempotently
(SQLite or PostgreSQL), applies retention, and serves a JSON read API and a dashboard."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import math
import re
import signal
import ssl
import stat
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from privacy_vision.cloud.devices import DeviceRegistry, DeviceRegistryError
from privacy_vision.cloud.ingest_server import ServerLimits, start_tls_server
from privacy_vision.cloud.ingest_store import Page, Quotas, ReleaseStore
from privacy_vision.cloud.release_views import page_csv, page_json
from privacy_vision.cloud.trust import IngestPolicy, check_release
from privacy_vision.core.analyst_tokens import AnalystTokens, TokenFileError
from privacy_vision.core.protocol import (
    HEADER_DEVICE,
    RequestRejected,
    check_signed_body,
    verify_signed_headers,
)
from privacy_vision.core.release_schema import (
    Identifier,
    InvalidRelease,
    Name,
    Seconds,
    parse_release_json,
    validation_reason,
)

RELEASES_PATH = "/v1/releases"
DASHBOARD_HTML = resources.files("privacy_vision.cloud").joinpath("dashboard.html").read_text()
MAX_BODY_BYTES = 64 * 1024


MAX_CONCURRENT_READS = 2
MAX_ZONES_PER_QUERY = 50


def query_parameters(query) -> dict:
    """The query string as a dict: `zone` may repeat (any of the zones), any other parameter given twice is refused
    rather than one of its values silently used."""
    values: dict = {}
    for name in query:
        given = query.getall(name)
        if name == "zone":
            values[name] = given
        elif len(given) > 1:
            raise ValueError(f"{name}: given {len(given)} times; give it once")
        else:
            values[name] = given[0]
    return values


def encode_cursor(position: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(position)).encode()).decode()


class ReleaseQuery(BaseModel):
    """Query parameters of GET /v1/releases; anything else, or out of range, is a 400 with the reason."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    since: Seconds = 0.0
    until: Seconds | None = None
    zone: Annotated[list[Name], Field(min_length=1, max_length=MAX_ZONES_PER_QUERY)] | None = None  # zone=a&zone=b
    device: Identifier | None = None
    limit: Annotated[int, Field(ge=1, le=1000)] = 1000
    format: Literal["json", "csv"] = "json"
    overlap: bool = False  # every cell overlapping [since, until), not only those starting in it
    cursor: Annotated[str, Field(max_length=400, pattern=r"^[A-Za-z0-9_\-=]+$")] | None = None

    _position: tuple[float, str] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _decode_cursor(self) -> ReleaseQuery:
        if self.cursor is not None:
            try:
                start, release_id = json.loads(base64.urlsafe_b64decode(self.cursor))
                self._position = float(start), str(release_id)
            except (ValueError, TypeError):
                raise ValueError("cursor is not one this server issued") from None
        return self

    def position(self) -> tuple[float, str] | None:
        return self._position


def _content_security_policy(html: str) -> str:
    """Only the dashboard's own inline script and style may run (by hash); nothing else loads or frames it."""

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()}'" for body in bodies
        )

    return (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


SECURITY_HEADERS = {
    "Content-Security-Policy": _content_security_policy(DASHBOARD_HTML),
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as error:  # aiohttp's own 404/405/413 carry them too
        error.headers.update(SECURITY_HEADERS)
        raise
    response.headers.update(SECURITY_HEADERS)
    return response


def build_app(
    store: ReleaseStore,
    devices: DeviceRegistry,
    analyst_tokens: AnalystTokens | None = None,
    body_timeout_s: float = ServerLimits.body_timeout_s,
    policy: IngestPolicy | None = None,
    read_only: bool = False,
) -> web.Application:
    """Devices post with their HMAC keys; analysts read with bearer tokens (none given: nobody reads); a read-only
    server (privacy-vision dashboard) has no POST route (405)."""
    analysts = analyst_tokens or AnalystTokens(None)
    policy = policy or IngestPolicy()

    async def post_release(request: web.Request) -> web.Response:
        """Every client fault is a 4xx with a reason; only the server's own failures may be a 5xx.
        The signed headers are checked before the body is read, and the body must arrive in time."""
        try:
            try:
                device = devices.lookup(request.headers.get(HEADER_DEVICE, ""))
            except DeviceRegistryError as error:
                raise RequestRejected(503, str(error)) from None
            if device is None:
                raise RequestRejected(401, "unknown device")
            now = time.time()
            signed = verify_signed_headers(device.key, request.method, request.path, request.headers, now)
            try:
                async with asyncio.timeout(body_timeout_s):
                    body = await request.read()
            except TimeoutError:
                raise RequestRejected(408, f"request body not received within {body_timeout_s:g} s") from None
            check_signed_body(signed, body)
            try:
                release = parse_release_json(body)
                text = body.decode("utf-8")
            except (InvalidRelease, UnicodeDecodeError) as invalid:
                raise RequestRejected(422, f"release does not match the schema: {invalid}") from None
            check_release(release, device, now, policy)
            outcome = await asyncio.to_thread(
                store.accept, signed.device_id, signed.nonce, signed.sequence, release, text, now, policy.quotas
            )
        except RequestRejected as rejected:
            return web.json_response(
                {"status": "rejected", "reason": rejected.reason, **rejected.details}, status=rejected.status
            )
        return web.json_response({"status": outcome, "release_id": release.release_id}, status=200)

    reads = asyncio.Semaphore(MAX_CONCURRENT_READS)

    async def list_releases(request: web.Request) -> web.Response:
        """Analysts only; newest first, filtered, one page; the next page's cursor is in the X-Next-Cursor header.
        Each row is the release as stored plus `received_at` and `intervals` (every value's 95% interval, from
        core/intervals.py); format=csv gives one line per value instead (the header on the first page only)."""
        verdict = analysts.check(request.headers.get("Authorization"))
        if verdict.analyst is None:
            return web.json_response(
                {"status": "rejected", "reason": verdict.reason},
                status=verdict.status,
                headers={"WWW-Authenticate": 'Bearer realm="privacy_vision analytics"'},
            )
        try:
            query = ReleaseQuery.model_validate(query_parameters(request.query))
        except ValidationError as error:
            return web.json_response({"status": "rejected", "reason": validation_reason(error)}, status=400)
        except ValueError as error:
            return web.json_response({"status": "rejected", "reason": str(error)}, status=400)

        def read() -> tuple[Page, str]:
            page = store.releases_page(
                query.zone, query.since, query.until, query.device, query.position(), query.limit, query.overlap
            )
            return page, (page_csv(page, header=query.cursor is None) if query.format == "csv" else page_json(page))

        async with reads:  # bounded, so readers cannot take every worker thread from the writers
            page, text = await asyncio.to_thread(read)
        headers = {"X-Next-Cursor": encode_cursor(page.last)} if page.rows == query.limit else {}
        if query.format == "csv":
            return web.Response(text=text, content_type="text/csv", headers=headers)
        return web.Response(text=text, content_type="application/json", headers=headers)

    async def dashboard(_: web.Request) -> web.Response:
        """The page itself holds no data (a browser cannot send a bearer header on navigation); it asks
        for the token and reads the API with it."""
        return web.Response(text=DASHBOARD_HTML, content_type="text/html")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[security_headers])
    if not read_only:
        app.router.add_post(RELEASES_PATH, post_release)
    app.router.add_get(RELEASES_PATH, list_releases)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", dashboard)
    return app


# TLS 1.2 with forward secrecy and AEAD only (no CBC suites); TLS 1.3's suites are all AEAD.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class PrivateKeyExposed(ssl.SSLError):
    """The server's TLS key file can be read by other users."""


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS ≥ 1.2 without CBC suites, from a key file only its owner may read."""
    mode = Path(key).stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PrivateKeyExposed(
            f"TLS key file {key} is accessible by group/others (mode {oct(mode & 0o777)}); run: chmod 600 {key}"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(cert, key)
    return context


def device_registry(specs: list[str], folder: str | None) -> DeviceRegistry:
    """--device-key DEVICE_ID=PATH options and the --devices folder; SystemExit with one line for any problem."""
    explicit = []
    for spec in specs:
        device_id, separator, path = spec.partition("=")
        if not separator or not device_id or not path:
            raise SystemExit(f"ingest: --device-key expects DEVICE_ID=PATH, got {spec!r}")
        explicit.append((device_id, Path(path)))
    try:
        return DeviceRegistry(explicit, Path(folder) if folder else None)
    except DeviceRegistryError as error:
        raise SystemExit(f"ingest: {error}") from None


HOUSEKEEPING_S = 60.0


async def _housekeeping(store: ReleaseStore, retention_days: float, stop: asyncio.Event) -> None:
    """Every minute, forget nonces too old to replay; at start and hourly, delete releases older than the
    retention period (0: keep them). Kept out of the POST transaction, so concurrent ingests on one
    database never contend on it; a failure is an ERROR line and is tried again next time."""
    last_retention = -math.inf
    while not stop.is_set():
        now = time.time()
        try:
            await asyncio.to_thread(store.purge_nonces, now)
            if retention_days > 0 and now - last_retention >= 3600:
                last_retention = now
                removed = await asyncio.to_thread(store.purge_older_than, now - retention_days * 86400)
                if removed:
                    print(f"retention: deleted {removed} releases older than {retention_days:g} days", flush=True)
        except Exception as error:  # the database: reported, and the next round tries again
            print(f"ERROR housekeeping failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=HOUSEKEEPING_S)


async def _serve(args: argparse.Namespace) -> None:
    try:
        store = ReleaseStore(args.db, read_only=args.read_only)
    except FileNotFoundError as error:
        raise SystemExit(f"ingest: {error}") from None
    try:
        analysts = AnalystTokens(args.analyst_tokens)
    except TokenFileError as error:
        raise SystemExit(f"ingest: {error}") from None
    limits = ServerLimits(
        max_connections=args.max_connections,
        handshake_timeout_s=args.handshake_timeout,
        idle_timeout_s=args.idle_timeout,
        body_timeout_s=args.body_timeout,
    )
    devices = device_registry(args.device_key, args.devices)
    policy = IngestPolicy(
        retention_s=args.retention_days * 86400,
        quotas=Quotas(args.max_zones_per_device, args.max_releases_per_device_day),
    )
    app = build_app(store, devices, analysts, limits.body_timeout_s, policy, read_only=args.read_only)
    server = await start_tls_server(app, args.host, args.port, server_ssl_context(args.cert, args.key), limits)
    print(
        f"ingest listening on https://{args.host}:{server.port}{RELEASES_PATH} (store: {store.description})"
        + ("; read-only: no device may post" if args.read_only else ""),
        flush=True,
    )
    print(
        f"admitting {devices.describe()}; per device at most {policy.quotas.max_zones} zones and "
        f"{policy.quotas.max_releases_per_day} new releases per UTC day",
        flush=True,
    )
    print(
        f"read API and dashboard: https://{args.host}:{server.port}/ for analyst tokens in {args.analyst_tokens}"
        if args.analyst_tokens
        else "read API closed: no --analyst-tokens given",
        flush=True,
    )
    print(
        f"connections: at most {server.guard.max_connections}, TLS handshake {limits.handshake_timeout_s:g} s, first request "
        f"headers and keep-alive idle {limits.idle_timeout_s:g} s, request body {limits.body_timeout_s:g} s",
        flush=True,
    )
    stop = asyncio.Event()
    housekeeping = asyncio.create_task(
        _housekeeping(store, args.retention_days, stop) if not args.read_only else stop.wait()
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await housekeeping
    await server.stop()
    store.close()


def build_parser() -> argparse.ArgumentParser:
    """Every option (test_docs parses the docs' command lines with it)."""
    parser = argparse.ArgumentParser(prog="privacy-vision-ingest", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port (printed at start)")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument(
        "--db", default="var/ingest.sqlite", help="SQLite path, or a PostgreSQL DSN (postgresql://user@host/db)"
    )
    parser.add_argument(
        "--retention-days", type=float, default=90.0, help="delete releases older than this (0 = keep forever)"
    )
    parser.add_argument(
        "--device-key",
        action="append",
        default=[],
        metavar="DEVICE_ID=PATH",
        help="HMAC key file of a device allowed to post (repeatable; one key per device); a registration written "
        "beside it (PATH with .json) is checked too",
    )
    parser.add_argument(
        "--devices",
        metavar="DIR",
        help="folder of device keys as 'privacy-vision pki --device NAME' writes them (NAME.key, NAME.json): every "
        "one is admitted, and a key added or removed there applies within a second",
    )
    quotas = Quotas()
    parser.add_argument(
        "--max-zones-per-device",
        type=int,
        default=quotas.max_zones,
        help="distinct zones one device may have (429 beyond)",
    )
    parser.add_argument(
        "--max-releases-per-device-day",
        type=int,
        default=quotas.max_releases_per_day,
        help="new releases one device may post per UTC day (429 beyond)",
    )
    defaults = ServerLimits()
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="open connections at most (kept below the file-descriptor limit); when all are taken, the least "
        "recently active idle one is closed for a new one",
    )
    parser.add_argument(
        "--handshake-timeout", type=float, default=defaults.handshake_timeout_s, help="seconds for the TLS handshake"
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=defaults.idle_timeout_s,
        help="seconds for a new connection's first request headers, and for an idle kept-alive connection",
    )
    parser.add_argument(
        "--body-timeout", type=float, default=defaults.body_timeout_s, help="seconds for a signed POST's body"
    )
    parser.add_argument(
        "--analyst-tokens",
        metavar="FILE",
        help="SHA-256 hashes of the analyst tokens allowed to read (privacy-vision pki --analyst NAME writes it); "
        "re-read when it changes; without it the read API admits nobody",
    )
    parser.add_argument(
        "--read-only",
        action="store_true",
        help="serve the read API and the dashboard only, from an existing store opened for reading: no --device-key, "
        "no POST, no retention deletes (what privacy-vision dashboard runs)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.read_only and (args.device_key or args.devices):
        parser.error("--read-only takes no --device-key or --devices: nobody may post to a read-only ingest")
    if not args.device_key and not args.devices and not args.read_only:
        parser.error(
            "at least one --device-key DEVICE_ID=PATH, or --devices DIR, is required (or --read-only to serve reads only)"
        )
    try:
        asyncio.run(_serve(args))
    except (OSError, ssl.SSLError) as error:
        print(f"ingest: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
