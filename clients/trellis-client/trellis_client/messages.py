"""Typed frames and records of the trading-client protocol (docs/client-protocol.md).

Decimals arrive as JSON strings (`"1.10012"`) and are parsed as `decimal.Decimal`; times are milliseconds since
the Unix epoch (UTC). Fields the server adds that this version does not know are kept in `extra`, never refused;
fields it leaves out are `None`.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Optional, Union

__all__ = [
    "Ack", "Bar", "Deal", "ErrorFrame", "Fill", "Frame", "KillSwitch", "Order", "Pnl", "Pong", "Position",
    "Refused", "RiskState", "RiskView", "Snapshot", "StrategyView", "SupervisionEvent", "Tick", "TrellisError",
    "Update", "UpdateFrame", "Welcome", "decode_channel_data", "decode_frame", "dumps", "loads", "to_decimal",
]


class TrellisError(Exception):
    """Base of the errors this package raises."""


class Refused(TrellisError):
    """A command the server answered with `refused` (`code` as in the protocol: `risk_rejected`,
    `unknown_symbol`, `unknown_strategy`, `no_session`, `forbidden`, …)."""

    def __init__(self, code: str, reason: str = "", *, op: Optional[str] = None, id: Optional[str] = None):
        super().__init__(f"{code}: {reason}" if reason else code)
        self.code = code
        self.reason = reason
        self.op = op
        self.id = id

    @classmethod
    def from_json(cls, d: dict) -> "Refused":
        return cls(str(d.get("code")), str(d.get("reason") or ""), op=d.get("op"), id=d.get("id"))

    def __repr__(self) -> str:
        return f"Refused(code={self.code!r}, reason={self.reason!r}, op={self.op!r})"


def to_decimal(v: Any) -> Optional[Decimal]:
    """`Decimal` of a JSON decimal (a string, or a number from a lenient peer); `None` stays `None`."""
    if v is None or isinstance(v, Decimal):
        return v
    if isinstance(v, bool):
        raise TypeError(f"not a decimal: {v!r}")
    return Decimal(str(v))


def loads(text: Union[str, bytes]) -> Any:
    """JSON with numbers that have a fraction read as `Decimal` (never float), as trellis's decimals are."""
    return json.loads(text, parse_float=Decimal)


def _default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """Compact JSON; `Decimal`s are written as strings, as the protocol wants them."""
    return json.dumps(obj, separators=(",", ":"), default=_default)


# ---- generic decoding -------------------------------------------------------------------------------------

_HINTS: dict = {}


def _hints(cls) -> dict:
    h = _HINTS.get(cls)
    if h is None:
        h = _HINTS[cls] = typing.get_type_hints(cls)
    return h


def _convert(tp: Any, v: Any) -> Any:
    if v is None:
        return None
    origin = typing.get_origin(tp)
    if origin is Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], v) if len(args) == 1 else v
    if tp is Decimal:
        return to_decimal(v)
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return [_convert(arg, x) for x in v] if isinstance(v, list) else v
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(v, dict):
        return tp.from_json(v)
    return v


class _Record:
    """Mixin: `from_json` fills the dataclass's fields from a dict by their annotations (Decimal, nested
    records, lists of records), `None` for a missing field, unknown keys into `extra`."""

    @classmethod
    def from_json(cls, d: dict):
        if not isinstance(d, dict):
            raise TypeError(f"{cls.__name__}: expected an object, got {type(d).__name__}")
        hints = _hints(cls)
        kwargs = {}
        names = set()
        for f in dataclasses.fields(cls):
            names.add(f.name)
            if f.name == "extra":
                continue
            kwargs[f.name] = _convert(hints[f.name], d.get(f.name))
        if getattr(cls, "_is_frame", False):
            names.add("type")
        kwargs["extra"] = {k: v for k, v in d.items() if k not in names}
        return cls(**kwargs)


# ---- records ----------------------------------------------------------------------------------------------


@dataclass
class Tick(_Record):
    symbol: str
    bid: Decimal
    ask: Decimal
    time_msc: int
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Bar(_Record):
    """A closed OHLC bar (built from bids)."""
    symbol: str
    timeframe: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    tick_volume: int
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Order(_Record):
    """An order trellis sent (or refused to send). Keyed by `client_order_id` (`manual:<id>` for orders placed
    through this protocol)."""
    client_order_id: str
    account: int
    strategy_id: Optional[str]
    symbol: str
    side: str
    kind: str
    volume: Decimal
    price: Optional[Decimal]
    status: str
    filled_volume: Decimal
    avg_price: Optional[Decimal]
    retcode: Optional[int]
    broker_order: Optional[int]
    reason: Optional[str]
    created_ms: int
    updated_ms: int
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in ("filled", "rejected", "cancelled")


