"""Unit tests without trellis: the sequencer and channel state, the decoding of every frame, and the client
against a scripted WebSocket server (tests/fake_server.py)."""

import asyncio
import json
from decimal import Decimal

import pytest

from fake_server import FakeServer
from samples import BAR, EVENT, FILLED, ORDER, PNL, POSITION, RISK, RISK_ON, STRATEGY, TICK, deal
from trellis_client import (
    Ack, Bar, Client, Closed, ConnectionLost, CredentialExpired, Deal, ErrorFrame, Fill, HandshakeRefused, Order,
    Pnl, Pong, Position, Refused, RiskView, Sequencer, Snapshot, StrategyView, SupervisionEvent, Tick,
    TooFarBehind, UpdateFrame, Welcome, decode_frame,
)
from trellis_client.client import _decimal_str


def run(coro, timeout=20):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def snap(channel, data, seq=0):
    return decode_frame({"type": "snapshot", "channel": channel, "seq": seq, "data": data})


def upd(channel, data, seq):
    return decode_frame({"type": "update", "channel": channel, "seq": seq, "data": data})


# ---- sequencer ------------------------------------------------------------------------------------------------


def test_snapshot_then_consecutive_updates_are_applied():
    s = Sequencer("orders")
    r = s.feed(snap("orders", {"orders": [ORDER]}))
    assert r.update.snapshot and r.update.seq == 0 and not r.resubscribe
    assert [o.client_order_id for o in r.update.data] == ["manual:o1"]
    other = dict(ORDER, client_order_id="manual:o2")
    for seq, data in [(1, FILLED), (2, other)]:
        r = s.feed(upd("orders", data, seq))
        assert r.update is not None and not r.update.snapshot and r.update.seq == seq and not r.resubscribe
        assert not r.update.duplicate
    assert s.seq == 2 and s.gaps == 0
    assert s.state.value["manual:o1"].status == "filled"
    assert s.state.value["manual:o1"].avg_price == Decimal("1.10012")
    assert list(s.state.value) == ["manual:o1", "manual:o2"]


def test_a_gap_asks_for_a_resubscription_and_waits_for_the_snapshot():
    s = Sequencer("fills")
    s.feed(snap("fills", {"fills": []}))
    assert s.feed(upd("fills", deal(1), 1)).update is not None
    r = s.feed(upd("fills", deal(3), 3))  # seq 2 is missing
    assert r.resubscribe and r.update is None and s.gaps == 1
    # until the new snapshot, updates are ignored (they belong to the old count) and make no second gap
    for seq in (4, 9):
        r = s.feed(upd("fills", deal(seq), seq))
        assert r.update is None and not r.resubscribe
    r = s.feed(snap("fills", {"fills": [deal(1), deal(2), deal(3), deal(4)]}))
    assert r.update.snapshot and len(s.state.value) == 4
    assert s.feed(upd("fills", deal(5), 1)).update.data.ticket == 5
    assert s.gaps == 1


def test_updates_before_any_snapshot_are_ignored():
    s = Sequencer("positions")
    r = s.feed(upd("positions", POSITION, 1))
    assert r.update is None and not r.resubscribe and s.stale == 1


def test_a_repeated_seq_is_dropped_not_a_gap():
    s = Sequencer("fills")
    s.feed(snap("fills", {"fills": []}))
    s.feed(upd("fills", deal(1), 1))
    r = s.feed(upd("fills", deal(1), 1))
    assert r.update is None and not r.resubscribe and s.seq == 1


