"""trellis restarted in the middle of trading, stopped (SIGTERM) or killed (SIGKILL), on the same data dir and
port, while the real bridge keeps running: the bridge reconnects under trellis's new epoch, trellis books what
it missed from the bridge's kept frames and the terminal's history, and every order reaches the terminal once."""

import signal
import time
from collections import Counter

import pytest

from conftest import MINUTE, T0, Bridge, wait_until

RISING = [1.1000, 1.1010, 1.1020, 1.1030]  # the fast EMA crosses above the slow one: a buy
FALLING = [1.1020, 1.1000, 1.0980, 1.0960, 1.0940, 1.0920]  # and back below: a sell


def push(terminal, first_minute, bids):
    """One tick a minute of market time, a little apart in real time so bars close one after another."""
    for i, bid in enumerate(bids):
        terminal.push_tick("EURUSD", T0 + (first_minute + i) * MINUTE, bid, bid + 0.0002)
        time.sleep(0.2)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_after_a_trellis_restart_orders_still_execute_once_and_every_terminal_deal_is_stored_once(
        tmp_path, trellis, terminal, sig):
    bridge = Bridge(tmp_path, trellis.url)
    try:
        wait_until("the bridge's session", lambda: trellis.metric("trellis_mt5_sessions") == 1, timeout=10)
        push(terminal, 0, RISING)
        wait_until("the buy at the terminal", lambda: len(terminal.deal_tickets()) == 1, timeout=10)

        # Whether trellis stored the buy before it went down is a race on purpose: either way it is stored once.
        trellis.restart(sig)
        before = terminal.deal_tickets()
        wait_until("the bridge back", lambda: trellis.metric("trellis_mt5_sessions") == 1, timeout=15)
        wait_until("the buy stored", lambda: trellis.fill_tickets() == before, timeout=10)

        push(terminal, len(RISING), FALLING)
        wait_until("a sell at the terminal", lambda: len(terminal.deal_tickets()) > len(before), timeout=10)
        wait_until("trellis settled", lambda: trellis.fill_tickets() == terminal.deal_tickets(), timeout=10)
        time.sleep(1.0)  # room for a repeated order or fill to show up

        deals, fills = terminal.deal_tickets(), trellis.fill_tickets()
        assert len(deals) > len(before), "the strategy traded again after the restart"
        assert {t: Counter(fills)[t] for t in deals} == {t: 1 for t in deals}, "every deal stored exactly once"
        assert fills == deals, "nothing stored that the terminal did not execute"
        sends = terminal.sends_by_comment()
        assert sends and set(sends.values()) == {1}, f"an order went to the terminal twice: {sends}"
        assert terminal.counter("order_send") == len(deals)
        assert bridge.output().count("its sequence starts again") >= 2, "the bridge saw the first and the new epoch"
    except AssertionError:
        print("---- trellis.log (tail) ----\n" + trellis.output()[-6000:])
        print("---- bridge log (tail) ----\n" + bridge.output()[-6000:])
        raise
    finally:
        bridge.stop()