@dataclass
class Fill(_Record):
    """What a deal traded."""
    symbol: str
    side: str
    volume: Decimal
    price: Decimal
    position_id: int
    entry: str
    commission: Decimal
    time_msc: int
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class Deal(_Record):
    """A deal of the trade server, keyed by `ticket` (the deal ticket) per account. The traded symbol, side,
    volume and price are in `fill` (and are also properties of the deal)."""
    account: int
    ticket: int
    order: int
    client_order_id: Optional[str]
    strategy_id: Optional[str]
    fill: Fill
    swap: Decimal
    profit: Decimal
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def symbol(self) -> Optional[str]:
        return self.fill.symbol if self.fill else None

    @property
    def side(self) -> Optional[str]:
        return self.fill.side if self.fill else None

    @property
    def volume(self) -> Optional[Decimal]:
        return self.fill.volume if self.fill else None

    @property
    def price(self) -> Optional[Decimal]:
        return self.fill.price if self.fill else None

    @property
    def time_msc(self) -> Optional[int]:
        return self.fill.time_msc if self.fill else None


@dataclass
class Position(_Record):
    """An account's net position in a symbol (`AccountPosition`), keyed by `account` + `symbol`; `volume` 0
    when it was closed."""
    account: int
    position_id: int
    symbol: str
    side: str
    volume: Decimal
    price_open: Decimal
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def is_closed(self) -> bool:
        return self.volume is not None and self.volume == 0


@dataclass
class Pnl(_Record):
    """The tenant's PnL. `curve` (`[(at_ms, equity)…]`) only in the snapshot."""
    realised: Decimal
    unrealised: Decimal
    commission: Decimal
    equity: Decimal
    at_ms: int
    curve: Optional[list] = None
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict) -> "Pnl":
        p = super().from_json(d)
        if isinstance(p.curve, list):
            p.curve = [(int(pt[0]), to_decimal(pt[1])) for pt in p.curve
                       if isinstance(pt, (list, tuple)) and len(pt) >= 2]
        return p


@dataclass
class StrategyView(_Record):
    """A strategy instance; `state` is `running`, `restarting`, `failed` or `stopped`. Keyed by `id`."""
    id: str
    kind: str
    symbol: str
    timeframe: str
    state: str
    running: bool
    restarts: int
    last_error: Optional[str]
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class KillSwitch(_Record):
    reason: str
    automatic: bool
    at_ms: int
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class RiskState(_Record):
    kill_switch: Optional[KillSwitch]
    daily_pnl: Decimal
    drawdown: Decimal
    blind_accounts: list
    rejections: int
    extra: dict = field(default_factory=dict, repr=False)


_LIMIT_DECIMALS = ("max_order_volume", "max_net_position", "max_daily_loss", "max_drawdown",
                   "max_portfolio_volatility")


@dataclass
class RiskView(_Record):
    """The `risk` channel's data: the tenant's `limits` (a dict, decimals parsed) and its `state`."""
    limits: Optional[dict]
    state: Optional[RiskState]
    extra: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict) -> "RiskView":
        if isinstance(d, dict) and "state" not in d and "limits" not in d and "kill_switch" in d:
            d = {"limits": None, "state": d}  # a bare RiskState
        r = super().from_json(d)
        if isinstance(r.limits, dict):
            r.limits = {k: (to_decimal(v) if k in _LIMIT_DECIMALS and isinstance(v, (str, int, Decimal)) else v)
                        for k, v in r.limits.items()}
        return r

    @property
    def kill_switch(self) -> Optional[KillSwitch]:
        return self.state.kill_switch if self.state else None

    @property
    def kill_switch_on(self) -> bool:
        return self.kill_switch is not None


@dataclass
class SupervisionEvent(_Record):
    seq: int
    at_ms: int
    kind: str
    supervisor: str
    child: str
    tenant: Optional[str]
    reason: str
    generation: int
    extra: dict = field(default_factory=dict, repr=False)


# ---- server frames ----------------------------------------------------------------------------------------


@dataclass
class Welcome(_Record):
    """The server's first frame."""
    tenant: str
    actor: str
    can_trade: bool
    channels: list
    symbols: list
    expires_ms: Optional[int]
    protocol_version: int
    extra: dict = field(default_factory=dict, repr=False)
    _is_frame = True