def test_duplicates_after_a_snapshot_are_idempotent():
    fills = Sequencer("fills")
    fills.feed(snap("fills", {"fills": [deal(7), deal(8)]}))
    before = dict(fills.state.value)
    r = fills.feed(upd("fills", deal(8), 1))  # repeats what the snapshot showed
    assert r.update.duplicate and fills.state.value == before and len(fills.state.value) == 2
    r = fills.feed(upd("fills", deal(9), 2))
    assert not r.update.duplicate and len(fills.state.value) == 3

    orders = Sequencer("orders")
    orders.feed(snap("orders", {"orders": [FILLED]}))
    assert orders.feed(upd("orders", FILLED, 1)).update.duplicate
    assert len(orders.state.value) == 1 and orders.state.value["manual:o1"].status == "filled"

    positions = Sequencer("positions")
    positions.feed(snap("positions", {"positions": [POSITION]}))
    assert positions.feed(upd("positions", POSITION, 1)).update.duplicate
    closed = dict(POSITION, volume="0")
    assert not positions.feed(upd("positions", closed, 2)).update.duplicate
    assert list(positions.state.value) == [(5001, "EURUSD")]
    assert positions.state.value[(5001, "EURUSD")].is_closed

    strategies = Sequencer("strategies")
    strategies.feed(snap("strategies", {"strategies": [STRATEGY]}))
    assert strategies.feed(upd("strategies", STRATEGY, 1)).update.duplicate
    stopped = dict(STRATEGY, state="stopped", running=False)
    assert not strategies.feed(upd("strategies", stopped, 2)).update.duplicate
    assert strategies.state.value["ema-eurusd"].state == "stopped"

    risk = Sequencer("risk")
    risk.feed(snap("risk", RISK))
    assert risk.feed(upd("risk", RISK, 1)).update.duplicate
    assert not risk.feed(upd("risk", RISK_ON, 2)).update.duplicate
    assert risk.state.value.kill_switch_on


def test_pnl_updates_extend_the_snapshot_curve():
    s = Sequencer("pnl")
    s.feed(snap("pnl", dict(PNL, curve=[[1700000000000, "100009.25"]])))
    s.feed(upd("pnl", dict(PNL, equity="100010", at_ms=1700000001000), 1))
    assert s.state.value.equity == Decimal("100010")
    assert s.state.value.curve == [(1700000000000, Decimal("100009.25")), (1700000001000, Decimal("100010"))]


# ---- decoding -------------------------------------------------------------------------------------------------


def test_decode_welcome_ack_refused_pong_error():
    w = decode_frame(json.dumps({"type": "welcome", "tenant": "demo", "actor": "user:alice@example.com",
                                 "can_trade": True, "channels": ["fills"], "symbols": ["EURUSD", "GBPUSD"],
                                 "expires_ms": 1764690000000, "protocol_version": 1, "motd": "hi"}))
    assert isinstance(w, Welcome) and w.tenant == "demo" and w.can_trade and w.expires_ms == 1764690000000
    assert w.symbols == ["EURUSD", "GBPUSD"] and w.extra == {"motd": "hi"}

    a = decode_frame({"type": "ack", "id": "c1", "op": "place_order", "result": {"order": ORDER, "duplicate": False}})
    assert isinstance(a, Ack) and a.id == "c1" and a.op == "place_order" and a.result["duplicate"] is False

    r = decode_frame({"type": "refused", "id": "c1", "op": "place_order", "code": "risk_rejected",
                      "reason": "max_order_volume: 5 lots > 1"})
    assert isinstance(r, Refused) and r.code == "risk_rejected" and r.reason.startswith("max_order_volume")
    assert r.op == "place_order" and r.id == "c1"

    p = decode_frame('{"type": "pong", "id": "p1"}')
    assert isinstance(p, Pong) and p.id == "p1"

    e = decode_frame({"type": "error", "id": None, "code": "bad_frame", "reason": "line 1 column 2: expected value"})
    assert isinstance(e, ErrorFrame) and e.id is None and e.code == "bad_frame"

    assert decode_frame({"type": "something_new", "x": 1}) == {"type": "something_new", "x": 1}


