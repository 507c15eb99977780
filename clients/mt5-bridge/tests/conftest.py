"""Fixtures: a real `trellis serve` on a free port with a tenant from a config file, and the real bridge run
as a subprocess against the fake `MetaTrader5` module in tests/fake_mt5."""

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
FAKE = HERE / "fake_mt5"
KEY = "trk_acme0001_python-bridge-secret"
T0 = 1_700_000_040_000
MINUTE = 60_000

sys.path.insert(0, str(FAKE))

CONFIG = f"""
[[tenants]]
id = "acme"
name = "Acme"
tier = "free"
api_keys = ["{KEY}"]
symbols = ["EURUSD", "GBPUSD"]

[tenants.risk]
max_order_volume = 1.0

[[tenants.strategies]]
id = "ema-eurusd"
kind = "ema_cross"
symbol = "EURUSD"
timeframe = "M1"
volume = 0.1
params = {{ fast = 2, slow = 3 }}
"""


def trellis_binary() -> Path:
    path = Path(os.environ.get("TRELLIS_BIN", REPO / "target" / "debug" / "trellis"))
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: scripts/test.sh builds it before the Python tests")
        pytest.skip(f"{path} is missing: run `cargo build` first")
    return path


class Trellis:
    """A real `trellis serve`. Its log (trellis.log) and data dir belong to the test's tmp dir, so a restart
    finds the store of the life before it, as a restarted or crashed production process would."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.config = tmp / "trellis.toml"
        self.config.write_text(CONFIG)
        self.log_path = tmp / "trellis.log"
        self.log = open(self.log_path, "ab")
        self.port = 0
        self._start()

    def _start(self):
        """Starts trellis on `self.port` (0: any free port) and waits until it says where it listens."""
        env = dict(os.environ, TRELLIS_ENV="test", TRELLIS__HTTP__PORT=str(self.port), TRELLIS__LOG__LEVEL="info",
                   TRELLIS__STORAGE__DATA_DIR=str(self.dir / "data"), TRELLIS__MT5__HEARTBEAT_INTERVAL_MS="1000",
                   TRELLIS__MT5__HEARTBEAT_TIMEOUT_MS="5000")
        for k in [k for k in env if k.startswith("TRELLIS__STORAGE__") and k != "TRELLIS__STORAGE__DATA_DIR"]:
            del env[k]
        start = self.log_path.stat().st_size  # this life's lines only: a restart appends to the same log
        self.proc = subprocess.Popen([str(trellis_binary()), "--config", str(self.config), "serve"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        port = None
        deadline = time.time() + 20
        while time.time() < deadline and port is None:
            m = re.search(r"listening .*\bport=(\d+)", self.output(since=start))
            if m:
                port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError("trellis exited: " + self.output(since=start))
            else:
                time.sleep(0.05)
        assert port, "trellis did not log its port"
        self.port = port

    def restart(self, sig=signal.SIGTERM):
        """Stops trellis with `sig` (SIGKILL: a crash) and starts it again on the same data dir and port, so the
        bridge, which knows only the address, reconnects to the new life by itself."""
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)
        self._start()

    def output(self, since: int = 0) -> str:
        """trellis's log from byte offset `since` on."""
        return self.log_path.read_bytes()[since:].decode(errors="replace")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mt5"

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    def fills_in_store(self) -> int:
        return len(self.fill_tickets())

    def fill_tickets(self) -> list:
        """The deal tickets of the fills trellis stored (one row per fill), in ticket order."""
        db = sqlite3.connect(f"file:{self.dir / 'data' / 'relational.db'}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT deal_ticket FROM fills WHERE tenant_id = 'acme' ORDER BY deal_ticket")
            return [t for (t,) in rows.fetchall()]
        finally:
            db.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Bridge:
    """The real bridge (`python -m trellis_bridge`) on the fake terminal."""

    def __init__(self, tmp: Path, url: str, key: str = KEY, extra_env=None, args=()):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(FAKE), str(PACKAGE)]), FAKE_MT5_STATE=str(tmp / "terminal.db"))
        env.update(extra_env or {})
        self.log_path = tmp / f"bridge-{time.time_ns()}.log"
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trellis_bridge", "--url", url, "--api-key", key, "--symbols", "EURUSD",
             "--login", "5001", "--server", "Fake-Server", "--journal", str(tmp / "journal.db"), "--heartbeat", "0.5",
             *args],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait(self, timeout=30) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def wait_until(what, predicate, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def terminal(tmp_path, monkeypatch):
    """The fake terminal's state, shared with the bridge process."""
    monkeypatch.setenv("FAKE_MT5_STATE", str(tmp_path / "terminal.db"))
    import MetaTrader5

    MetaTrader5.initialize()
    return MetaTrader5


@pytest.fixture
def trellis(tmp_path):
    t = Trellis(tmp_path)
    yield t
    t.stop()
