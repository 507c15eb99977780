"""Fixtures for the dashboard's real-browser tests: a real `trellis demo` and a headless Chromium.

Run through scripts/test-browser.sh, which makes the venv (selenium, pytest) and points TRELLIS_BIN at the
binary under test. Chromium and chromedriver come from Debian (/usr/bin/chromium, /usr/bin/chromedriver), so
Selenium Manager never downloads anything (SE_OFFLINE=true).
"""

from __future__ import annotations

import base64
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

os.environ.setdefault("SE_OFFLINE", "true")

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("BROWSER_ARTIFACTS", ROOT / "target" / "browser-artifacts"))
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
DASHBOARD_LINE = re.compile(r"dashboard: (\S+) — sign in as (\S+) / (\S+)")
STARTUP_TIMEOUT = 120  # a debug build on a busy machine
TAIL_LINES = 50

# Screenshots written during the run, listed at its end.
SCREENSHOTS: list[Path] = []


def _missing(what: str) -> None:
    """Fails on CI (a missing prerequisite there is a broken pipeline), skips elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(what, pytrace=False)
    pytest.skip(what)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    """A running `trellis demo`: its dashboard address, the sign-in it printed, and its output."""

    def __init__(self, bin_path: Path, data_dir: Path, log_path: Path):
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRELLIS__")}
        env.update(
            TRELLIS_ENV="test",
            TRELLIS__HTTP__PORT=str(self.port),
            TRELLIS__STORAGE__DATA_DIR=str(data_dir),
            TRELLIS__LOG__LEVEL="info",
        )
        self.lines: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.url: str | None = None
        self.email: str | None = None
        self.password: str | None = None
        self._found = threading.Event()
        self._log = open(log_path, "w", encoding="utf-8")
        self.log_path = log_path
        self.proc = subprocess.Popen(
            [str(bin_path), "demo"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            self._log.write(line + "\n")
            self._log.flush()
            if not self._found.is_set():
                m = DASHBOARD_LINE.search(line)
                if m:
                    self.url, self.email, self.password = m.group(1), m.group(2), m.group(3)
                    self._found.set()
        self._found.set()  # the process ended: wake whoever waits

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self._found.wait(0.2):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"`trellis demo` did not print its dashboard line within {timeout:.0f} s\n{self.tail()}"
                )
        if self.url is None:
            raise AssertionError(
                f"`trellis demo` exited (status {self.proc.poll()}) before printing its dashboard line\n{self.tail()}"
            )

    def tail(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self._log.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def trellis_bin() -> Path:
    bin_path = Path(os.environ.get("TRELLIS_BIN", ROOT / "target" / "debug" / "trellis"))
    if not bin_path.is_absolute():
        bin_path = ROOT / bin_path
    if not (bin_path.is_file() and os.access(bin_path, os.X_OK)):
        _missing(f"the trellis binary {bin_path} is missing: build it first (cargo build)")
    return bin_path


@pytest.fixture(scope="module")
def demo(trellis_bin: Path, artifacts: Path):
    data_dir = Path(tempfile.mkdtemp(prefix="trellis-browser-"))
    d = Demo(trellis_bin, data_dir, artifacts / "trellis-demo.log")
    try:
        d.wait_ready(STARTUP_TIMEOUT)
        yield d
    finally:
        d.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture()
def browser(artifacts: Path):
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            _missing(f"{path} is missing: install Debian's chromium and chromium-driver (scripts/services.sh)")
    profile = tempfile.mkdtemp(prefix="trellis-chromium-")
    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(artifacts / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture()
def shoot():
    """Saves a screenshot of the browser as target/browser-artifacts/<name>.png; answers its path."""
    return screenshot


def screenshot(driver, name: str) -> Path:
    """The whole page (not only the viewport), through the DevTools protocol; the viewport if that fails."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    try:
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        shot = driver.execute_cdp_cmd(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
        )
        path.write_bytes(base64.b64decode(shot["data"]))
    except Exception:
        driver.save_screenshot(str(path))
    SCREENSHOTS.append(path)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        driver = item.funcargs.get("browser") if hasattr(item, "funcargs") else None
        if driver is not None:
            try:
                path = screenshot(driver, f"failure-{item.name}")
                rep.sections.append(("failure screenshot", str(path)))
                logs = driver.get_log("browser")
                if logs:
                    rep.sections.append(
                        ("browser console", "\n".join(f"{e.get('level')} {e.get('message')}" for e in logs[-50:]))
                    )
            except Exception as e:  # the browser may be what failed
                rep.sections.append(("failure screenshot", f"not taken: {e}"))
        d = item.funcargs.get("demo") if hasattr(item, "funcargs") else None
        if d is not None:
            rep.sections.append((f"trellis demo output (last {TAIL_LINES} lines)", d.tail()))


def pytest_terminal_summary(terminalreporter):
    if SCREENSHOTS:
        terminalreporter.write_sep("-", "screenshots")
        for p in SCREENSHOTS:
            terminalreporter.write_line(str(p))