@dataclass
class Ack(_Record):
    """A command's success; `result` is the op's result object (`{"order": …, "duplicate": …}` …)."""
    id: Optional[str]
    op: Optional[str]
    result: Any
    extra: dict = field(default_factory=dict, repr=False)
    _is_frame = True


@dataclass
class Pong(_Record):
    id: Optional[str]
    extra: dict = field(default_factory=dict, repr=False)
    _is_frame = True


@dataclass
class ErrorFrame(_Record):
    """A frame the server could not read (`bad_frame`); `id` when it could read one."""
    id: Optional[str]
    code: str
    reason: str
    extra: dict = field(default_factory=dict, repr=False)
    _is_frame = True


@dataclass
class Snapshot:
    """A channel's whole current state (`seq` 0). `data` is typed by channel (see `decode_channel_data`)."""
    channel: str
    seq: int
    data: Any
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class UpdateFrame:
    """One change on a channel (`seq` 1, 2, …)."""
    channel: str
    seq: int
    data: Any
    raw: Any = field(default=None, repr=False, compare=False)


@dataclass
class Update:
    """What a subscriber receives: a snapshot (`snapshot=True`, `data` the whole state, lists for the keyed
    channels) or an update (`data` one record). `duplicate` marks an update that repeats what the channel's state
    already showed (applying it changes nothing)."""
    channel: str
    seq: int
    snapshot: bool
    data: Any
    duplicate: bool = False
    raw: Any = field(default=None, repr=False, compare=False)


Frame = Union[Welcome, Ack, Refused, Pong, Snapshot, UpdateFrame, ErrorFrame, dict]


def _list_of(cls, key):
    def snapshot(d):
        if not isinstance(d, dict):
            return d
        items = d.get(key)
        return [cls.from_json(x) for x in items] if isinstance(items, list) else []
    return snapshot


def _one(cls):
    def update(d):
        return cls.from_json(d) if isinstance(d, dict) else d
    return update


def _bars_snapshot(d):
    if not isinstance(d, dict):
        return d
    return [Bar.from_json(x) for x in d.get("bars") or []]


# channel kind -> (decode snapshot data, decode update data)
_DECODERS = {
    "ticks": (_one(Tick), _one(Tick)),
    "bars": (_bars_snapshot, _one(Bar)),
    "pnl": (_one(Pnl), _one(Pnl)),
    "positions": (_list_of(Position, "positions"), _one(Position)),
    "orders": (_list_of(Order, "orders"), _one(Order)),
    "fills": (_list_of(Deal, "fills"), _one(Deal)),
    "strategies": (_list_of(StrategyView, "strategies"), _one(StrategyView)),
    "risk": (_one(RiskView), _one(RiskView)),
    "supervision": (_list_of(SupervisionEvent, "events"), _one(SupervisionEvent)),
}


def channel_kind(channel: str) -> str:
    """`ticks:EURUSD` → `ticks`."""
    return channel.split(":", 1)[0]


def decode_channel_data(channel: str, data: Any, *, snapshot: bool) -> Any:
    """The typed form of a channel's `data`: snapshots of the keyed channels (`positions`, `orders`, `fills`,
    `strategies`, `supervision`) and of `bars:…` become lists of records, their updates one record; `ticks:…`
    a `Tick` (or `None` before the first), `pnl` a `Pnl`, `risk` a `RiskView`. `predictions:…` and channels
    this version does not know stay as decoded JSON."""
    dec = _DECODERS.get(channel_kind(channel))
    if dec is None or data is None:
        return data
    return dec[0 if snapshot else 1](data)


def decode_frame(frame: Union[str, bytes, dict]) -> Frame:
    """A server frame as its typed form; a frame of an unknown `type` is returned as the dict it is."""
    d = loads(frame) if isinstance(frame, (str, bytes)) else frame
    if not isinstance(d, dict):
        raise ValueError(f"a frame must be a JSON object, got {type(d).__name__}")
    t = d.get("type")
    if t == "welcome":
        return Welcome.from_json(d)
    if t == "ack":
        return Ack.from_json(d)
    if t == "refused":
        return Refused.from_json(d)
    if t == "pong":
        return Pong.from_json(d)
    if t == "error":
        return ErrorFrame.from_json(d)
    if t in ("snapshot", "update"):
        ch = str(d.get("channel"))
        snap = t == "snapshot"
        cls = Snapshot if snap else UpdateFrame
        return cls(ch, int(d.get("seq", 0)), decode_channel_data(ch, d.get("data"), snapshot=snap), raw=d.get("data"))
    return d
