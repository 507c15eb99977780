"""The journal that makes orders execute once, and keeps the protocol state across restarts."""

from trellis_bridge.journal import Journal


def test_an_order_is_sending_then_done_and_survives_a_restart(tmp_path):
    path = str(tmp_path / "j.db")
    j = Journal(path)
    j.mark_sending("ema-1", {"symbol": "EURUSD", "comment": "ema-1"})
    assert j.order("ema-1")[0] == "sending"
    j.mark_done("ema-1", {"retcode": 10009, "order": 42, "deal": 43})
    again = Journal(path)
    state, request, result = again.order("ema-1")
    assert (state, request["symbol"], result["deal"]) == ("done", "EURUSD", 43)
    assert again.client_order_id_of(42) == "ema-1"


def test_the_outbox_keeps_frames_until_acknowledged(tmp_path):
    j = Journal(str(tmp_path / "j.db"))
    for seq in (5, 6, 7):
        j.keep(seq, f'{{"seq": {seq}}}')
    j.acknowledge(5)
    assert j.unacknowledged(0) == ['{"seq": 6}', '{"seq": 7}']
    assert j.unacknowledged(6) == ['{"seq": 7}']


def test_a_deal_ticket_is_sent_once(tmp_path):
    j = Journal(str(tmp_path / "j.db"))
    assert j.deal_sent(1001) is True
    assert j.deal_sent(1001) is False



def test_a_new_epoch_forgets_the_trellis_seq_but_keeps_the_outbox(tmp_path):
    j = Journal(str(tmp_path / "j.db"))
    j.put("in_seq", 57)
    j.keep(5, '{"type": "deal", "seq": 5, "ticket": 1003}')
    j.enter_epoch(1785200000123456)
    assert (j.get("epoch"), j.get("in_seq")) == (1785200000123456, 0)
    assert j.unacknowledged(0) == ['{"type": "deal", "seq": 5, "ticket": 1003}']


def test_a_cancel_is_removing_then_done_and_survives_a_restart(tmp_path):
    path = str(tmp_path / "j.db")
    j = Journal(path)
    j.mark_removing("manual:lim-1", 1004)
    assert j.cancel("manual:lim-1") == ("removing", 1004, None)
    j.mark_removed("manual:lim-1", 1004, {"retcode": 10009, "order": 1004, "comment": "removed"})
    assert Journal(path).cancel("manual:lim-1") == ("done", 1004, {"retcode": 10009, "order": 1004, "comment": "removed"})
    j.mark_removing("manual:lim-2", 1006)
    j.forget_cancel("manual:lim-2")
    assert j.cancel("manual:lim-2") is None
