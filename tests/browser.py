"""Open a local HTML page in headless Chromium and report what went wrong, for page tests.

    load = open_page(path, screenshot=tmp_path / "page.png")
    assert load.ok, load.problems()

Chromium is driven through the DevTools protocol over a pipe (`--remote-debugging-pipe`:
the browser reads commands on fd 3 and writes replies and events on fd 4, each a JSON
message ended by a NUL byte), so no websocket client is needed. What counts as a
problem:

- `Runtime.consoleAPICalled` of type error or assert (`console.error(...)`);
- `Runtime.exceptionThrown` (an uncaught exception, a syntax error in a script);
- `Log.entryAdded` at level error (a resource that failed to load, a CSP violation);
- any request the page made to something other than a `file:` or `data:` URL (a page that
  must work offline loads nothing from the network).

Tests that need Chromium use the `needs_chromium` mark: they skip, saying why, only where
no browser is installed (`make` installs Debian's `chromium` when it can).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--hide-scrollbars",
    "--remote-debugging-pipe",
)
MAX_FULL_PAGE_HEIGHT = 12000  # px; a screenshot of the whole page is cut there
LOCAL_SCHEMES = ("file:", "data:", "about:")


def chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


needs_chromium = pytest.mark.skipif(
    chromium() is None,
    reason="Chromium is not installed (Debian: apt-get install chromium; `make` installs it when run as root)")


class BrowserError(Exception):
    """Chromium could not be started or did not answer in time (not a problem of the page)."""


@dataclass
class PageLoad:
    """What happened while a page loaded: its console errors, exceptions and network requests."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    title: str = ""

    @property
    def ok(self) -> bool:
        return not (self.console_errors or self.exceptions or self.log_errors or self.external_requests)

    def problems(self) -> str:
        """Every problem, one per line, for an assertion message."""
        lines = [f"console.error: {m}" for m in self.console_errors]
        lines += [f"exception: {m}" for m in self.exceptions]
        lines += [f"log error: {m}" for m in self.log_errors]
        lines += [f"external request: {m}" for m in self.external_requests]
        return "\n".join(lines) or "no problems"


def open_page(path: Path, *, screenshot: Path | None = None, width: int = 1280, height: int | None = None,
              timeout: float = 60.0) -> PageLoad:
    """Load the local file `path` in headless Chromium; screenshot it to `screenshot` (PNG) if given.

    `height=None` screenshots the whole page (up to MAX_FULL_PAGE_HEIGHT px); a number
    screenshots that much of the top of the page.
    """
    executable = chromium()
    if executable is None:
        raise BrowserError("Chromium is not installed")
    url = Path(path).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="autograder-chromium-") as profile, _Browser(executable, profile,
                                                                                         timeout) as browser:
        return browser.load(url, screenshot=screenshot, width=width, height=height)


class _Browser:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, executable: str, profile: str, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a full pipe would block Chromium

        def pipe_fds() -> None:  # in the child: the pipe ends on fds 3 and 4, where Chromium expects them
            commands, replies = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, replies_write))
            os.dup2(commands, 3)
            os.dup2(replies, 4)
            os.close(commands)
            os.close(replies)

        # close_fds=False keeps fds 3 and 4; every other fd Python opened is close-on-exec anyway.
        self.process = subprocess.Popen(
            [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"], close_fds=False,
            preexec_fn=pipe_fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            start_new_session=True)
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> "_Browser":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._send("Browser.close")
        except (OSError, BrowserError):
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)
        self._stderr.close()

    def load(self, url: str, *, screenshot: Path | None, width: int, height: int | None) -> PageLoad:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Runtime", "Log", "Page", "Network"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", session=session, width=width, height=height or 800,
                  deviceScaleFactor=1, mobile=False)
        self.events.clear()
        self.call("Page.navigate", session=session, url=url)
        self.wait_for("Page.loadEventFired", session)
        # Let timers and animation frames queued at load run, so their errors are seen too.
        self.call("Runtime.evaluate", session=session, awaitPromise=True,
                  expression="new Promise(r => requestAnimationFrame(() => setTimeout(r, 100)))")
        load = PageLoad(url)
        load.title = self.call("Runtime.evaluate", session=session, expression="document.title",
                               returnByValue=True)["result"].get("value", "")
        if screenshot is not None:
            if height is None:
                size = self.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                full = min(MAX_FULL_PAGE_HEIGHT, max(1, int(size["height"] + 0.5)))
                self.call("Emulation.setDeviceMetricsOverride", session=session, width=width, height=full,
                          deviceScaleFactor=1, mobile=False)
            data = self.call("Page.captureScreenshot", session=session, format="png")["data"]
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(data))
            load.screenshot = screenshot
        self._collect(load, session)
        return load

    def _collect(self, load: PageLoad, session: str) -> None:
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                load.console_errors.append(" ".join(_remote_text(a) for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                text = details.get("exception", {}).get("description") or details.get("text", "")
                load.exceptions.append(text.splitlines()[0] if text else "exception")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                load.log_errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
            elif method == "Network.requestWillBeSent":
                request_url = params.get("request", {}).get("url", "")
                if not request_url.startswith(LOCAL_SCHEMES):
                    load.external_requests.append(request_url)

    # -- the protocol ------------------------------------------------------------------------

    def call(self, method: str, *, session: str | None = None, **params) -> dict:
        """Send a command and wait for its reply (events that arrive meanwhile are kept)."""
        sent = self._send(method, session=session, **params)
        while True:
            message = self._receive()
            if message.get("id") == sent:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_for(self, method: str, session: str) -> dict:
        """Wait for an event of this session (events already received count)."""
        for event in self.events:
            if event["method"] == method and event.get("sessionId") == session:
                return event
        while True:
            message = self._receive()
            if "method" in message:
                self.events.append(message)
                if message["method"] == method and message.get("sessionId") == session:
                    return message

    def _send(self, method: str, *, session: str | None = None, **params) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._commands, data):]
        except BrokenPipeError:
            self.process.wait()
            raise BrowserError(f"Chromium exited (code {self.process.returncode}){self._stderr_tail()}") from None
        return self._next_id

    def _receive(self) -> dict:
        while b"\0" not in self._buffer:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0 or not select.select([self._replies], [], [], remaining)[0]:
                raise BrowserError(f"Chromium did not answer in time{self._stderr_tail()}")
            chunk = os.read(self._replies, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited (code {self.process.wait()}){self._stderr_tail()}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def _stderr_tail(self) -> str:
        if self.process.poll() is None:
            return ""
        self._stderr.seek(0)
        return ": " + self._stderr.read().decode(errors="replace")[-2000:]


def _remote_text(arg: dict) -> str:
    """A console argument (a Runtime.RemoteObject) as text."""
    if "value" in arg:
        return str(arg["value"])
    return arg.get("description") or arg.get("unserializableValue") or arg.get("type", "")
