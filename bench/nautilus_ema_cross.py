#!/usr/bin/env python3
"""NautilusTrader's side of `scripts/bench-nautilus.sh`: its EMA cross example strategy on a trellis tick file.

Usage: nautilus_ema_cross.py FILE.csv

FILE is in trellis's CSV format, `time_msc,bid,ask` with a header (milliseconds since the Unix epoch, 5-decimal
prices). The run mirrors `trellis backtest --strategy ema_cross --param fast=10 --param slow=20 --timeframe M1
--volume 1`: EUR/USD on a simulated venue SIM (`TestInstrumentProvider.default_fx_ccy`), a netting margin
account holding 1,000,000 USD, and `nautilus_trader.examples.strategies.ema_cross.EMACross` with EMAs of 10
and 20 on one-minute bars built inside the engine from the bids (`1-MINUTE-BID-INTERNAL`, as trellis builds
its bars from bids), trading 100,000 units (one lot).

Two times are measured with `time.perf_counter()`:
- load_s: reading the CSV (pandas), turning it into QuoteTicks (`QuoteTickDataWrangler`) and handing them to
  the engine (`engine.add_data`, which sorts them);
- run_s: `engine.run()` alone, which includes the engine's own end-of-run analysis.
Engine construction (venue, instrument, strategy) is in neither.

Logging is bypassed, so the only output is one JSON line, the last one:
{"load_s": …, "run_s": …, "orders": …, "fills": …, "positions": …, "ticks": …, "bars": …, "version": …}
`positions` counts every position opened, including those closed and reopened under the same id (NETTING keeps
one id per instrument and strategy and snapshots each closed cycle).

Needs nautilus_trader installed (scripts/bench-nautilus.sh makes a venv with it at target/bench-venv); written
against nautilus_trader 1.221.0.
"""

import json
import sys
import time
from decimal import Decimal


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} FILE.csv", file=sys.stderr)
        return 2
    path = argv[1]

    import pandas as pd

    import nautilus_trader
    from nautilus_trader.backtest.engine import BacktestEngine
    from nautilus_trader.backtest.engine import BacktestEngineConfig
    from nautilus_trader.config import LoggingConfig
    from nautilus_trader.examples.strategies.ema_cross import EMACross
    from nautilus_trader.examples.strategies.ema_cross import EMACrossConfig
    from nautilus_trader.model.currencies import USD
    from nautilus_trader.model.data import BarType
    from nautilus_trader.model.enums import AccountType
    from nautilus_trader.model.enums import OmsType
    from nautilus_trader.model.events import OrderFilled
    from nautilus_trader.model.identifiers import Venue
    from nautilus_trader.model.objects import Money
    from nautilus_trader.persistence.wranglers import QuoteTickDataWrangler
    from nautilus_trader.test_kit.providers import TestInstrumentProvider

    # The engine: logging bypassed (the example strategy logs every bar at INFO).
    engine = BacktestEngine(
        config=BacktestEngineConfig(
            trader_id="BENCH-001",
            logging=LoggingConfig(log_level="ERROR", bypass_logging=True),
        ),
    )
    venue = Venue("SIM")
    engine.add_venue(
        venue=venue,
        oms_type=OmsType.NETTING,
        account_type=AccountType.MARGIN,
        base_currency=USD,
        starting_balances=[Money(1_000_000, USD)],
    )
    instrument = TestInstrumentProvider.default_fx_ccy("EUR/USD", venue)
    engine.add_instrument(instrument)

    # The data: CSV -> DataFrame indexed by UTC time -> QuoteTicks -> the engine.
    t0 = time.perf_counter()
    df = pd.read_csv(path, dtype={"time_msc": "int64", "bid": "float64", "ask": "float64"})
    df.index = pd.to_datetime(df.pop("time_msc"), unit="ms", utc=True)
    df.index.name = "timestamp"
    ticks = QuoteTickDataWrangler(instrument).process(df)
    engine.add_data(ticks)
    load_s = time.perf_counter() - t0
    n_ticks = len(ticks)
    del df, ticks

    bar_type = BarType.from_str(f"{instrument.id}-1-MINUTE-BID-INTERNAL")
    strategy = EMACross(
        EMACrossConfig(
            instrument_id=instrument.id,
            bar_type=bar_type,
            trade_size=Decimal(100_000),
            fast_ema_period=10,
            slow_ema_period=20,
            subscribe_quote_ticks=False,
            subscribe_trade_ticks=False,  # the file has quotes only
            request_bars=False,  # no history before the file
        ),
    )
    engine.add_strategy(strategy)

    t0 = time.perf_counter()
    engine.run()
    run_s = time.perf_counter() - t0

    cache = engine.cache
    orders = cache.orders()
    fills = sum(1 for o in orders for e in o.events if isinstance(e, OrderFilled))
    positions = len(cache.positions()) + len(cache.position_snapshots())
    bars = cache.bar_count(bar_type)
    engine.dispose()

    print(
        json.dumps(
            {
                "load_s": round(load_s, 4),
                "run_s": round(run_s, 4),
                "orders": len(orders),
                "fills": fills,
                "positions": positions,
                "ticks": n_ticks,
                "bars": bars,
                "version": nautilus_trader.__version__,
            },
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
