"""Cloud-side ingest: verifies signed releases over TLS, rejects replays, stores idempotently (SQLite)."""
from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sqlite3
import ssl
import sys
import time
from pathlib import Path

from aiohttp import web

from privacy_vision.core.protocol import RequestRejected, load_key_file, verify_request

RELEASES_PATH = "/v1/releases"
MAX_BODY_BYTES = 64 * 1024


class ReleaseStore:
    """SQLite store: releases keyed by release id, and the per-device replay state."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection; readers in other threads (tests, admin tools) are fine in WAL mode.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(
            """
            CREATE TABLE IF NOT EXISTS releases (
                release_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, zone_id TEXT NOT NULL,
                window_start REAL NOT NULL, window_end REAL NOT NULL, body TEXT NOT NULL, received_at REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS releases_zone_window ON releases (zone_id, window_start);
            CREATE TABLE IF NOT EXISTS nonces (device_id TEXT NOT NULL, nonce TEXT NOT NULL, seen_at REAL NOT NULL,
                PRIMARY KEY (device_id, nonce));
            CREATE TABLE IF NOT EXISTS sequences (device_id TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL);
            """
        )

    def accept(self, device_id: str, nonce: str, sequence: int, release: dict, body: str, now_s: float) -> str:
        """Atomically check replay state and store; returns 'stored' or 'duplicate'."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT 1 FROM nonces WHERE device_id = ? AND nonce = ?", (device_id, nonce)).fetchone():
                raise RequestRejected(409, "replayed request: nonce already used")
            row = self._db.execute("SELECT last_sequence FROM sequences WHERE device_id = ?", (device_id,)).fetchone()
            if row and sequence <= row[0]:
                raise RequestRejected(409, f"replayed request: sequence {sequence} is not above {row[0]}")
            self._db.execute("INSERT INTO nonces VALUES (?, ?, ?)", (device_id, nonce, now_s))
            self._db.execute("INSERT OR REPLACE INTO sequences VALUES (?, ?)", (device_id, sequence))
            # Nonces older than the clock-skew window can never be replayed successfully.
            self._db.execute("DELETE FROM nonces WHERE seen_at < ?", (now_s - 900,))
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO releases VALUES (?, ?, ?, ?, ?, ?, ?)",
                (release["release_id"], device_id, release["zone_id"], float(release["window_start_s"]),
                 float(release["window_end_s"]), body, now_s),
            )
            self._db.execute("COMMIT")
            return "stored" if cursor.rowcount == 1 else "duplicate"
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def releases(self, zone_id: str | None = None, since_s: float = 0.0) -> list[dict]:
        query = "SELECT body FROM releases WHERE window_start >= ?"
        args: list = [since_s]
        if zone_id:
            query += " AND zone_id = ?"
            args.append(zone_id)
        return [json.loads(row[0]) for row in self._db.execute(query + " ORDER BY window_start, zone_id", args)]

    def close(self) -> None:
        self._db.close()


REQUIRED_FIELDS = {"release_id": str, "zone_id": str, "window_start_s": (int, float), "window_end_s": (int, float),
                   "suppressed": bool, "epsilon": (int, float), "k": int, "mechanism": str, "privacy_unit": str}


def validate_release(release: object) -> dict:
    if not isinstance(release, dict):
        raise RequestRejected(422, "body must be a JSON object")
    for name, kind in REQUIRED_FIELDS.items():
        if not isinstance(release.get(name), kind):
            raise RequestRejected(422, f"field {name!r} missing or of the wrong type")
    return release


def build_app(store: ReleaseStore, device_keys: dict[str, bytes]) -> web.Application:
    async def post_release(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            device_id = request.headers.get("X-PV-Device", "")
            key = device_keys.get(device_id)
            if key is None:
                raise RequestRejected(401, "unknown device")
            now = time.time()
            signed = verify_request(key, request.method, request.path, dict(request.headers), body, now)
            try:
                release = validate_release(json.loads(body))
            except json.JSONDecodeError:
                raise RequestRejected(422, "body is not JSON") from None
            outcome = store.accept(signed.device_id, signed.nonce, signed.sequence, release, body.decode(), now)
        except RequestRejected as rejected:
            return web.json_response({"status": "rejected", "reason": rejected.reason}, status=rejected.status)
        return web.json_response({"status": outcome, "release_id": release["release_id"]}, status=200)

    async def list_releases(request: web.Request) -> web.Response:
        try:
            since = float(request.query.get("since", "0"))
        except ValueError:
            return web.json_response({"error": "since must be a number (unix seconds)"}, status=400)
        return web.json_response(store.releases(request.query.get("zone"), since))

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(RELEASES_PATH, post_release)
    app.router.add_get(RELEASES_PATH, list_releases)
    app.router.add_get("/healthz", health)
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


async def _serve(args: argparse.Namespace) -> None:
    store = ReleaseStore(args.db)
    app = build_app(store, parse_device_keys(args.device_key))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port, ssl_context=server_ssl_context(args.cert, args.key))
    await site.start()
    port = runner.addresses[0][1]
    print(f"ingest listening on https://{args.host}:{port}{RELEASES_PATH} (store: {store.path})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    store.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="privacy-vision-ingest", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8443, help="0 picks a free port (printed at start)")
    parser.add_argument("--cert", required=True, help="server certificate (PEM)")
    parser.add_argument("--key", required=True, help="server private key (PEM)")
    parser.add_argument("--db", default="var/ingest.sqlite", help="SQLite database path")
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
