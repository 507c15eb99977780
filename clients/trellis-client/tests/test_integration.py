"""The client against a real `trellis serve` (and, for fills, the simulated terminal `trellis mt5-sim`)."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from conftest import KEY, LOGIN, PACKAGE
from trellis_client import (
    Client, Deal, HandshakeRefused, Order, Position, Refused, RiskView, Tick, Update,
)

CHANNELS = ["fills", "orders", "positions", "risk", "strategies"]
EXAMPLE = PACKAGE / "examples" / "fills_and_order.py"


def run(coro, timeout=90):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class Recorder:
    """A subscription handler that keeps every update and lets a test wait for one."""

    def __init__(self):
        self.updates = []
        self._changed = asyncio.Event()

    def __call__(self, update: Update) -> None:
        self.updates.append(update)
        self._changed.set()

    async def wait(self, what: str, predicate, timeout: float = 30.0) -> Update:
        async def find():
            seen = 0
            while True:
                for u in self.updates[seen:]:
                    if predicate(u):
                        return u
                seen = len(self.updates)
                self._changed.clear()
                await self._changed.wait()
        try:
            return await asyncio.wait_for(find(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; got {self.updates}") from None

    def snapshot(self, channel: str) -> Update:
        return next(u for u in self.updates if u.channel == channel and u.snapshot)


async def wait_tick(client, symbol: str) -> Tick:
    """The first quote of `symbol`: the simulated terminal is connected and the broker can fill it."""
    async for u in client.stream(f"ticks:{symbol}"):
        if isinstance(u.data, Tick):
            return u.data


async def place_when_session(client, *args, timeout=30.0, **kwargs):
    """`place_order` once the simulated terminal quotes the symbol and its session is up (`no_session` until
    then); the same client_order_id every time."""
    await asyncio.wait_for(wait_tick(client, args[0]), timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await client.place_order(*args, **kwargs)
        except Refused as e:
            if e.code != "no_session" or loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


def test_welcome_and_snapshots_of_every_channel(trellis):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            w = c.welcome
            assert w.tenant == "acme" and w.can_trade is True and w.protocol_version == 1
            assert set(w.symbols) == {"EURUSD", "GBPUSD"} and w.expires_ms is None
            assert {"fills", "orders", "positions", "risk", "strategies"} <= set(w.channels)
            rec = Recorder()
            await c.subscribe(CHANNELS, rec)
            for ch in CHANNELS:
                await rec.wait(f"{ch} snapshot", lambda u, ch=ch: u.channel == ch and u.snapshot)
                assert rec.snapshot(ch).seq == 0
            assert rec.snapshot("fills").data == [] and rec.snapshot("orders").data == []
            assert rec.snapshot("positions").data == [] and rec.snapshot("strategies").data == []
            risk = rec.snapshot("risk").data
            assert isinstance(risk, RiskView) and not risk.kill_switch_on
            assert risk.limits["max_order_volume"] == Decimal("1")
            assert c.state("orders") == {} and isinstance(c.state("risk"), RiskView)
            assert await c.ping() < 5
            with pytest.raises(Refused) as e:
                await c.subscribe("nope", rec)
            assert e.value.code == "unknown_channel"

    run(main())


def test_a_wrong_key_is_refused_at_the_upgrade(trellis):
    async def main():
        with pytest.raises(HandshakeRefused) as e:
            await Client.connect(trellis.url, api_key="trk_acme0001_wrong-secret")
        assert e.value.status == 401
        with pytest.raises(HandshakeRefused) as e:
            await Client.connect(trellis.url)
        assert e.value.status == 401

    run(main())


def test_unknown_strategy_is_refused(trellis):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            for command in (c.strategy_start, c.strategy_stop):
                with pytest.raises(Refused) as e:
                    await command("nope")
                assert e.value.code == "unknown_strategy"

    run(main())


def test_kill_switch_shows_on_the_risk_channel_and_refuses_orders(trellis, sim):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            rec = Recorder()
            await c.subscribe(["risk", "ticks:EURUSD"], rec)
            await rec.wait("risk snapshot", lambda u: u.channel == "risk" and u.snapshot)
            # the terminal is connected once its quotes arrive
            await rec.wait("a EURUSD tick", lambda u: u.channel == "ticks:EURUSD" and isinstance(u.data, Tick))

            r = await c.kill_switch(True, reason="integration test")
            assert isinstance(r["risk"], RiskView) and r["risk"].kill_switch_on
            on = await rec.wait("kill switch on", lambda u: u.channel == "risk" and u.data.kill_switch_on)
            assert not on.snapshot and on.data.kill_switch.reason == "integration test"

            with pytest.raises(Refused) as e:
                await c.place_order("EURUSD", "buy", "0.01")
            assert e.value.code == "risk_rejected"

            r = await c.kill_switch(False)
            assert not r["risk"].kill_switch_on
            await rec.wait("kill switch off", lambda u: u.channel == "risk" and u is not on
                           and not u.data.kill_switch_on and not u.snapshot)
            assert not c.state("risk").kill_switch_on

            with pytest.raises(Refused) as e:
                await c.place_order("XAUUSD", "buy", "0.01")
            assert e.value.code == "unknown_symbol"
            with pytest.raises(Refused) as e:
                await c.place_order("EURUSD", "buy", "5")  # max_order_volume = 1
            assert e.value.code == "risk_rejected"

    run(main())


def test_unknown_symbol_is_refused(trellis):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            with pytest.raises(Refused) as e:
                await c.place_order("XAUUSD", "buy", "0.01", account=LOGIN)
            assert e.value.code == "unknown_symbol"

    run(main())


def test_an_order_fills_once_and_a_repeat_is_a_duplicate(trellis, sim):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            rec = Recorder()
            await c.subscribe(["fills", "orders", "positions"], rec)
            for ch in ("fills", "orders", "positions"):
                await rec.wait(f"{ch} snapshot", lambda u, ch=ch: u.channel == ch and u.snapshot)

            r = await place_when_session(c, "EURUSD", "buy", 0.1, client_order_id="it-1")
            order = r["order"]
            assert isinstance(order, Order) and r["duplicate"] is False
            assert order.client_order_id == "manual:it-1" and order.symbol == "EURUSD" and order.side == "buy"
            assert order.volume == Decimal("0.1") and order.account == LOGIN

            fill = await rec.wait("the fill", lambda u: u.channel == "fills" and not u.snapshot
                                  and u.data.client_order_id == "manual:it-1")
            deal = fill.data
            assert isinstance(deal, Deal) and deal.symbol == "EURUSD" and deal.side == "buy"
            assert deal.volume == Decimal("0.1") and deal.price > 0 and deal.account == LOGIN
            pos = await rec.wait("the position", lambda u: u.channel == "positions" and not u.snapshot
                                 and u.data.symbol == "EURUSD" and u.data.volume == Decimal("0.1"))
            assert isinstance(pos.data, Position) and pos.data.side == "buy" and pos.data.account == LOGIN
            await rec.wait("the order filled", lambda u: u.channel == "orders" and not u.snapshot
                           and u.data.client_order_id == "manual:it-1" and u.data.status == "filled")

            again = await c.place_order("EURUSD", "buy", 0.1, client_order_id="it-1")
            assert again["duplicate"] is True and again["order"].client_order_id == "manual:it-1"
            await asyncio.sleep(2)
            fills = [u for u in rec.updates if u.channel == "fills" and not u.snapshot
                     and u.data.client_order_id == "manual:it-1"]
            assert len(fills) == 1
            assert c.state("positions")[(LOGIN, "EURUSD")].volume == Decimal("0.1")
            assert [d.client_order_id for d in c.state("fills").values()] == ["manual:it-1"]
            assert c.resubscriptions == 0

    run(main())


def test_stream_after_a_trade_and_a_second_client_sees_it_in_the_snapshot(trellis, sim):
    async def main():
        async with Client.connect(trellis.url, api_key=KEY) as trader:
            fills = trader.stream("fills")
            first = await fills.__anext__()
            assert first.snapshot and first.data == []
            await place_when_session(trader, "GBPUSD", "sell", "0.2", client_order_id="it-2")
            update = await asyncio.wait_for(fills.__anext__(), 30)
            assert not update.snapshot and update.seq == 1 and update.data.client_order_id == "manual:it-2"
            assert update.data.side == "sell" and update.data.volume == Decimal("0.2")
            await fills.aclose()

            async with Client.connect(trellis.url, api_key=KEY) as viewer:
                async for u in viewer.stream("fills"):
                    assert u.snapshot and [d.client_order_id for d in u.data] == ["manual:it-2"]
                    break
                rec = Recorder()
                await viewer.subscribe("positions", rec)
                snap = await rec.wait("positions snapshot", lambda u: u.snapshot)
                assert [(p.symbol, p.side, p.volume) for p in snap.data] == [("GBPUSD", "sell", Decimal("0.2"))]
                r = await viewer.flatten(reason="integration test")
                assert r["orders"] == 1
                await rec.wait("the position closed", lambda u: not u.snapshot and u.data.symbol == "GBPUSD"
                               and u.data.is_closed)

    run(main())


def test_the_example_prints_its_fill(trellis, sim, tmp_path):
    async def terminal_up():
        async with Client.connect(trellis.url, api_key=KEY) as c:
            rec = Recorder()
            await c.subscribe("ticks:EURUSD", rec)
            await rec.wait("a EURUSD tick", lambda u: isinstance(u.data, Tick))

    run(terminal_up())
    out = tmp_path / "example.out"
    env = dict(os.environ, TRELLIS_URL=trellis.url, TRELLIS_API_KEY=KEY)
    with open(out, "w") as f:
        proc = subprocess.Popen([sys.executable, str(EXAMPLE)], env=env, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and "fill: buy 0.01 EURUSD @" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            time.sleep(0.1)
        text = out.read_text()
        assert "placed: manual:py-" in text and "fill: buy 0.01 EURUSD @" in text, text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
