"""Protocol 3 without trellis: the bridge answers a `bars_request` from the terminal's `copy_rates_range`, in pages,
with the bar still forming apart, and with the terminal's error when it has none. The trellis side is a stand-in
server (the `websockets` library) that welcomes the bridge and asks; the bridge is the real one, in this process, on
the fake terminal, whose bars follow trellis's rules (OHLC from bid, closed by the first tick of the next period)."""

import asyncio
import json

from conftest import MINUTE, T0
from test_redirect import make_bridge, run, until, welcome

import websockets

EURUSD_BIDS = [1.1000 + (i * 37 % 500) / 100_000 for i in range(1_200)]


def push_ten_hours(terminal):
    """Two ticks a minute for 600 minutes: 599 complete M1 bars and the one forming."""
    for i, bid in enumerate(EURUSD_BIDS):
        terminal.push_tick("EURUSD", T0 + i * 30_000 + 5, bid, bid + 0.0002)


class Asker:
    """A stand-in trellis: welcomes the bridge (protocol 3), sends each request of `requests` and keeps every
    `bars` frame that comes back, by request id."""

    def __init__(self, *requests):
        self.requests = [dict(r, type="bars_request", seq=2 + i) for i, r in enumerate(requests)]
        self.pages = {}
        self.server = self.url = None

    async def __aenter__(self):
        self.server = await websockets.serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws/mt5"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    def answered(self, request_id: int) -> bool:
        pages = self.pages.get(request_id, [])
        return bool(pages) and not pages[-1].get("more", False)

    async def _handle(self, ws, *_):
        try:
            hello = json.loads(await ws.recv())
            assert hello["protocol_version"] == 3
            await ws.send(json.dumps(dict(welcome(1_785_200_000_000_001), protocol_version=3)))
            for r in self.requests:
                await ws.send(json.dumps(r))
            async for text in ws:
                frame = json.loads(text)
                if frame.get("type") == "bars":
                    self.pages.setdefault(frame["request_id"], []).append(frame)
        except websockets.exceptions.ConnectionClosed:
            pass


def test_a_bars_request_is_answered_in_pages_with_the_forming_bar_apart_and_exact_bounds(tmp_path, terminal):
    push_ten_hours(terminal)
    whole = {"request_id": 1, "symbol": "EURUSD", "timeframe": "M1", "from_msc": T0, "to_msc": T0 + 600 * MINUTE}
    # From the middle of a minute to the open of minute 300: minutes 1 to 300, all complete.
    part = {"request_id": 2, "symbol": "EURUSD", "timeframe": "M1", "from_msc": T0 + 30_000,
            "to_msc": T0 + 300 * MINUTE}
    hours = {"request_id": 3, "symbol": "EURUSD", "timeframe": "H1", "from_msc": 0, "to_msc": 2**53 - 1}

    pages = {}

    async def scenario(start):
        async with Asker(whole, part, hours) as trellis:
            start(make_bridge(tmp_path, terminal, trellis.url))
            await until("three answers", lambda: all(trellis.answered(i) for i in (1, 2, 3)))
            pages.update(trellis.pages)

    run(scenario)

    # The whole range: 599 complete bars in pages of at most 250, the forming bar on the last page only.
    assert [len(p["bars"]) for p in pages[1]] == [250, 250, 99]
    assert [p.get("more") for p in pages[1]] == [True, True, False]
    assert [("forming" in p) for p in pages[1]] == [False, False, True]
    bars = [b for p in pages[1] for b in p["bars"]]
    assert [b["time_msc"] for b in bars] == [T0 + m * MINUTE for m in range(599)]
    first = bars[0]
    assert (first["open"], first["close"], first["tick_volume"]) == (EURUSD_BIDS[0], EURUSD_BIDS[1], 2)
    assert (first["high"], first["low"]) == (max(EURUSD_BIDS[:2]), min(EURUSD_BIDS[:2]))
    assert pages[1][-1]["forming"]["time_msc"] == T0 + 599 * MINUTE
    assert all(p["symbol"] == "EURUSD" and p["timeframe"] == "M1" and "error" not in p for p in pages[1])
    # Exact bounds, in ms; the bar at the end of the range is complete (ticks of later minutes came).
    part_bars = [b for p in pages[2] for b in p["bars"]]
    assert [b["time_msc"] for b in part_bars] == [T0 + m * MINUTE for m in range(1, 301)]
    assert "forming" not in pages[2][-1]
    # H1 over everything: the hours touched, the last one forming; 2^53 - 1 as "up to now" is fine.
    hour_bars = [b for p in pages[3] for b in p["bars"]]
    assert sum(b["tick_volume"] for b in hour_bars) + pages[3][-1]["forming"]["tick_volume"] == 1_200
    assert all(b["time_msc"] % 3_600_000 == 0 for b in hour_bars)


def test_the_terminals_error_and_an_unknown_timeframe_are_answered_with_error_and_no_bars(tmp_path, terminal,
                                                                                          monkeypatch):
    push_ten_hours(terminal)
    monkeypatch.setenv("FAKE_MT5_RATES_ERROR", "1")
    failing = {"request_id": 1, "symbol": "EURUSD", "timeframe": "M5", "from_msc": T0, "to_msc": T0 + MINUTE}
    weekly = {"request_id": 2, "symbol": "EURUSD", "timeframe": "W1", "from_msc": T0, "to_msc": T0 + MINUTE}
    pages = {}

    async def scenario(start):
        async with Asker(failing, weekly) as trellis:
            bridge = make_bridge(tmp_path, terminal, trellis.url)
            start(bridge)
            await until("two answers", lambda: trellis.answered(1) and trellis.answered(2))
            pages.update(trellis.pages)
            await asyncio.sleep(0.1)  # still running after the errors: the scenario's end checks it

    run(scenario)

    for request_id, says in ((1, "Invalid params"), (2, "no timeframe 'W1'")):
        [page] = pages[request_id]
        assert page["bars"] == [] and "forming" not in page, page
        assert says in page["error"], page
