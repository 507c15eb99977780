"""A fake of the official `MetaTrader5` package for the tests: the same function names, result fields and
return codes, over a tiny broker whose state lives in a SQLite file (FAKE_MT5_STATE), so the test process
(which quotes ticks) and the bridge process (which trades) share one terminal — across bridge restarts too.

Market orders (TRADE_ACTION_DEAL) fill at once at the request's price. Pending orders (TRADE_ACTION_PENDING, types
BUY_LIMIT..SELL_STOP) wait in the `orders` table (`orders_get`) and never fill by themselves; TRADE_ACTION_REMOVE
deletes one and moves it to `history_orders` (`history_orders_get`) as ORDER_STATE_CANCELED.

Knobs (environment): FAKE_MT5_INIT_FAIL=1 makes initialize() fail; FAKE_MT5_FORCE_RETCODE=10019 makes
order_send answer that code; FAKE_MT5_HANG_AFTER_SEND=1 makes the process hang right after a successful
market order_send, before the bridge can report it (the test then kills it); FAKE_MT5_HANG_AFTER_REMOVE=1 does
the same right after a successful removal of a pending order; FAKE_MT5_RATES_ERROR=1 makes copy_rates_range fail
(None, with last_error() saying why).

Bars (`copy_rates_range`) are built from the pushed ticks by trellis's rules: OHLC from bid, a bar per period of
tick time with at least one tick, a tick older than the last one of its symbol ignored. Like MT5, the bar still
forming is returned too.
"""

import os
import sqlite3
import time
from collections import namedtuple

TRADE_ACTION_DEAL, TRADE_ACTION_PENDING, TRADE_ACTION_REMOVE = 1, 5, 8
DEAL_TYPE_BUY, DEAL_TYPE_SELL, DEAL_TYPE_BALANCE = 0, 1, 2
ORDER_TYPE_BUY, ORDER_TYPE_SELL = 0, 1
ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT, ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP = 2, 3, 4, 5
ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
ORDER_STATE_PLACED, ORDER_STATE_CANCELED = 1, 2
TRADE_RETCODE_PLACED, TRADE_RETCODE_DONE, TRADE_RETCODE_INVALID = 10008, 10009, 10013
TRADE_RETCODE_INVALID_PRICE, TRADE_RETCODE_NO_MONEY = 10015, 10019
COPY_TICKS_ALL = -1
TIMEFRAME_M1, TIMEFRAME_M5, TIMEFRAME_M15 = 1, 5, 15
TIMEFRAME_H1, TIMEFRAME_H4, TIMEFRAME_D1 = 16385, 16388, 16408
_PERIOD_S = {TIMEFRAME_M1: 60, TIMEFRAME_M5: 300, TIMEFRAME_M15: 900, TIMEFRAME_H1: 3600, TIMEFRAME_H4: 14400,
             TIMEFRAME_D1: 86400}
DEAL_ENTRY_IN, DEAL_ENTRY_OUT = 0, 1

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
SymbolInfo = namedtuple("SymbolInfo", "name digits point filling_mode volume_min volume_max volume_step trade_contract_size")
AccountInfo = namedtuple("AccountInfo", "login server currency leverage balance equity margin margin_free profit margin_mode")
TradePosition = namedtuple("TradePosition", "ticket time_msc type magic identifier volume price_open price_current profit symbol comment")
TradeDeal = namedtuple("TradeDeal", "ticket order time_msc type entry magic position_id volume price commission swap profit fee symbol comment")
TradeOrder = namedtuple("TradeOrder", "ticket time_setup time_setup_msc time_done time_done_msc time_expiration type "
                        "type_time type_filling state magic position_id position_by_id reason volume_initial "
                        "volume_current price_open sl tp price_current price_stoplimit symbol comment external_id")
Rate = namedtuple("Rate", "time open high low close tick_volume spread real_volume")
OrderCheckResult = namedtuple("OrderCheckResult", "retcode balance equity profit margin margin_free margin_level comment request")
OrderSendResult = namedtuple("OrderSendResult", "retcode deal order volume price bid ask comment request_id retcode_external request")

_last_error = (1, "Success")


