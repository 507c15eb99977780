"""Protocol 2 in the bridge itself, without trellis: the epoch rule, the resume after a trellis restart, and the
answer to a `history_request`, driven through a stand-in WebSocket on the fake terminal."""

import asyncio
import json
import time

import pytest
from websockets.exceptions import ConnectionClosedOK

from conftest import KEY
from trellis_bridge import PROTOCOL_VERSION
from trellis_bridge import bridge as core
from trellis_bridge.journal import Journal

OLD_EPOCH, NEW_EPOCH = 1_785_200_000_123_456, 1_785_200_099_000_001
NO_DEALS = 2**53 - 1


class Socket:
    """A WebSocket that hands the bridge `incoming` frames, records what the bridge sends, then closes."""

    def __init__(self, incoming=()):
        self.incoming = [json.dumps(f) for f in incoming]
        self.sent = []

    async def send(self, text):
        self.sent.append(json.loads(text))

    async def recv(self):
        return self.incoming.pop(0)

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self.incoming:
            return self.incoming.pop(0)
        raise ConnectionClosedOK(None, None)


def make_bridge(tmp_path, mt5, journal=None):
    journal = journal or Journal(str(tmp_path / "journal.db"))
    return core.Bridge(mt5, "ws://unused", KEY, 5001, "Fake-Server", ["EURUSD"], journal, heartbeat_s=60)


def trade(terminal, comment, order_type=0, volume=0.1):
    """A market order executed at the fake terminal, as if by the bridge or by hand."""
    result = terminal.order_send({"action": 1, "symbol": "EURUSD", "volume": volume, "type": order_type,
                                  "price": 1.1, "magic": 7, "comment": comment})
    time.sleep(0.005)  # the next deal gets a later time_msc
    return result


def answer(bridge, request_id, from_msc):
    """The frames the bridge sends for one `history_request`."""
    bridge.ws = Socket()
    asyncio.run(bridge._answer_history({"type": "history_request", "seq": 2, "request_id": request_id,
                                        "from_msc": from_msc, "after_ticket": 0}))
    return bridge.ws.sent


def test_the_same_epoch_keeps_the_last_trellis_seq(tmp_path):
    journal = Journal(str(tmp_path / "journal.db"))
    journal.enter_epoch(OLD_EPOCH)
    journal.put("in_seq", 57)
    bridge = make_bridge(tmp_path, None, journal)
    bridge._enter_epoch(OLD_EPOCH)
    assert (bridge.epoch, bridge.in_seq) == (OLD_EPOCH, 57)


def test_a_new_epoch_forgets_the_last_trellis_seq_and_the_journal_remembers_that_across_a_bridge_restart(tmp_path):
    path = str(tmp_path / "journal.db")
    journal = Journal(path)
    journal.enter_epoch(OLD_EPOCH)
    journal.put("in_seq", 57)
    bridge = make_bridge(tmp_path, None, journal)
    bridge._enter_epoch(NEW_EPOCH)
    assert (bridge.epoch, bridge.in_seq) == (NEW_EPOCH, 0)
    restarted = make_bridge(tmp_path, None, Journal(path))
    assert (restarted.epoch, restarted.in_seq) == (NEW_EPOCH, 0)


def test_after_a_trellis_restart_the_bridge_resends_what_it_keeps_and_processes_the_new_trellis_frames(tmp_path, terminal):
    journal = Journal(str(tmp_path / "journal.db"))
    journal.enter_epoch(OLD_EPOCH)
    journal.put("in_seq", 57)
    # Frames of an earlier bridge life: their time-based seqs are below every seq this life will use.
    earlier = core.now_ms() * 1000 - 10
    kept = [{"type": "account", "seq": earlier, "login": 5001}, {"type": "positions", "seq": earlier + 1, "positions": []}]
    for frame in kept:
        journal.keep(frame["seq"], json.dumps(frame))
    journal.put("out_seq", earlier + 1)
    bridge = make_bridge(tmp_path, terminal, journal)
    ws = Socket([
        {"type": "welcome", "seq": 1, "session_id": "acme-5001-x", "epoch": NEW_EPOCH, "protocol_version": 2,
         "resume_from": 0, "heartbeat_interval_ms": 1000, "symbols": ["EURUSD"]},
        {"type": "heartbeat", "seq": 2, "time_msc": core.now_ms(), "ack": 0},
        {"type": "history_request", "seq": 3, "request_id": 1, "from_msc": NO_DEALS, "after_ticket": 0},
    ])
    with pytest.raises(ConnectionClosedOK):
        asyncio.run(bridge._session(ws))

    hello = ws.sent[0]
    assert (hello["type"], hello["protocol_version"], hello["epoch"], hello["last_seq_received"]) == \
        ("hello", PROTOCOL_VERSION, OLD_EPOCH, 57)
    assert ws.sent[1:3] == kept, "everything kept is re-sent first, in seq order, with its original seq"
    assert [f["type"] for f in ws.sent[3:5]] == ["account", "positions"]
    assert min(f["seq"] for f in ws.sent[3:]) > hello["seq"] > kept[-1]["seq"]
    ends = [f for f in ws.sent if f["type"] == "history_end"]
    assert [(e["request_id"], e["deals"]) for e in ends] == [(1, 0)], "seq 3 of the new epoch was not a duplicate"
    assert (journal.get("epoch"), journal.get("in_seq")) == (NEW_EPOCH, 3)


