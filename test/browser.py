"""Headless Chromium driven over the DevTools protocol (with aiohttp's websocket client, already a
dependency), so a test can use the dashboard as an analyst does: type the token, press the button,
read the page and take a screenshot. `--dump-dom` alone cannot type."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One headless browser with one page; use as `async with Chromium() as page:`."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.width, self.height = width, height
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("chromium is not installed: make setup installs Debian's chromium package")
        self._profile = Path(tempfile.mkdtemp(prefix="pv-chromium-"))
        self._process = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--ignore-certificate-errors",
                f"--user-data-dir={self._profile}",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                f"--window-size={self.width},{self.height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        port = await self._devtools_port()
        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            async with self._session.get(f"http://127.0.0.1:{port}/json/list") as response:
                pages = [t for t in await response.json() if t["type"] == "page"]
            if pages or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        if not pages:
            raise RuntimeError("chromium opened no page")
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024)
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _devtools_port(self) -> int:
        marker = self._profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (marker.is_file() and marker.read_text().strip()):
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited: {self._process.stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port within 60 s")
            await asyncio.sleep(0.05)
        return int(marker.read_text().split()[0])

    async def __aexit__(self, *_) -> None:
        await self._ws.close()
        await self._session.close()
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    async def send(self, method: str, **params) -> dict:
        """One DevTools command; events in between are skipped (nothing here needs them)."""
        ident = next(self._ids)
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = await self._ws.receive(timeout=60)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise RuntimeError(f"DevTools connection ended: {message.type}")
            answer = json.loads(message.data)
            if answer.get("id") == ident:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]

    async def evaluate(self, expression: str):
        """The expression's value (awaited if it is a promise); a page exception fails the test."""
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:g} s for {expression}")
            await asyncio.sleep(0.1)
        return value

    async def open(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def type_into(self, selector: str, text: str) -> None:
        """Focus the field and insert text as a keyboard would."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path) -> None:
        """The whole page, not only the window."""
        height = await self.evaluate("Math.ceil(document.documentElement.scrollHeight)")
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=self.width,
            height=int(height),
            deviceScaleFactor=1,
            mobile=False,
        )
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))
