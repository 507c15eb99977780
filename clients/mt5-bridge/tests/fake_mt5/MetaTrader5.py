"""A fake of the official `MetaTrader5` package for the tests: the same function names, result fields and
return codes, over a tiny broker whose state lives in a SQLite file (FAKE_MT5_STATE), so the test process
(which quotes ticks) and the bridge process (which trades) share one terminal — across bridge restarts too.

Knobs (environment): FAKE_MT5_INIT_FAIL=1 makes initialize() fail; FAKE_MT5_FORCE_RETCODE=10019 makes
order_send answer that code; FAKE_MT5_HANG_AFTER_SEND=1 makes the process hang right after a successful
order_send, before the bridge can report it (the test then kills it).
"""

import os
import sqlite3
import time
from collections import namedtuple

TRADE_ACTION_DEAL, TRADE_ACTION_PENDING = 1, 5
DEAL_TYPE_BUY, DEAL_TYPE_SELL, DEAL_TYPE_BALANCE = 0, 1, 2
ORDER_TYPE_BUY, ORDER_TYPE_SELL = 0, 1
ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
TRADE_RETCODE_DONE, TRADE_RETCODE_NO_MONEY = 10009, 10019
COPY_TICKS_ALL = -1
DEAL_ENTRY_IN, DEAL_ENTRY_OUT = 0, 1

Tick = namedtuple("Tick", "time bid ask last volume time_msc flags volume_real")
SymbolInfo = namedtuple("SymbolInfo", "name digits point filling_mode volume_min volume_max volume_step trade_contract_size")
AccountInfo = namedtuple("AccountInfo", "login server currency leverage balance equity margin margin_free profit margin_mode")
TradePosition = namedtuple("TradePosition", "ticket time_msc type magic identifier volume price_open price_current profit symbol comment")
TradeDeal = namedtuple("TradeDeal", "ticket order time_msc type entry magic position_id volume price commission swap profit fee symbol comment")
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


def orders_get(symbol=None, ticket=None, group=None):
    return ()


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
    _bump(db, f"order_send:{request['comment']}")
    forced = os.environ.get("FAKE_MT5_FORCE_RETCODE")
    if forced:
        return OrderSendResult(int(forced), 0, 0, 0.0, 0.0, 0.0, 0.0, "No money", 0, 0, request)
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