def test_decode_every_channel_snapshot_and_update():
    t = snap("ticks:EURUSD", TICK)
    assert isinstance(t, Snapshot) and isinstance(t.data, Tick) and t.data.bid == Decimal("1.10010")
    assert snap("ticks:EURUSD", None).data is None
    u = upd("ticks:EURUSD", TICK, 1)
    assert isinstance(u, UpdateFrame) and u.seq == 1 and u.data.ask == Decimal("1.10012")

    bars = snap("bars:EURUSD:M1", {"bars": [BAR, BAR]}).data
    assert len(bars) == 2 and isinstance(bars[0], Bar) and bars[0].open == Decimal("1.1") and bars[0].tick_volume == 42
    assert upd("bars:EURUSD:M1", BAR, 1).data.close == Decimal("1.10010")

    pnl = snap("pnl", dict(PNL, curve=[[1700000000000, "100009.25"]])).data
    assert isinstance(pnl, Pnl) and pnl.unrealised == Decimal("-3.25")
    assert pnl.curve == [(1700000000000, Decimal("100009.25"))]
    assert upd("pnl", PNL, 1).data.curve is None

    positions = snap("positions", {"positions": [POSITION]}).data
    assert isinstance(positions[0], Position) and positions[0].volume == Decimal("0.10")
    assert positions[0].account == 5001 and positions[0].price_open == Decimal("1.10012")
    assert upd("positions", dict(POSITION, volume="0"), 1).data.is_closed

    orders = snap("orders", {"orders": [ORDER]}).data
    assert isinstance(orders[0], Order) and orders[0].price is None and orders[0].volume == Decimal("0.10")
    o = upd("orders", FILLED, 1).data
    assert o.is_final and o.filled_volume == Decimal("0.10") and o.retcode == 10009

    fills = snap("fills", {"fills": [deal()]}).data
    d = fills[0]
    assert isinstance(d, Deal) and isinstance(d.fill, Fill) and d.ticket == 7
    assert d.symbol == "EURUSD" and d.side == "buy" and d.volume == Decimal("0.10") and d.price == Decimal("1.10012")
    assert d.fill.commission == Decimal("-0.70") and d.swap == Decimal("0")
    assert upd("fills", deal(8), 1).data.ticket == 8

    strategies = snap("strategies", {"strategies": [STRATEGY]}).data
    assert isinstance(strategies[0], StrategyView) and strategies[0].running and strategies[0].state == "running"
    assert upd("strategies", STRATEGY, 1).data.id == "ema-eurusd"

    risk = snap("risk", RISK).data
    assert isinstance(risk, RiskView) and not risk.kill_switch_on
    assert risk.limits["max_order_volume"] == Decimal("1.0") and risk.state.daily_pnl == Decimal("0")
    on = upd("risk", RISK_ON, 1).data
    assert on.kill_switch_on and on.kill_switch.reason == "test" and not on.kill_switch.automatic

    events = snap("supervision", {"events": [EVENT]}).data
    assert isinstance(events[0], SupervisionEvent) and events[0].kind == "started" and events[0].generation == 1
    assert upd("supervision", dict(EVENT, seq=2, kind="failed"), 1).data.kind == "failed"

    pred = snap("predictions:dep1", {"deployment": "dep1", "predictions": []})
    assert pred.data == {"deployment": "dep1", "predictions": []}
    assert upd("predictions:dep1", {"value": "0.5"}, 1).data == {"value": "0.5"}


def test_unknown_fields_are_tolerated_and_missing_ones_are_none():
    o = Order.from_json(dict(ORDER, venue="x", tags=["a"]))
    assert o.extra == {"venue": "x", "tags": ["a"]} and o.client_order_id == "manual:o1"
    d = Deal.from_json({"account": 1, "ticket": 2, "fill": {"symbol": "EURUSD", "price": "1.2", "new": 1}})
    assert d.order is None and d.fill.price == Decimal("1.2") and d.fill.extra == {"new": 1}
    assert Tick.from_json({"symbol": "EURUSD", "bid": 1.5, "ask": "1.6"}).bid == Decimal("1.5")


def test_decimals_sent_as_strings():
    assert _decimal_str("volume", 0.1) == "0.1"
    assert _decimal_str("volume", "0.01") == "0.01"
    assert _decimal_str("volume", Decimal("1E+1")) == "10"
    assert _decimal_str("volume", 1) == "1"


# ---- the client against a scripted server -------------------------------------------------------------------------


