"""The real bridge against a real `trellis serve`, on the fake terminal."""

from conftest import MINUTE, T0, Bridge, wait_until

RISING = [(0, 1.1000), (1, 1.1010), (2, 1.1020), (3, 1.1030)]


def push_rising(terminal):
    for minute, bid in RISING:
        terminal.push_tick("EURUSD", T0 + minute * MINUTE, bid, bid + 0.0002)
        import time

        time.sleep(0.3)


def test_ticks_become_bars_and_a_strategy_order_is_executed_and_recorded(tmp_path, trellis, terminal):
    bridge = Bridge(tmp_path, trellis.url)
    try:
        wait_until("the session", lambda: trellis.metric("trellis_mt5_sessions") == 1)
        push_rising(terminal)
        wait_until("the fill in trellis", lambda: trellis.metric("trellis_fills_total") == 1)

        assert trellis.metric("trellis_ticks_total") == 4
        assert trellis.metric("trellis_bars_closed_total") >= 3
        assert terminal.counter("order_send") == 1
        assert trellis.fills_in_store() == 1
    finally:
        bridge.stop()


def test_a_bridge_killed_after_order_send_is_not_sent_the_order_again_and_trellis_records_one_fill(tmp_path, trellis, terminal):
    crashing = Bridge(tmp_path, trellis.url, extra_env={"FAKE_MT5_HANG_AFTER_SEND": "1"})
    wait_until("the session", lambda: trellis.metric("trellis_mt5_sessions") == 1)
    push_rising(terminal)
    wait_until("order_send", lambda: terminal.counter("order_send") == 1)
    crashing.kill()  # between order_send and the report

    restarted = Bridge(tmp_path, trellis.url)
    try:
        wait_until("the fill in trellis", lambda: trellis.metric("trellis_fills_total") == 1)
        import time

        time.sleep(1.0)  # room for a duplicate to show up
        assert terminal.counter("order_send") == 1, "the order went to MT5 once"
        assert trellis.metric("trellis_fills_total") == 1
        assert trellis.fills_in_store() == 1
        assert "reconciled" in restarted.output()
    finally:
        restarted.stop()


def test_an_mt5_rejection_is_reported_to_trellis_with_its_retcode(tmp_path, trellis, terminal):
    bridge = Bridge(tmp_path, trellis.url, extra_env={"FAKE_MT5_FORCE_RETCODE": "10019"})
    try:
        wait_until("the session", lambda: trellis.metric("trellis_mt5_sessions") == 1)
        push_rising(terminal)
        wait_until("the rejection", lambda: trellis.metric('trellis_orders_total{outcome="rejected_by_terminal"}') == 1)
        assert trellis.metric("trellis_fills_total") == 0
        assert "retcode 10019" in bridge.output()
    finally:
        bridge.stop()


def test_a_wrong_key_exits_non_zero_with_a_clear_message(tmp_path, trellis, terminal):
    bridge = Bridge(tmp_path, trellis.url, key="trk_nobody00_not-a-key-at-all")
    assert bridge.wait() == 2
    assert "bad_api_key" in bridge.output()


def test_trellis_down_at_start_is_retried_then_given_up_with_a_clear_message(tmp_path, terminal):
    bridge = Bridge(tmp_path, "ws://127.0.0.1:9/ws/mt5", args=("--connect-retries", "2"))
    assert bridge.wait() == 2
    out = bridge.output()
    assert "attempt 1/2" in out and "could not connect to trellis" in out


def test_a_terminal_that_will_not_initialise_exits_non_zero(tmp_path, terminal):
    bridge = Bridge(tmp_path, "ws://127.0.0.1:9/ws/mt5", extra_env={"FAKE_MT5_INIT_FAIL": "1"})
    assert bridge.wait() == 2
    assert "did not initialise" in bridge.output()
