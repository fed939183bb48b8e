"""A real headless Chromium for page tests, driven over the DevTools protocol.

Debian's ``chromium`` (``.ci/run`` installs it); no browser download, no driver package: the
DevTools websocket and aiohttp's client are all it takes to navigate, type, click and read.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any

import aiohttp
import pytest

from tests.conftest import IN_CI
from tests.servers import free_port

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",
]  # fmt: skip


def chromium_path() -> str:
    """Debian's chromium; a missing browser fails in CI and skips elsewhere."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if IN_CI:
            pytest.fail("chromium is not installed: .ci/run installs it")
        pytest.skip("needs chromium (apt-get install chromium)")
    return path


class Page:
    """One tab: ``await page.goto(url)``, ``await page.js("expression")``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        await self._ws.send_json({"id": message_id, "method": method, "params": params})
        while True:
            message = json.loads((await asyncio.wait_for(self._ws.receive(), 30)).data)
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._events.append(message)

    async def js(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate",
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
            userGesture=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def wait_for(self, condition: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if await self.js(condition):
                    return
            except RuntimeError:
                pass  # the page is between documents
            await asyncio.sleep(0.05)
        raise TimeoutError(condition)


class Browser:
    """``async with Browser() as browser: page = await browser.page()``."""

    async def __aenter__(self) -> Browser:
        # Chromium's helper processes may still write to the profile as it is removed.
        self._profile = tempfile.TemporaryDirectory(
            prefix="hepgg-chromium-", ignore_cleanup_errors=True
        )
        port = free_port()
        self._process = subprocess.Popen(
            [chromium_path(), *FLAGS, f"--remote-debugging-port={port}",
             f"--user-data-dir={self._profile.name}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        self._http = aiohttp.ClientSession(f"http://127.0.0.1:{port}")
        for _ in range(200):
            try:
                async with self._http.get("/json/list") as response:
                    targets = await response.json()
                if any(t["type"] == "page" for t in targets):
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError("chromium did not open its DevTools port")
        self._targets = targets
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        return self

    async def page(self) -> Page:
        target = next(t for t in self._targets if t["type"] == "page")
        ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._sockets.append(ws)
        page = Page(ws)
        await page.call("Page.enable")
        # A headless tab never has focus, and the clipboard API wants a focused document.
        await page.call("Emulation.setFocusEmulationEnabled", enabled=True)
        return page

    async def __aexit__(self, *exc: object) -> None:
        for ws in self._sockets:
            await ws.close()
        await self._http.close()
        # The whole process group: the browser's renderer and helper processes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._profile.cleanup()