def test_connect_sends_credentials_and_tenant_and_reads_the_welcome():
    async def main():
        async with FakeServer(lambda peer: peer.serve_forever()) as srv:
            async with Client.connect(srv.url, token="tok123", tenant="acme", reconnect=False) as c:
                assert c.welcome.tenant == "acme" and c.welcome.can_trade
                assert await c.ping() >= 0
            async with Client.connect(srv.url + "?x=1", api_key="trk_k", reconnect=False):
                pass
        (path1, h1), (path2, h2) = srv.requests
        assert path1 == "/ws/v1/client?tenant=acme" and h1["Authorization"] == "Bearer tok123"
        assert "X-API-Key" not in h1
        assert path2 == "/ws/v1/client?x=1" and h2["X-API-Key"] == "trk_k" and "Authorization" not in h2
        assert srv.frames("ping")[0] == {"op": "ping", "id": srv.frames("ping")[0]["id"]}

    run(main())


def test_a_refused_upgrade_raises():
    async def main():
        async with FakeServer(lambda peer: peer.serve_forever(), status=401) as srv:
            with pytest.raises(HandshakeRefused) as e:
                await Client.connect(srv.url, api_key="trk_bad")
            assert e.value.status == 401

    run(main())


def test_commands_return_the_ack_result_or_raise_refused():
    async def script(peer):
        f = await peer.recv()
        assert f["op"] == "place_order"
        await peer.ack(f, {"order": FILLED, "duplicate": False})
        f = await peer.recv()
        await peer.send({"type": "refused", "id": f["id"], "op": f["op"], "code": "unknown_strategy",
                         "reason": "no strategy `nope`"})
        f = await peer.recv()
        await peer.ack(f, {"risk": RISK_ON})
        f = await peer.recv()
        await peer.send({"type": "error", "id": f["id"], "code": "bad_frame", "reason": "unknown field"})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k") as c:
                r = await c.place_order("EURUSD", "buy", 0.1, client_order_id="o1")
                assert isinstance(r["order"], Order) and r["order"].status == "filled" and r["duplicate"] is False
                with pytest.raises(Refused) as e:
                    await c.strategy_start("nope")
                assert e.value.code == "unknown_strategy" and e.value.op == "strategy_start"
                r = await c.kill_switch(True, reason="test")
                assert r["risk"].kill_switch_on
                with pytest.raises(Exception) as e:
                    await c.cancel_order("o1")
                assert getattr(e.value, "code", None) == "bad_frame"
        place, start, kill, cancel = srv.frames()[:4]
        assert {k: v for k, v in place.items() if k != "id"} == {
            "op": "place_order", "client_order_id": "o1", "symbol": "EURUSD", "side": "buy", "volume": "0.1",
            "kind": "market"}
        assert start["strategy"] == "nope"
        assert kill == {"op": "kill_switch", "id": kill["id"], "on": True, "flatten": False, "reason": "test"}
        assert cancel["client_order_id"] == "o1"
        assert len({f["id"] for f in srv.frames()}) == len(srv.frames())  # ids unique

    run(main())


def test_place_order_retry_after_unavailable_sends_the_same_frame():
    async def script(peer):
        f = await peer.recv()
        await peer.send({"type": "refused", "id": f["id"], "op": f["op"], "code": "unavailable",
                         "reason": "risk restarting"})
        f = await peer.recv()
        await peer.ack(f, {"order": ORDER, "duplicate": False})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k", backoff_initial=0.01) as c:
                r = await c.place_order("EURUSD", "buy", "0.01", client_order_id="fixed-1")
                assert r["order"].client_order_id == "manual:o1"
        first, second = srv.frames("place_order")
        assert first == second and first["client_order_id"] == "fixed-1"

    run(main())


