"""A real ingest app in a thread, for tests that drive the uplink side directly."""
from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from privacy_vision.core.pki import PkiPaths
from privacy_vision.ingest import RELEASES_PATH, build_app, server_ssl_context
from privacy_vision.ingest_store import ReleaseStore


class IngestThread:
    """The real ingest app on a loopback TLS port, in a thread, counting requests that reach it."""

    def __init__(self, pki: PkiPaths, db_path, device_key: bytes, port: int = 0, response_delay_s: float = 0.0) -> None:
        self.requests = 0
        self.store = None
        self._pki, self._db_path, self._key, self._port, self._delay = pki, db_path, device_key, port, response_delay_s
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
            response = await handler(request)
            if self._delay:
                await asyncio.sleep(self._delay)  # stored, but the acknowledgement is late
            return response

        app = build_app(self.store, {"dev-1": self._key})
        app.middlewares.append(count)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", self._port, ssl_context=server_ssl_context(str(self._pki.server_cert), str(self._pki.server_key)))
        self.loop.run_until_complete(site.start())
        self.port = self.runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}{RELEASES_PATH}"

    def stop(self) -> None:
        async def shutdown():
            await self.runner.cleanup()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
