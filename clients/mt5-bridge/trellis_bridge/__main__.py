"""`python -m trellis_bridge --url wss://… [--url wss://…] --api-key … --symbols EURUSD,GBPUSD [--login … --server …]`

Several `--url`s (or one with comma-separated URLs) are the nodes of a trellis cluster: the bridge fails over
between them and follows a node's `redirect` to the one that owns the tenant."""

import argparse
import asyncio
import importlib
import logging
import sys

from .bridge import Bridge, FatalError
from .journal import Journal


def load_mt5():
    """The official `MetaTrader5` package (tests put a fake of the same name first on the path)."""
    try:
        return importlib.import_module("MetaTrader5")
    except ImportError as e:
        raise FatalError("the MetaTrader5 package is not installed (pip install MetaTrader5, on Windows)") from e


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="trellis-mt5-bridge", description=__doc__)
    p.add_argument("--url", required=True, action="append",
                   help="trellis bridge endpoint, e.g. wss://trellis.example/ws/mt5; repeat it (or separate URLs "
                        "with commas) for the nodes of a cluster, tried in turn")
    p.add_argument("--api-key", required=True, help="the tenant's API key (trk_…)")
    p.add_argument("--symbols", required=True, help="comma-separated symbols to stream, e.g. EURUSD,GBPUSD")
    p.add_argument("--login", type=int, help="MT5 account login (default: the terminal's current account)")
    p.add_argument("--server", help="broker trade server")
    p.add_argument("--password", help="account password (omit to use the terminal's saved login)")
    p.add_argument("--terminal-path", help="path of terminal64.exe when several terminals are installed")
    p.add_argument("--journal", default="trellis-bridge.db", help="SQLite journal of executed orders")
    p.add_argument("--connect-retries", type=int, default=10, help="failed connections in a row (over all URLs) before giving up when trellis is down")
    p.add_argument("--heartbeat", type=float, default=1.0, help="seconds between heartbeats")
    p.add_argument("--silence-timeout", type=float, default=10.0,
                   help="seconds without any frame from trellis before the link is dropped and the next URL tried")
    a = p.parse_args(argv)
    urls = [u.strip() for arg in a.url for u in arg.split(",") if u.strip()]
    if not urls:
        p.error("--url: no URL given")
    if a.silence_timeout <= 0:
        p.error("--silence-timeout must be positive")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("trellis_bridge")
    try:
        mt5 = load_mt5()
        kwargs = {k: v for k, v in (("path", a.terminal_path), ("login", a.login), ("password", a.password),
                                     ("server", a.server)) if v is not None}
        if not mt5.initialize(**kwargs):
            raise FatalError(f"the MT5 terminal did not initialise: {mt5.last_error()}")
        info = mt5.account_info()
        login = a.login or int(getattr(info, "login", 0))
        server = a.server or str(getattr(info, "server", ""))
        bridge = Bridge(mt5, urls, a.api_key, login, server, [s.strip() for s in a.symbols.split(",") if s.strip()],
                        Journal(a.journal), heartbeat_s=a.heartbeat, connect_retries=a.connect_retries,
                        silence_timeout=a.silence_timeout)
        log.info("bridging account %s on %s to %s", login, server, ", ".join(bridge.urls))
        asyncio.run(bridge.run())
        return 0
    except FatalError as e:
        print(f"trellis-mt5-bridge: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