@pytest.mark.parametrize("coid", ["fixed-2", None])
def test_place_order_is_sent_again_with_the_same_id_after_a_drop(coid):
    async def script(peer):
        f = await peer.recv()
        if peer.index == 0:
            await peer.close(1011, "internal error")  # the answer is lost
            return
        await peer.ack(f, {"order": ORDER, "duplicate": True})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k", backoff_initial=0.01) as c:
                r = await c.place_order("EURUSD", "sell", "0.01", client_order_id=coid)
                assert r["duplicate"] is True
                assert c.reconnects == 1
        first, second = srv.frames("place_order")
        assert first == second
        assert srv.frames("place_order", index=0) == [first] and srv.frames("place_order", index=1) == [second]
        if coid:
            assert first["client_order_id"] == coid
        else:
            assert first["client_order_id"].startswith("py-")

    run(main())


def test_generated_client_order_ids_are_unique():
    async def main():
        async with FakeServer(lambda peer: peer.serve_forever()) as srv:
            async with Client.connect(srv.url, api_key="trk_k") as c:
                for _ in range(3):
                    await c.place_order("EURUSD", "buy", "0.01")
        ids = [f["client_order_id"] for f in srv.frames("place_order")]
        assert len(set(ids)) == 3 and all(1 <= len(i) <= 48 for i in ids)

    run(main())


def test_a_command_not_safe_to_repeat_raises_connection_lost():
    async def script(peer):
        await peer.recv()
        if peer.index == 0:
            await peer.close(1011, "boom")
            return
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k", backoff_initial=0.01) as c:
                with pytest.raises(ConnectionLost) as e:
                    await c.cancel_order("o1")
                assert e.value.op == "cancel_order" and e.value.code == 1011
        assert len(srv.frames("cancel_order")) == 1

    run(main())


def test_a_gap_resubscribes_the_channel():
    async def script(peer):
        f = await peer.recv()
        assert f["op"] == "subscribe" and f["channels"] == ["fills"]
        await peer.ack(f)
        await peer.send({"type": "snapshot", "channel": "fills", "seq": 0, "data": {"fills": [deal(1)]}})
        await peer.send({"type": "update", "channel": "fills", "seq": 1, "data": deal(2)})
        await peer.send({"type": "update", "channel": "fills", "seq": 3, "data": deal(4)})  # gap
        await peer.send({"type": "update", "channel": "fills", "seq": 4, "data": deal(5)})  # old count: ignored
        f = await peer.recv()
        assert f["op"] == "unsubscribe" and f["channels"] == ["fills"]
        await peer.ack(f)
        f = await peer.recv()
        assert f["op"] == "subscribe" and f["channels"] == ["fills"]
        await peer.ack(f)
        await peer.send({"type": "snapshot", "channel": "fills", "seq": 0,
                         "data": {"fills": [deal(i) for i in range(1, 6)]}})
        await peer.send({"type": "update", "channel": "fills", "seq": 1, "data": deal(6)})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k") as c:
                got = []
                async for u in c.stream("fills"):
                    got.append((u.snapshot, u.seq, [d.ticket for d in u.data] if u.snapshot else u.data.ticket))
                    if len(got) == 4:
                        break
                assert got == [(True, 0, [1]), (False, 1, 2), (True, 0, [1, 2, 3, 4, 5]), (False, 1, 6)]
                assert c.resubscriptions == 1
                assert sorted(t for _, t in c.state("fills")) == [1, 2, 3, 4, 5, 6]
            assert not srv.errors, srv.errors

    run(main())


def test_subscribe_with_a_handler_and_a_second_listener_gets_the_state():
    async def script(peer):
        f = await peer.recv()
        await peer.ack(f)
        await peer.send({"type": "snapshot", "channel": "orders", "seq": 0, "data": {"orders": [ORDER]}})
        await peer.send({"type": "update", "channel": "orders", "seq": 1, "data": FILLED})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k") as c:
                seen = asyncio.Queue()

                async def handler(u):
                    await seen.put(u)

                sub = await c.subscribe("orders", handler)
                first, second = await seen.get(), await seen.get()
                assert first.snapshot and first.data[0].status == "sent"
                assert not second.snapshot and second.data.status == "filled"
                # a second listener of the same channel: no second subscribe, a snapshot from the local state
                later = []
                await c.subscribe("orders", later.append)
                await asyncio.sleep(0.05)
                assert later[0].snapshot and later[0].data[0].status == "filled"
                await sub.unsubscribe()
            assert len(srv.frames("subscribe")) == 1

    run(main())