def _db():
    db = sqlite3.connect(os.environ["FAKE_MT5_STATE"], timeout=10, isolation_level=None)
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS ticks (symbol TEXT, time_msc INTEGER, bid REAL, ask REAL);
        CREATE TABLE IF NOT EXISTS deals (ticket INTEGER PRIMARY KEY, ord INTEGER, time_msc INTEGER, type INTEGER,
            entry INTEGER, magic INTEGER, position_id INTEGER, volume REAL, price REAL, symbol TEXT, comment TEXT);
        CREATE TABLE IF NOT EXISTS positions (symbol TEXT PRIMARY KEY, ticket INTEGER, type INTEGER, volume REAL,
            price_open REAL, magic INTEGER, time_msc INTEGER);
        CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, value INTEGER);
        CREATE TABLE IF NOT EXISTS orders (ticket INTEGER PRIMARY KEY, symbol TEXT, type INTEGER, volume REAL,
            price REAL, magic INTEGER, comment TEXT, time_setup_msc INTEGER);
        CREATE TABLE IF NOT EXISTS history_orders (ticket INTEGER PRIMARY KEY, symbol TEXT, type INTEGER,
            volume REAL, price REAL, magic INTEGER, comment TEXT, time_setup_msc INTEGER, state INTEGER,
            time_done_msc INTEGER);
        """
    )
    return db


def _bump(db, key):
    db.execute("INSERT INTO counters (key, value) VALUES (?, 1) ON CONFLICT(key) DO UPDATE SET value = value + 1", (key,))
    return db.execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()[0]


def push_tick(symbol, time_msc, bid, ask):
    """For the test: the market moves."""
    _db().execute("INSERT INTO ticks VALUES (?, ?, ?, ?)", (symbol, time_msc, bid, ask))


def counter(key):
    """For the test: how many times something happened (e.g. 'order_send')."""
    row = _db().execute("SELECT value FROM counters WHERE key = ?", (key,)).fetchone()
    return row[0] if row else 0


def sends_by_comment():
    """For the test: how many times `order_send` was called for each order comment (the client order id)."""
    rows = _db().execute("SELECT key, value FROM counters WHERE key LIKE 'order_send:%'").fetchall()
    return {key[len("order_send:"):]: value for key, value in rows}


def pending_orders():
    """For the test: the pending orders waiting at the terminal, as (ticket, symbol, type, volume, price, magic,
    comment) rows, by ticket."""
    return _db().execute("SELECT ticket, symbol, type, volume, price, magic, comment FROM orders ORDER BY ticket").fetchall()


def deal_tickets():
    """For the test: the tickets of the account's trade deals, oldest first."""
    return [t for (t,) in _db().execute("SELECT ticket FROM deals WHERE type IN (?, ?) ORDER BY ticket",
                                        (DEAL_TYPE_BUY, DEAL_TYPE_SELL))]


def balance_operation():
    """For the test: a deposit or withdrawal, which shows in the deal history but is not a trade."""
    db = _db()
    ticket = 1000 + _bump(db, "tickets") * 2
    db.execute("INSERT INTO deals VALUES (?, 0, ?, ?, 0, 0, 0, 0, 0, '', 'deposit')",
               (ticket, int(time.time() * 1000), DEAL_TYPE_BALANCE))


def initialize(path=None, login=None, password=None, server=None, timeout=None, portable=False):
    global _last_error
    if os.environ.get("FAKE_MT5_INIT_FAIL") == "1":
        _last_error = (-10005, "IPC timeout")
        return False
    _db()
    return True


def login(login, password=None, server=None, timeout=None):
    return True


def shutdown():
    return None


def last_error():
    return _last_error


def symbol_select(symbol, enable=True):
    return True


def symbol_info(symbol):
    return SymbolInfo(symbol, 5, 0.00001, 2, 0.01, 100.0, 0.01, 100000.0)


