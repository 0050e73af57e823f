"""Headless Chromium driven over the DevTools protocol (its --remote-debugging-port), for the
tests of the gateway's pages (the dashboard, the web chat): real mouse clicks and typed text,
the page's script checked for exceptions."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None,
                                    reason="chromium is not installed (make debian-test-deps)")


class Page:
    """One tab of headless Chromium driven over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        self.log = (profile / "chromium.log").open("wb")
        self.process = subprocess.Popen(
            ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu",
             "--disable-dev-shm-usage", "--no-first-run", "--no-default-browser-check",
             "--disable-extensions", "--disable-sync", "--disable-background-networking",
             "--disable-component-update", "--no-proxy-server",
             "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
             f"--user-data-dir={profile}", "--window-size=1400,1000",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"], stdout=self.log, stderr=subprocess.STDOUT)
        self.ids = itertools.count(1)
        self.exceptions: list[str] = []
        self.events: list[dict[str, Any]] = []  # every other DevTools event, in order
        self.ws = self._connect(profile / "DevToolsActivePort")
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("DOM.enable")

    def _connect(self, active_port: Path) -> ClientConnection:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "chromium exited early"
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError, StopIteration,
                                     httpx.HTTPError):
                port = int(active_port.read_text().split()[0])
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
                page = next(t for t in targets if t["type"] == "page")
                return connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
            time.sleep(0.1)
        raise TimeoutError("chromium's DevTools port did not come up in 30 s")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.exceptions.append(details.get("exception", {}).get("description")
                                       or details.get("text", "?"))
            elif "method" in message:
                self.events.append(message)
            if message.get("id") == ident:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        assert "exceptionDetails" not in result, (expression, result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """The first truthy value of ``expression``, polled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"not true in {timeout} s: {expression}\n" + self.text("main"))

    def goto(self, url: str) -> None:
        assert url.startswith("http://127.0.0.1:"), url  # nothing leaves the machine
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete' && "
                      "location.href.indexOf('access_token') < 0")

    def reload(self) -> None:
        self.evaluate("window.beforeReload = true")
        self.call("Page.reload", ignoreCache=True)
        self.wait_for("!window.beforeReload && document.readyState === 'complete'")

    def seen(self, method: str) -> list[dict[str, Any]]:
        """The params of the events named ``method`` so far (the domain must be enabled)."""
        return [e["params"] for e in self.events if e["method"] == method]

    def click(self, selector: str) -> None:
        """A real left click in the middle of the element (it must be visible and enabled)."""
        box = self.evaluate(f"""(() => {{
            const node = document.querySelector({json.dumps(selector)});
            if (!node || node.disabled) return null;
            node.scrollIntoView({{block: "center"}});
            const r = node.getBoundingClientRect();
            return r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null;
        }})()""")
        assert box, f"{selector} is not on the page, visible and enabled"
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1],
                      button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Replace the field's content by typing ``text`` into it."""
        self.click(selector)
        self.evaluate(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", text=text)

    def choose_files(self, selector: str, *files: Path) -> None:
        """What picking ``files`` in the file chooser does."""
        root = self.call("DOM.getDocument", depth=0)["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        assert node, selector
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(f) for f in files])

    def text(self, selector: str) -> str:
        return str(self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"))

    def screenshot(self, path: Path) -> None:
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                         clip={"x": 0, "y": 0, "width": size["width"],
                               "height": size["height"], "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))


def checked(page: Page) -> Iterator[Page]:
    """A fixture's body: the page, then the check that its script threw nothing."""
    yield page
    assert not page.exceptions, page.exceptions
    page.exceptions.clear()