def test_a_history_answer_sends_every_trade_deal_even_one_sent_before_then_the_positions(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    ours = trade(terminal, "ema-eurusd-1")
    bridge.journal.mark_sending("ema-eurusd-1", {"comment": "ema-eurusd-1", "magic": 7})
    bridge.journal.mark_done("ema-eurusd-1", {"retcode": 10009, "order": ours.order, "deal": ours.deal})
    assert bridge.journal.deal_sent(ours.deal), "reported live before trellis restarted"
    terminal.balance_operation()
    by_hand = trade(terminal, "manual")

    frames = answer(bridge, 7, 0)

    deals = [f for f in frames if f["type"] == "deal"]
    assert [d["ticket"] for d in deals] == [ours.deal, by_hand.deal], "trade deals only, the balance operation left out"
    assert deals[0]["client_order_id"] == "ema-eurusd-1"
    assert "client_order_id" not in deals[1]
    end = frames[-1]
    assert (end["type"], end["request_id"], end["deals"]) == ("history_end", 7, 2)
    assert [(p["symbol"], p["type"], p["volume"]) for p in end["positions"]] == [("EURUSD", 0, 0.2)]
    assert [json.loads(t)["seq"] for t in bridge.journal.unacknowledged(0)] == [f["seq"] for f in frames], \
        "every frame of the answer is kept until trellis acknowledges it"

    live = terminal.history_deals_get(ticket=by_hand.order)[0]
    bridge.ws = Socket()
    asyncio.run(bridge._send_deal(live))
    assert bridge.ws.sent == [], "a deal answered in history is not reported live again"


def test_from_msc_selects_deals_by_time_and_2_to_the_53_minus_1_selects_none(tmp_path, terminal):
    bridge = make_bridge(tmp_path, terminal)
    trade(terminal, "ema-eurusd-1")
    second = trade(terminal, "ema-eurusd-2", order_type=1, volume=0.3)
    since = terminal.history_deals_get(ticket=second.order)[0].time_msc

    assert [f["ticket"] for f in answer(bridge, 1, since) if f["type"] == "deal"] == [second.deal]

    frames = answer(bridge, 2, NO_DEALS)
    assert [f["type"] for f in frames] == ["history_end"]
    assert frames[0]["deals"] == 0
    assert [(p["type"], p["volume"]) for p in frames[0]["positions"]] == [(1, 0.2)]


class TradeDuringFirstRead:
    """The terminal, with a trade made by hand right after the bridge's first read of the deal history."""

    def __init__(self, mt5):
        self.mt5, self.traded = mt5, None

    def __getattr__(self, name):
        return getattr(self.mt5, name)

    def history_deals_get(self, *args, **kwargs):
        deals = self.mt5.history_deals_get(*args, **kwargs)
        if self.traded is None:
            self.traded = trade(self.mt5, "manual")
        return deals


def test_a_trade_between_the_reads_makes_the_bridge_read_again_so_deals_and_positions_agree(tmp_path, terminal):
    mt5 = TradeDuringFirstRead(terminal)
    bridge = make_bridge(tmp_path, mt5)

    frames = answer(bridge, 1, 0)

    assert [f["ticket"] for f in frames if f["type"] == "deal"] == [mt5.traded.deal]
    assert frames[-1]["deals"] == 1
    assert [p["volume"] for p in frames[-1]["positions"]] == [0.1]
