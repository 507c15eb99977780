"""Records as trellis serialises them (src/domain, src/actors), for the unit tests."""

ORDER = {"client_order_id": "manual:o1", "account": 5001, "strategy_id": None, "symbol": "EURUSD", "side": "buy",
         "kind": "market", "volume": "0.10", "price": None, "status": "sent", "filled_volume": "0",
         "avg_price": None, "retcode": None, "broker_order": None, "reason": None, "created_ms": 1700000000000,
         "updated_ms": 1700000000000}

FILLED = dict(ORDER, status="filled", filled_volume="0.10", avg_price="1.10012", retcode=10009, broker_order=2001,
              updated_ms=1700000000100)


def deal(ticket=7, coid="manual:o1", volume="0.10", price="1.10012"):
    return {"account": 5001, "ticket": ticket, "order": 2001, "client_order_id": coid, "strategy_id": None,
            "fill": {"symbol": "EURUSD", "side": "buy", "volume": volume, "price": price, "position_id": 3001,
                     "entry": "in", "commission": "-0.70", "time_msc": 1700000000100},
            "swap": "0", "profit": "0"}


POSITION = {"account": 5001, "position_id": 3001, "symbol": "EURUSD", "side": "buy", "volume": "0.10",
            "price_open": "1.10012"}

TICK = {"symbol": "EURUSD", "bid": "1.10010", "ask": "1.10012", "time_msc": 1700000000000}

BAR = {"symbol": "EURUSD", "timeframe": "M1", "open_time_ms": 1699999980000, "open": "1.1", "high": "1.10020",
       "low": "1.09990", "close": "1.10010", "tick_volume": 42}

PNL = {"realised": "12.50", "unrealised": "-3.25", "commission": "-1.40", "equity": "100009.25",
       "at_ms": 1700000000000}

STRATEGY = {"id": "ema-eurusd", "kind": "ema_cross", "symbol": "EURUSD", "timeframe": "M1", "state": "running",
            "running": True, "restarts": 0, "last_error": None}

RISK = {"limits": {"max_order_volume": "1.0", "max_net_position": None, "max_open_positions": None,
                   "allowed_symbols": [], "max_daily_loss": None, "max_drawdown": None, "flatten_on_breach": False},
        "state": {"kill_switch": None, "daily_pnl": "0", "drawdown": "0", "blind_accounts": [], "rejections": 0}}

RISK_ON = {"limits": RISK["limits"],
           "state": dict(RISK["state"], kill_switch={"reason": "test", "automatic": False, "at_ms": 1700000000000})}

EVENT = {"seq": 1, "at_ms": 1700000000000, "kind": "started", "supervisor": "tenant:acme", "child": "risk",
         "tenant": "acme", "reason": "", "generation": 1}
