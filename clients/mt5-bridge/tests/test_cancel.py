"""Cancels of pending orders: `cancel_request` → TRADE_ACTION_REMOVE → `cancel_result`.

First the bridge alone (a stand-in WebSocket on the fake terminal): how it finds the ticket, that it removes an
order once and answers a repeat from the journal, and what it answers when there is nothing to remove. Then the
whole path against a real `trellis serve`: a trading client places a manual limit order and cancels it over
`/ws/v1/client`.
"""

import asyncio
import json
import time
import urllib.request

from websockets.sync.client import connect

from conftest import KEY, Bridge, wait_until
from trellis_bridge import bridge as core
from trellis_bridge.journal import Journal

COID = "manual:lim-1"


class Socket:
    """A WebSocket that hands the bridge `incoming` frames and records what the bridge sends."""

    def __init__(self, incoming=()):
        self.incoming = [json.dumps(f) for f in incoming]
        self.sent = []

    async def send(self, text):
        self.sent.append(json.loads(text))

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.incoming:
            return self.incoming.pop(0)
        raise StopAsyncIteration


def make_bridge(tmp_path, mt5):
    return core.Bridge(mt5, "ws://unused", KEY, 5001, "Fake-Server", ["EURUSD"], Journal(str(tmp_path / "journal.db")),
                       heartbeat_s=60)


def feed(bridge, *frames):
    """Runs the bridge's reader over `frames` (numbered after the last trellis seq it processed); returns what it
    sent."""
    bridge.ws = Socket([dict(f, seq=bridge.in_seq + i) for i, f in enumerate(frames, 1)])
    asyncio.run(bridge._reader())
    return bridge.ws.sent


def limit_request(coid=COID, price=1.05):
    return {"type": "order_request", "client_order_id": coid, "action": 5, "symbol": "EURUSD", "order_type": 2,
            "volume": 0.1, "price": price, "sl": 0, "tp": 0, "deviation": 0, "magic": 0, "comment": coid[:31],
            "type_filling": 2, "type_time": 0, "position": 0}


def cancel(coid=COID, order=0):
    return {"type": "cancel_request", "client_order_id": coid, "order": order}


def place(bridge):
    """A buy limit placed through the bridge, as trellis asks for one; its ticket."""
    [result] = feed(bridge, limit_request())
    assert (result["type"], result["retcode"]) == ("order_result", 10008)
    return result["order"]