def _tick(row):
    return Tick(row[0] // 1000, row[1], row[2], 0.0, 0, row[0], 6, 0.0)


def symbol_info_tick(symbol):
    row = _db().execute("SELECT time_msc, bid, ask FROM ticks WHERE symbol = ? ORDER BY time_msc DESC, rowid DESC LIMIT 1", (symbol,)).fetchone()
    return _tick(row) if row else None


def copy_ticks_from(symbol, date_from, count, flags):
    since = int(date_from.timestamp() * 1000) if hasattr(date_from, "timestamp") else int(date_from) * 1000
    rows = _db().execute("SELECT time_msc, bid, ask FROM ticks WHERE symbol = ? AND time_msc >= ? ORDER BY time_msc, rowid LIMIT ?",
                         (symbol, since, count)).fetchall()
    return [_tick(r) for r in rows]


def copy_rates_range(symbol, timeframe, date_from, date_to):
    """Bars whose open time (seconds) is in [date_from, date_to], oldest first; None for an unknown timeframe."""
    global _last_error
    period = _PERIOD_S.get(timeframe)
    if period is None or os.environ.get("FAKE_MT5_RATES_ERROR") == "1":
        _last_error = (-2, "Terminal: Invalid params")
        return None
    frm, to = int(date_from.timestamp()), int(date_to.timestamp())
    rows = _db().execute("SELECT time_msc, bid FROM ticks WHERE symbol = ? ORDER BY rowid", (symbol,)).fetchall()
    bars, last = [], None
    for time_msc, bid in rows:
        if last is not None and time_msc < last:
            continue
        last = time_msc
        start = time_msc // 1000 // period * period
        if bars and bars[-1][0] == start:
            t, o, h, lo, _, n = bars[-1]
            bars[-1] = [t, o, max(h, bid), min(lo, bid), bid, n + 1]
        else:
            bars.append([start, bid, bid, bid, bid, 1])
    return [Rate(t, o, h, lo, c, n, 0, 0) for t, o, h, lo, c, n in bars if frm <= t <= to]


def _positions(db):
    return db.execute("SELECT symbol, ticket, type, volume, price_open, magic, time_msc FROM positions WHERE volume > 0").fetchall()


def account_info():
    return AccountInfo(5001, "Fake-Server", "USD", 100, 100000.0, 100000.0, 0.0, 100000.0, 0.0, 0)


def positions_get(symbol=None, ticket=None, group=None):
    db = _db()
    out = []
    for (sym, tk, typ, vol, po, magic, t) in _positions(db):
        out.append(TradePosition(tk, t, typ, magic, tk, vol, po, po, 0.0, sym, ""))
    return tuple(out)


def _order(row, state, time_done_msc=0):
    ticket, symbol, typ, volume, price, magic, comment, setup = row[:8]
    return TradeOrder(ticket, setup // 1000, setup, time_done_msc // 1000, time_done_msc, 0, typ, 0, ORDER_FILLING_RETURN,
                      state, magic, 0, 0, 0, volume, volume if state == ORDER_STATE_PLACED else 0.0, price, 0.0, 0.0,
                      price, 0.0, symbol, comment, "")


def orders_get(symbol=None, ticket=None, group=None):
    rows = _db().execute("SELECT ticket, symbol, type, volume, price, magic, comment, time_setup_msc FROM orders "
                         "ORDER BY ticket").fetchall()
    return tuple(_order(r, ORDER_STATE_PLACED) for r in rows
                 if (symbol is None or r[1] == symbol) and (ticket is None or r[0] == ticket))


def history_orders_get(date_from=None, date_to=None, group=None, ticket=None, position=None):
    """Orders no longer waiting (here: the removed pending orders)."""
    rows = _db().execute("SELECT ticket, symbol, type, volume, price, magic, comment, time_setup_msc, state, "
                         "time_done_msc FROM history_orders ORDER BY ticket").fetchall()
    return tuple(_order(r, r[8], r[9]) for r in rows if ticket is None or r[0] == ticket)


def history_deals_get(date_from=None, date_to=None, group=None, ticket=None, position=None):
    db = _db()
    if ticket is not None:
        rows = db.execute("SELECT * FROM deals WHERE ord = ? ORDER BY ticket", (ticket,)).fetchall()
    else:
        rows = db.execute("SELECT * FROM deals ORDER BY ticket").fetchall()
    return tuple(TradeDeal(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], 0.0, 0.0, 0.0, 0.0, r[9], r[10]) for r in rows)


def order_check(request):
    return OrderCheckResult(0, 100000.0, 100000.0, 0.0, 0.0, 100000.0, 0.0, "Done", request)


