"""Fixtures of the integration tests: a real `trellis serve` on a free port with a tenant from a config file, and
the simulated MT5 terminal (`trellis mt5-sim`) connected to it. The unit tests use neither."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
KEY = "trk_acme0001_python-client-secret"
LOGIN = 5001

sys.path.insert(0, str(HERE))

# Config-file keys have every right (read and trade). Tier professional: the tests' commands stay far below its
# rate limit. No strategy: nothing trades but the tests.
CONFIG = f"""
[[tenants]]
id = "acme"
name = "Acme"
tier = "professional"
api_keys = ["{KEY}"]
symbols = ["EURUSD", "GBPUSD"]

[tenants.risk]
max_order_volume = 1.0
"""


def trellis_binary() -> Path:
    path = Path(os.environ.get("TRELLIS_BIN", REPO / "target" / "debug" / "trellis"))
    if not path.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{path} is missing: scripts/test.sh builds it before the Python tests")
        pytest.skip(f"{path} is missing: run `cargo build` first")
    return path


class Trellis:
    """A real `trellis serve` with its log (trellis.log) and data dir in the test's tmp dir."""

    def __init__(self, tmp: Path):
        self.dir = tmp
        self.config = tmp / "trellis.toml"
        self.config.write_text(CONFIG)
        self.log_path = tmp / "trellis.log"
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, TRELLIS_ENV="test", TRELLIS__HTTP__PORT="0", TRELLIS__LOG__LEVEL="info",
                   TRELLIS__STORAGE__DATA_DIR=str(tmp / "data"))
        for k in [k for k in env if k.startswith("TRELLIS__STORAGE__") and k != "TRELLIS__STORAGE__DATA_DIR"]:
            del env[k]
        self.proc = subprocess.Popen([str(trellis_binary()), "--config", str(self.config), "serve"], env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.port = None
        deadline = time.time() + 30
        while time.time() < deadline and self.port is None:
            m = re.search(r"listening .*\bport=(\d+)", self.output())
            if m:
                self.port = int(m.group(1))
            elif self.proc.poll() is not None:
                raise RuntimeError("trellis exited: " + self.output())
            else:
                time.sleep(0.05)
        assert self.port, "trellis did not log its port"

    def output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    @property
    def url(self) -> str:
        """The trading-client endpoint."""
        return f"ws://127.0.0.1:{self.port}/ws/v1/client"

    @property
    def bridge_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/mt5"

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


class Sim:
    """`trellis mt5-sim`: a simulated terminal and broker on account 5001, quoting EURUSD and GBPUSD."""

    def __init__(self, tmp: Path, trellis: Trellis):
        self.log_path = tmp / "mt5-sim.log"
        self.log = open(self.log_path, "ab")
        env = dict(os.environ, TRELLIS_ENV="test")
        self.proc = subprocess.Popen(
            [str(trellis_binary()), "mt5-sim", "--url", trellis.bridge_url, "--api-key", KEY, "--login", str(LOGIN),
             "--symbols", "EURUSD,GBPUSD", "--rate", "20"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log_path.read_bytes().decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def trellis(tmp_path):
    t = Trellis(tmp_path)
    yield t
    t.stop()


@pytest.fixture
def sim(tmp_path, trellis):
    s = Sim(tmp_path, trellis)
    yield s
    s.stop()