def test_a_cancel_removes_the_pending_order_once_and_a_repeat_is_answered_done_from_the_journal(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    ticket = place(bridge)
    assert [o[0] for o in terminal.pending_orders()] == [ticket]

    sent = feed(bridge, cancel(order=ticket), cancel(order=ticket))

    assert [(f["type"], f["client_order_id"], f["retcode"], f["order"]) for f in sent] == \
        [("cancel_result", COID, 10009, ticket)] * 2
    assert terminal.pending_orders() == []
    assert terminal.counter("order_remove") == 1, "removed once; the repeat came from the journal"
    assert terminal.counter(f"order_remove:{ticket}") == 1
    # Reliable: kept until trellis acknowledges them.
    assert [json.loads(f)["type"] for f in bridge.journal.unacknowledged(0)][-2:] == ["cancel_result"] * 2


def test_a_cancel_without_a_ticket_finds_it_in_the_journal(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    ticket = place(bridge)
    [result] = feed(bridge, cancel(order=0))
    assert (result["retcode"], result["order"]) == (10009, ticket)
    assert terminal.pending_orders() == []


def test_a_cancel_unknown_to_the_journal_finds_the_order_at_the_terminal_by_its_comment(tmp_path, terminal):
    coid = "manual:a-client-order-id-longer-than-31-characters"
    placed = terminal.order_send({"action": 5, "symbol": "EURUSD", "volume": 0.1, "type": 3, "price": 1.2,
                                  "magic": 0, "comment": coid[:31]})
    other = terminal.order_send({"action": 5, "symbol": "EURUSD", "volume": 0.1, "type": 2, "price": 1.0,
                                 "magic": 0, "comment": "manual:someone-else"})
    bridge = make_bridge(tmp_path, terminal)
    [result] = feed(bridge, cancel(coid=coid))
    assert (result["retcode"], result["order"]) == (10009, placed.order)
    assert [o[0] for o in terminal.pending_orders()] == [other.order]


def test_no_ticket_anywhere_is_answered_invalid_without_order_send(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    [result] = feed(bridge, cancel(coid="manual:never-placed"))
    assert (result["type"], result["retcode"], result["order"]) == ("cancel_result", 10013, 0)
    assert "no such pending order" in result["comment"]
    assert terminal.counter("order_send") == 0


def test_a_removal_the_server_refuses_is_reported_and_may_be_tried_again(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    [first, second] = feed(bridge, cancel(order=999_999), cancel(order=999_999))
    assert (first["retcode"], second["retcode"]) == (10013, 10013)
    assert terminal.counter("order_remove") == 2, "a refusal is not remembered as a removal"
    assert bridge.journal.cancel(COID) is None


def test_a_removal_cut_short_by_a_crash_is_settled_from_the_order_history(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    ticket = place(bridge)
    # The crash: the journal says "removing", the terminal removed it, trellis never heard.
    bridge.journal.mark_removing(COID, ticket)
    assert terminal.order_send({"action": 8, "order": ticket}).retcode == 10009

    [result] = feed(bridge, cancel(order=ticket))
    assert (result["retcode"], result["order"]) == (10009, ticket)
    assert terminal.counter("order_remove") == 1, "not removed a second time"
    assert bridge.journal.cancel(COID)[0] == "done"


# -- against a real trellis, from a trading client ---------------------------------------------------------------
class Client:
    """A trading client on trellis's `/ws/v1/client`, authenticated with the tenant's key (configured keys have
    every scope, `trade` included)."""

    def __init__(self, trellis):
        self.ws = connect(f"ws://127.0.0.1:{trellis.port}/ws/v1/client", additional_headers={"X-API-Key": KEY},
                          open_timeout=10).__enter__()
        self.seen = []  # every frame read
        self.unread = []  # frames read while waiting for another, not yet returned
        welcome = self.next(lambda f: True)
        assert welcome["type"] == "welcome" and welcome["can_trade"], welcome

    def next(self, predicate, timeout=30.0):
        """The first frame not returned before that matches: an update may overtake the `ack` of its command."""
        for i, frame in enumerate(self.unread):
            if predicate(frame):
                return self.unread.pop(i)
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError(f"no matching frame in {timeout}s; seen: {self.seen[-10:]}")
            frame = json.loads(self.ws.recv(timeout=left))
            self.seen.append(frame)
            if predicate(frame):
                return frame
            self.unread.append(frame)

    def command(self, frame, timeout=30.0):
        """Sends a command and returns its answer (`ack` or `refused`)."""
        self.ws.send(json.dumps(frame))
        return self.next(lambda f: f.get("id") == frame["id"] and f["type"] in ("ack", "refused", "error"), timeout)

    def order_update(self, status, timeout=30.0):
        """The `orders` channel's update that shows the order in `status`."""
        return self.next(lambda f: f["type"] == "update" and f.get("channel") == "orders"
                         and f["data"]["client_order_id"] == COID and f["data"]["status"] == status, timeout)

    def close(self):
        self.ws.__exit__(None, None, None)


def orders_over_http(trellis):
    req = urllib.request.Request(f"http://127.0.0.1:{trellis.port}/api/v1/orders", headers={"X-API-Key": KEY})
    return {o["client_order_id"]: o for o in json.loads(urllib.request.urlopen(req, timeout=10).read())["orders"]}


PLACE = {"op": "place_order", "id": "o1", "client_order_id": "lim-1", "symbol": "EURUSD", "side": "buy",
         "volume": "0.1", "kind": "limit", "price": "1.0500"}
CANCEL = {"op": "cancel_order", "id": "c1", "client_order_id": "lim-1"}


def place_over_trellis(trellis, terminal):
    """A connected bridge, a trading client subscribed to `orders`, and lim-1 placed at the terminal."""
    terminal.push_tick("EURUSD", int(time.time() * 1000), 1.1000, 1.1002)
    wait_until("the session", lambda: trellis.metric("trellis_mt5_sessions") == 1)
    client = Client(trellis)
    assert client.command({"op": "subscribe", "id": "s1", "channels": ["orders"]})["type"] == "ack"
    client.next(lambda f: f["type"] == "snapshot" and f["channel"] == "orders")
    placed = client.command(PLACE)
    assert placed["type"] == "ack", placed
    client.order_update("placed")
    [pending] = terminal.pending_orders()
    assert pending[1:5] == ("EURUSD", 2, 0.1, 1.05)  # BUY_LIMIT 0.1 lots at 1.05
    return client, pending[0]


def test_a_trading_client_cancels_a_manual_limit_order_and_the_terminal_removes_it_once(tmp_path, trellis, terminal):
    bridge = Bridge(tmp_path, trellis.url)
    client = None
    try:
        client, ticket = place_over_trellis(trellis, terminal)

        cancelled = client.command(CANCEL)
        assert cancelled["type"] == "ack", cancelled
        assert cancelled["result"]["cancel"] == "sent"
        update = client.order_update("cancelled")
        assert update["data"]["client_order_id"] == COID

        assert terminal.pending_orders() == []
        assert terminal.counter("order_remove") == 1
        assert terminal.counter(f"order_remove:{ticket}") == 1
        assert orders_over_http(trellis)[COID]["status"] == "cancelled"
        assert f"cancel of {COID}: retcode 10009, order {ticket}" in bridge.output()

        again = client.command(dict(CANCEL, id="c2"))
        assert (again["type"], again.get("code")) == ("refused", "not_cancellable"), again
        time.sleep(0.5)
        assert terminal.counter("order_remove") == 1
    finally:
        if client:
            client.close()
        bridge.stop()


def test_a_bridge_killed_after_the_removal_answers_done_on_resume_without_removing_again(tmp_path, trellis, terminal):
    crashing = Bridge(tmp_path, trellis.url, extra_env={"FAKE_MT5_HANG_AFTER_REMOVE": "1"})
    client = restarted = None
    try:
        client, ticket = place_over_trellis(trellis, terminal)
        assert client.command(CANCEL)["type"] == "ack"
        wait_until("the removal", lambda: terminal.counter("order_remove") == 1 and terminal.pending_orders() == [])
        crashing.kill()  # between order_send and the cancel_result

        restarted = Bridge(tmp_path, trellis.url)  # trellis re-sends the cancel_request on resume
        client.order_update("cancelled")
        assert terminal.counter("order_remove") == 1, "removed once"
        assert terminal.pending_orders() == []
        assert orders_over_http(trellis)[COID]["status"] == "cancelled"
        assert f"order {ticket} is no longer pending" in restarted.output()
    finally:
        if client:
            client.close()
        crashing.stop()
        if restarted:
            restarted.stop()