def order_send(request):
    db = _db()
    _bump(db, "order_send")
    action = int(request.get("action", TRADE_ACTION_DEAL))
    if action == TRADE_ACTION_REMOVE:
        _bump(db, "order_remove")
        _bump(db, f"order_remove:{int(request.get('order') or 0)}")
    else:
        _bump(db, f"order_send:{request['comment']}")
    forced = os.environ.get("FAKE_MT5_FORCE_RETCODE")
    if forced:
        return OrderSendResult(int(forced), 0, 0, 0.0, 0.0, 0.0, 0.0, "No money", 0, 0, request)
    if action == TRADE_ACTION_PENDING:
        return _place(db, request)
    if action == TRADE_ACTION_REMOVE:
        return _remove(db, request)
    order = 1000 + _bump(db, "tickets") * 2
    deal = order + 1
    now = int(time.time() * 1000)
    side = int(request["type"])
    volume, price, symbol = float(request["volume"]), float(request["price"]), request["symbol"]
    row = db.execute("SELECT ticket, type, volume FROM positions WHERE symbol = ?", (symbol,)).fetchone()
    signed = volume if side == 0 else -volume
    if row is None:
        entry, new, ident = DEAL_ENTRY_IN, signed, order
        db.execute("INSERT INTO positions VALUES (?, ?, ?, ?, ?, ?, ?)", (symbol, order, 0 if signed > 0 else 1, abs(signed), price, request["magic"], now))
    else:
        current = row[2] if row[1] == 0 else -row[2]
        new = round(current + signed, 8)
        entry, ident = (DEAL_ENTRY_IN if current * signed > 0 else DEAL_ENTRY_OUT), row[0]
        db.execute("UPDATE positions SET type = ?, volume = ?, price_open = ? WHERE symbol = ?", (0 if new > 0 else 1, abs(new), price, symbol))
    db.execute("INSERT INTO deals VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (deal, order, now, side, entry, request["magic"], ident, volume, price, symbol, request["comment"]))
    if os.environ.get("FAKE_MT5_HANG_AFTER_SEND") == "1":
        time.sleep(3600)  # the bridge "crashes" here: the test kills this process
    return OrderSendResult(TRADE_RETCODE_DONE, deal, order, volume, price, price, price, "Request executed", 1, 0, request)


def _place(db, request):
    """A pending order: it waits in `orders` (and never fills here)."""
    typ, price = int(request["type"]), float(request.get("price") or 0)
    if typ not in (ORDER_TYPE_BUY_LIMIT, ORDER_TYPE_SELL_LIMIT, ORDER_TYPE_BUY_STOP, ORDER_TYPE_SELL_STOP):
        return OrderSendResult(TRADE_RETCODE_INVALID, 0, 0, 0.0, 0.0, 0.0, 0.0, "Invalid request", 0, 0, request)
    if price <= 0:
        return OrderSendResult(TRADE_RETCODE_INVALID_PRICE, 0, 0, 0.0, 0.0, 0.0, 0.0, "Invalid price", 0, 0, request)
    order = 1000 + _bump(db, "tickets") * 2
    volume = float(request["volume"])
    db.execute("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (order, request["symbol"], typ, volume, price,
               int(request.get("magic") or 0), request.get("comment", ""), int(time.time() * 1000)))
    return OrderSendResult(TRADE_RETCODE_PLACED, 0, order, volume, price, 0.0, 0.0, "Request executed", 1, 0, request)


def _remove(db, request):
    """TRADE_ACTION_REMOVE: a pending order leaves `orders` for `history_orders`, cancelled."""
    ticket = int(request.get("order") or 0)
    row = db.execute("SELECT ticket, symbol, type, volume, price, magic, comment, time_setup_msc FROM orders "
                     "WHERE ticket = ?", (ticket,)).fetchone()
    if row is None:
        return OrderSendResult(TRADE_RETCODE_INVALID, 0, 0, 0.0, 0.0, 0.0, 0.0, "Invalid request", 0, 0, request)
    db.execute("BEGIN IMMEDIATE")
    db.execute("DELETE FROM orders WHERE ticket = ?", (ticket,))
    db.execute("INSERT INTO history_orders VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (*row, ORDER_STATE_CANCELED, int(time.time() * 1000)))
    db.execute("COMMIT")
    if os.environ.get("FAKE_MT5_HANG_AFTER_REMOVE") == "1":
        time.sleep(3600)  # the bridge "crashes" here: the test kills this process
    return OrderSendResult(TRADE_RETCODE_DONE, 0, ticket, 0.0, 0.0, 0.0, 0.0, "Request executed", 1, 0, request)
