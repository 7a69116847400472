"""Cloud-side ingest: verifies signed releases over TLS, rejects replays, stores idempotently
(SQLite or PostgreSQL), applies retention, and serves a JSON read API and a dashboard."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
import time
from importlib import resources

from aiohttp import web

from privacy_vision.core.protocol import HEADER_DEVICE, RequestRejected, load_key_file, verify_request
from privacy_vision.core.release_schema import InvalidRelease, parse_release_json
from privacy_vision.ingest_store import ReleaseStore

RELEASES_PATH = "/v1/releases"
DASHBOARD_HTML = resources.files("privacy_vision").joinpath("dashboard.html").read_text()
MAX_BODY_BYTES = 64 * 1024


def build_app(store: ReleaseStore, device_keys: dict[str, bytes]) -> web.Application:
    async def post_release(request: web.Request) -> web.Response:
        """Every client fault is a 4xx with a reason; only the server's own failures may be a 5xx."""
        body = await request.read()
        try:
            device_id = request.headers.get(HEADER_DEVICE, "")
            key = device_keys.get(device_id)
            if key is None:
                raise RequestRejected(401, "unknown device")
            now = time.time()
            signed = verify_request(key, request.method, request.path, request.headers, body, now)
            try:
                release = parse_release_json(body)
                text = body.decode("utf-8")
            except (InvalidRelease, UnicodeDecodeError) as invalid:
                raise RequestRejected(422, f"release does not match the schema: {invalid}") from None
            outcome = await asyncio.to_thread(store.accept, signed.device_id, signed.nonce, signed.sequence, release, text, now)
        except RequestRejected as rejected:
            return web.json_response({"status": "rejected", "reason": rejected.reason, **rejected.details}, status=rejected.status)
        return web.json_response({"status": outcome, "release_id": release.release_id}, status=200)

    async def list_releases(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": "since must be a number (unix seconds)"}, status=400)
        return web.json_response(await asyncio.to_thread(store.releases, request.query.get("zone"), since))

    async def dashboard(_: web.Request) -> web.Response:
        return web.Response(text=DASHBOARD_HTML, content_type="text/html")

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(RELEASES_PATH, post_release)
    app.router.add_get(RELEASES_PATH, list_releases)
    app.router.add_get("/healthz", health)
    app.router.add_get("/", dashboard)
    return app


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def parse_device_keys(specs: list[str]) -> dict[str, bytes]:
    keys: dict[str, bytes] = {}
    for spec in specs:
        device_id, separator, path = spec.partition("=")
        if not separator or not device_id or not path:
            raise SystemExit(f"--device-key expects DEVICE_ID=PATH, got {spec!r}")
        keys[device_id] = load_key_file(path)
    return keys


async def _apply_retention(store: ReleaseStore, days: float, stop: asyncio.Event) -> None:
    """Delete releases older than the retention period now and then hourly."""
    while not stop.is_set():
        removed = await asyncio.to_thread(store.purge_older_than, time.time() - days * 86400)
        if removed:
            print(f"retention: deleted {removed} releases older than {days:g} days", flush=True)
        try:
            await asyncio.wait_for(stop.wait(), timeout=3600)
        except asyncio.TimeoutError:
            pass


async def _serve(args: argparse.Namespace) -> None:
    store = ReleaseStore(args.db)
    app = build_app(store, parse_device_keys(args.device_key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=server_ssl_context(args.cert, args.key))
    await site.start()
    port = runner.addresses[0][1]
    print(f"ingest listening on https://{args.host}:{port}{RELEASES_PATH} (store: {store.description})", flush=True)
    stop = asyncio.Event()
    retention = asyncio.create_task(_apply_retention(store, args.retention_days, stop)) if args.retention_days > 0 else None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    if retention is not None:
        await retention
    await runner.cleanup()
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="privacy-vision-ingest", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port (printed at start)")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--db", default="var/ingest.sqlite", help="SQLite path, or a PostgreSQL DSN (postgresql://user@host/db)")
    parser.add_argument("--retention-days", type=float, default=90.0, help="delete releases older than this (0 = keep forever)")
    parser.add_argument("--device-key", action="append", default=[], metavar="DEVICE_ID=PATH",
                        help="HMAC key file of a device allowed to post (repeatable)")
    args = parser.parse_args(argv)
    if not args.device_key:
        parser.error("at least one --device-key DEVICE_ID=PATH is required")
    try:
        asyncio.run(_serve(args))
    except (OSError, ssl.SSLError) as error:
        print(f"ingest: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