def test_a_refused_subscription_raises():
    async def script(peer):
        f = await peer.recv()
        await peer.send({"type": "refused", "id": f["id"], "op": "subscribe", "code": "unknown_channel",
                         "reason": "no channel `nope`"})
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k") as c:
                with pytest.raises(Refused) as e:
                    await c.subscribe("nope", print)
                assert e.value.code == "unknown_channel"
                assert c.subscriptions == []

    run(main())


def test_reconnect_resubscribes_every_channel_and_reports_the_close():
    async def script(peer):
        if peer.index == 0:
            f = await peer.recv()
            await peer.ack(f)
            for ch in f["channels"]:
                await peer.send({"type": "snapshot", "channel": ch, "seq": 0, "data": {}})
            await peer.close(4008, "too far behind: reconnect and resubscribe")
            return
        await peer.serve_forever()

    async def main():
        closes = []
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k", backoff_initial=0.01,
                                      on_close=lambda *a: closes.append(a)) as c:
                stream = c.stream(["orders", "positions"])
                got = [await stream.__anext__() for _ in range(4)]  # two snapshots, then two after reconnecting
                assert [u.snapshot for u in got] == [True] * 4
                assert sorted(u.channel for u in got[2:]) == ["orders", "positions"]
                assert c.reconnects == 1 and c.resubscriptions == 0
                assert c.last_close == (4008, "too far behind: reconnect and resubscribe")
                await stream.aclose()
        assert closes == [(4008, "too far behind: reconnect and resubscribe", True)]
        again = srv.frames("subscribe", index=1)
        assert sorted(again[0]["channels"]) == ["orders", "positions"]

    run(main())


def test_without_reconnect_a_4008_close_raises_too_far_behind():
    async def script(peer):
        f = await peer.recv()
        await peer.ack(f)
        await peer.send({"type": "snapshot", "channel": "fills", "seq": 0, "data": {"fills": []}})
        await peer.close(4008, "too far behind: reconnect and resubscribe")

    async def main():
        closes = []
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, api_key="trk_k", reconnect=False,
                                      on_close=lambda *a: closes.append(a)) as c:
                with pytest.raises(TooFarBehind) as e:
                    async for _ in c.stream("fills"):
                        pass
                assert e.value.code == 4008 and "too far behind" in e.value.reason
                with pytest.raises(TooFarBehind):
                    await c.wait_closed()
                with pytest.raises(Closed):
                    await c.ping()
            assert srv.connections == 1
        assert closes == [(4008, "too far behind: reconnect and resubscribe", False)]

    run(main())


def test_token_expiry_1008_is_final_with_a_fixed_token():
    async def script(peer):
        await peer.close(1008, "access token expired")

    async def main():
        closes = []
        async with FakeServer(script) as srv:
            c = await Client.connect(srv.url, token="tok", backoff_initial=0.01, on_close=lambda *a: closes.append(a))
            with pytest.raises(CredentialExpired) as e:
                await c.wait_closed()
            assert e.value.code == 1008 and e.value.reason == "access token expired"
            await c.close()
            assert srv.connections == 1
        assert closes == [(1008, "access token expired", False)]

    run(main())


def test_token_expiry_reconnects_when_the_token_comes_from_a_callable():
    tokens = iter(["old", "new"])

    async def script(peer):
        if peer.index == 0:
            await peer.close(1008, "access token expired")
            return
        await peer.serve_forever()

    async def main():
        async with FakeServer(script) as srv:
            async with Client.connect(srv.url, token=lambda: next(tokens), backoff_initial=0.01) as c:
                for _ in range(200):
                    if c.reconnects:
                        break
                    await asyncio.sleep(0.01)
                await c.ping()
            assert [h["Authorization"] for _, h in srv.requests] == ["Bearer old", "Bearer new"]

    run(main())
