"""asyncio client of trellis's trading-client protocol (`/ws/v1/client`, docs/client-protocol.md).

One `Client` is one logical connection to one tenant: subscriptions (with per-channel sequence checking, local
state and automatic resubscription on a gap), commands (each answered by an `ack` or raising `Refused`), and
automatic reconnection with back-off that resubscribes every channel and re-sends the commands that are safe to
send again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import logging
import random
import time
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, List, Optional, Union
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import websockets
from websockets.asyncio.client import connect as ws_connect

from .messages import (
    Ack, ErrorFrame, Order, Pong, Refused, RiskView, Snapshot, StrategyView, TrellisError, Update, UpdateFrame,
    Welcome, channel_kind, decode_frame, dumps, to_decimal,
)

log = logging.getLogger("trellis_client")

DEFAULT_URL = "ws://127.0.0.1:8080/ws/v1/client"
PROTOCOL_VERSION = 1
MAX_CHANNELS_PER_OP = 64

# ---- errors -------------------------------------------------------------------------------------------------


class Closed(TrellisError):
    """The connection was closed and the client will not reconnect (reconnection is off, the close code is
    final, or reconnecting failed). `code`/`reason` are the WebSocket close frame's (`None` when there was none)."""

    def __init__(self, code: Optional[int], reason: str = ""):
        super().__init__(f"connection closed ({code}){': ' + reason if reason else ''}")
        self.code = code
        self.reason = reason

    @staticmethod
    def for_code(code: Optional[int], reason: str = "") -> "Closed":
        cls = {4008: TooFarBehind, 1008: CredentialExpired, 4004: TenantGone}.get(code, Closed)
        return cls(code, reason)


class TooFarBehind(Closed):
    """Close code 4008: the client's reliable queue overflowed (`too far behind: reconnect and resubscribe`)."""


class CredentialExpired(Closed):
    """Close code 1008: the access token expired (`access token expired`) or the credential was revoked."""


class TenantGone(Closed):
    """Close code 4004: the tenant was removed or suspended."""


class HandshakeRefused(TrellisError):
    """The server refused the WebSocket upgrade with an HTTP error (401 no valid credential, 403 no rights,
    404 a tenant the caller may not see)."""

    def __init__(self, status: int, body: str = ""):
        super().__init__(f"upgrade refused: HTTP {status}{': ' + body if body else ''}")
        self.status = status
        self.body = body


class ConnectionLost(TrellisError):
    """The connection dropped after a command that is not safe to repeat (`cancel_order`, `flatten`,
    `unsubscribe`) was sent and before its answer: whether it took effect is unknown."""

    def __init__(self, op: str, code: Optional[int], reason: str = ""):
        super().__init__(f"{op}: connection lost before the answer ({code}{': ' + reason if reason else ''})")
        self.op = op
        self.code = code
        self.reason = reason


class ServerError(TrellisError):
    """An `error` frame answering a command (`bad_frame`): the server could not read it."""

    def __init__(self, code: str, reason: str):
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class ProtocolError(TrellisError):
    """The server did not follow the protocol (no welcome, wrong version, …)."""


# ---- sequencing and channel state -----------------------------------------------------------------------------


def _key_of(channel: str) -> Optional[Callable[[Any], Any]]:
    """How records of a keyed channel are identified (docs: orders by client_order_id, fills by deal, positions by
    account + symbol, strategies by id)."""
    kind = channel_kind(channel)
    if kind == "orders":
        return lambda o: o.client_order_id
    if kind == "fills":
        return lambda d: (d.account, d.ticket)
    if kind == "positions":
        return lambda p: (p.account, p.symbol)
    if kind == "strategies":
        return lambda s: s.id
    if kind == "supervision":
        return lambda e: e.seq
    if kind == "bars":
        return lambda b: b.open_time_ms
    return None


class ChannelState:
    """The materialised state of one channel, built from its snapshot and updates. For the keyed channels
    (`orders`, `fills`, `positions`, `strategies`, `supervision`, `bars:…`) `value` is a dict key → record in
    arrival order; for the others (`ticks:…`, `pnl`, `risk`, …) the latest data. Applying a record twice changes
    nothing."""

    def __init__(self, channel: str):
        self.channel = channel
        self.key = _key_of(channel)
        self.value: Any = {} if self.key else None

    def reset(self, data: Any) -> None:
        if self.key:
            self.value = {}
            for rec in data if isinstance(data, list) else []:
                self.value[self._safe_key(rec)] = rec
        else:
            self.value = data

    def _safe_key(self, rec: Any) -> Any:
        try:
            return self.key(rec)
        except AttributeError:
            return id(rec)

    def apply(self, data: Any) -> bool:
        """Applies one update; `True` when it repeated what the state already held."""
        if self.key:
            if not hasattr(data, "__dataclass_fields__"):
                return False
            k = self._safe_key(data)
            dup = self.value.get(k) == data
            self.value[k] = data
            return dup
        if channel_kind(self.channel) == "pnl" and self.value is not None and getattr(data, "curve", None) is None:
            # an update carries no curve: keep the snapshot's, extended by this point
            curve = getattr(self.value, "curve", None)
            dup = self.value.at_ms == data.at_ms and self.value.equity == data.equity
            if curve is not None and not dup:
                curve.append((data.at_ms, data.equity))
            self.value = dataclasses.replace(data, curve=curve)
            return dup
        dup = self.value == data and self.value is not None
        self.value = data
        return dup

    def snapshot_data(self) -> Any:
        """The state in the form of a snapshot's data (a list for the keyed channels)."""
        if self.key:
            return list(self.value.values())
        return self.value


@dataclass
class SeqResult:
    """What to do with a frame: deliver `update` (if any); `resubscribe` when a gap was seen."""
    update: Optional[Update] = None
    resubscribe: bool = False


class Sequencer:
    """Per-channel sequence check. A snapshot (seq 0) starts the count; an update whose seq is the previous plus 1
    is applied; one that repeats an already-seen seq is dropped; one further ahead is a gap: the channel awaits a
    fresh snapshot (updates before it are ignored) and the caller resubscribes."""

    def __init__(self, channel: str):
        self.channel = channel
        self.seq: Optional[int] = None  # None: waiting for a snapshot
        self.state = ChannelState(channel)
        self.gaps = 0
        self.stale = 0  # updates ignored (before a snapshot, or seq already seen)

    @property
    def synced(self) -> bool:
        return self.seq is not None

    def reset(self) -> None:
        """Forget the count: the next frame that counts is a snapshot."""
        self.seq = None

    def feed(self, frame: Union[Snapshot, UpdateFrame]) -> SeqResult:
        if isinstance(frame, Snapshot):
            self.seq = frame.seq
            self.state.reset(frame.data)
            return SeqResult(Update(frame.channel, frame.seq, True, frame.data, raw=frame.raw))
        if self.seq is None:
            self.stale += 1
            return SeqResult()
        if frame.seq <= self.seq:
            self.stale += 1
            return SeqResult()
        if frame.seq != self.seq + 1:
            log.warning("%s: gap: update seq %d after %d; resubscribing", self.channel, frame.seq, self.seq)
            self.gaps += 1
            self.seq = None
            return SeqResult(resubscribe=True)
        self.seq = frame.seq
        dup = self.state.apply(frame.data)
        return SeqResult(Update(frame.channel, frame.seq, False, frame.data, duplicate=dup, raw=frame.raw))


# ---- subscriptions --------------------------------------------------------------------------------------------

_CLOSE = object()  # sink queue item: the client closed for good (an exception item carries the reason)


class _Sink:
    """One consumer of a channel: a queue, drained by a handler task or by a stream."""

    def __init__(self, handler: Optional[Callable[[Update], Any]], snapshots: bool = True):
        self.handler = handler
        self.snapshots = snapshots
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: Optional[asyncio.Task] = None

    def put(self, item: Any) -> None:
        if isinstance(item, Update) and item.snapshot and not self.snapshots:
            return
        self.queue.put_nowait(item)


class _Channel:
    def __init__(self, name: str):
        self.name = name
        self.sequencer = Sequencer(name)
        self.sinks: List[_Sink] = []


class Subscription:
    """What `Client.subscribe` returns: `await sub.unsubscribe()` stops its handler (and unsubscribes the channels
    on the server when nothing else listens to them)."""

    def __init__(self, client: "Client", channels: List[str], sink: _Sink):
        self.client = client
        self.channels = channels
        self._sink = sink

    async def unsubscribe(self) -> None:
        await self.client._remove_sink(self.channels, self._sink)


# ---- commands -------------------------------------------------------------------------------------------------

# Ops whose frame can be sent again when the connection dropped before the answer: place_order is idempotent by
# client_order_id, a kill switch or a strategy start/stop sets a state, ping and subscribe have no effect to repeat.
_RETRYABLE = frozenset({"place_order", "kill_switch", "strategy_start", "strategy_stop", "ping", "subscribe"})


@dataclass
class _Pending:
    frame: dict
    future: asyncio.Future
    retry: bool
    sent: bool = False


def _decode_result(result: Any) -> Any:
    """An ack's `result` with its records typed: `order` → Order, `risk` → RiskView, `strategy` → StrategyView."""
    if not isinstance(result, dict):
        return result
    out = dict(result)
    if isinstance(out.get("order"), dict):
        out["order"] = Order.from_json(out["order"])
    if isinstance(out.get("risk"), dict):
        out["risk"] = RiskView.from_json(out["risk"])
    if isinstance(out.get("strategy"), dict):
        out["strategy"] = StrategyView.from_json(out["strategy"])
    return out


def _decimal_str(name: str, v: Any) -> str:
    if isinstance(v, bool):
        raise TypeError(f"{name}: not a number")
    if isinstance(v, float):
        v = repr(v)  # 0.1 → "0.1", not the binary expansion
    d = to_decimal(v)
    if not d.is_finite():
        raise ValueError(f"{name}: must be finite")
    return format(d, "f")


def new_client_order_id() -> str:
    """A fresh client_order_id: `py-` and 24 hex digits (the protocol allows 1–48 of `A-Z a-z 0-9 _ -`)."""
    return "py-" + uuid.uuid4().hex[:24]


# ---- the client -----------------------------------------------------------------------------------------------

TokenSource = Union[str, Callable[[], Union[str, Awaitable[str]]]]
OnClose = Callable[[Optional[int], str, bool], Any]


class _Connecting:
    """`Client.connect(...)`: await it for a connected client, or use it as `async with`."""

    def __init__(self, client: "Client"):
        self._client = client

    def __await__(self):
        return self._open().__await__()

    async def _open(self) -> "Client":
        await self._client._start()
        return self._client

    async def __aenter__(self) -> "Client":
        return await self._open()

    async def __aexit__(self, *exc) -> None:
        await self._client.close()


class Client:
    """A connection to trellis's `/ws/v1/client` for one tenant.

    ```python
    async with Client.connect(url, api_key="trk_…") as client:
        await client.subscribe("fills", print)
        await client.place_order("EURUSD", "buy", "0.01")
    ```

    Reconnection (`reconnect=True`, the default): when the connection drops, the client connects again with
    exponential back-off (`backoff_initial` doubling up to `backoff_max` seconds, with jitter), resubscribes
    every channel (each sends a fresh snapshot) and re-sends the unanswered commands that are safe to repeat
    (`place_order` keeps its client_order_id, so it trades at most once). Close code 1008 (token expired or
    credential revoked) is final unless `token` is a callable that gives a fresh token; 4004 (tenant gone) is
    final. `on_close(code, reason, reconnecting)` is called at every close; when the client gives up, pending
    commands, streams and `wait_closed()` raise `Closed` (`TooFarBehind` for 4008, `CredentialExpired` for 1008,
    `TenantGone` for 4004).
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        api_key: Optional[str] = None,
        token: Optional[TokenSource] = None,
        tenant: Optional[str] = None,
        reconnect: bool = True,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        max_reconnect_attempts: Optional[int] = None,
        on_close: Optional[OnClose] = None,
        command_timeout: float = 30.0,
        command_retries: int = 5,
        open_timeout: float = 10.0,
        max_size: Optional[int] = 64 * 2**20,
    ):
        if api_key is not None and token is not None:
            raise ValueError("give api_key or token, not both")
        self.url = url
        self.api_key = api_key
        self.token = token
        self.tenant = tenant
        self.reconnect = reconnect
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_reconnect_attempts = max_reconnect_attempts
        self.on_close = on_close
        self.command_timeout = command_timeout
        self.command_retries = command_retries
        self.open_timeout = open_timeout
        self.max_size = max_size

        self.welcome: Optional[Welcome] = None
        #: Resubscriptions made because a channel showed a gap in its sequence numbers.
        self.resubscriptions = 0
        #: Successful reconnections after a drop.
        self.reconnects = 0
        #: (code, reason) of the last close seen, `None` before one.
        self.last_close: Optional[tuple] = None
        #: `error` frames the server sent without an id.
        self.errors: List[ErrorFrame] = []

        self._ws = None
        self._channels: Dict[str, _Channel] = {}
        self._pending: Dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._run_task: Optional[asyncio.Task] = None
        self._tasks: set = set()
        self._closing = False
        self._closed_exc: Optional[BaseException] = None
        self._done: Optional[asyncio.Future] = None

    # ---- connection ----

    @classmethod
    def connect(cls, url: str = DEFAULT_URL, *, api_key: Optional[str] = None, token: Optional[TokenSource] = None,
                tenant: Optional[str] = None, **options: Any) -> _Connecting:
        """Connects and waits for the welcome frame. `async with Client.connect(...) as client:` closes the client
        at the end of the block; `client = await Client.connect(...)` leaves that to `await client.close()`.
        `options` are those of `Client(...)` (`reconnect`, `on_close`, `backoff_initial`, …)."""
        return _Connecting(cls(url, api_key=api_key, token=token, tenant=tenant, **options))

    async def __aenter__(self) -> "Client":
        if self._run_task is None:
            await self._start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    def _url(self) -> str:
        if not self.tenant:
            return self.url
        parts = urlsplit(self.url)
        q = [(k, v) for k, v in parse_qsl(parts.query) if k != "tenant"] + [("tenant", self.tenant)]
        return urlunsplit(parts._replace(query=urlencode(q)))

    async def _headers(self) -> Dict[str, str]:
        headers = {}
        if self.api_key is not None:
            headers["X-API-Key"] = self.api_key
        if self.token is not None:
            tok = self.token() if callable(self.token) else self.token
            if inspect.isawaitable(tok):
                tok = await tok
            headers["Authorization"] = f"Bearer {tok}"
        return headers

    async def _dial(self):
        """Opens a WebSocket and reads the welcome frame."""
        try:
            ws = await ws_connect(self._url(), additional_headers=await self._headers(), open_timeout=self.open_timeout,
                                  max_size=self.max_size)
        except websockets.exceptions.InvalidStatus as e:
            resp = e.response
            body = resp.body.decode(errors="replace") if getattr(resp, "body", None) else ""
            raise HandshakeRefused(resp.status_code, body) from None
        try:
            first = await asyncio.wait_for(ws.recv(), self.open_timeout)
            frame = decode_frame(first)
            if not isinstance(frame, Welcome):
                raise ProtocolError(f"expected a welcome frame first, got {first[:200]!r}")
            if frame.protocol_version is not None and frame.protocol_version != PROTOCOL_VERSION:
                raise ProtocolError(f"protocol version {frame.protocol_version}, this client speaks {PROTOCOL_VERSION}")
        except BaseException:
            await ws.close()
            raise
        self.welcome = frame
        return ws

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._ws = await self._dial()
        self._run_task = loop.create_task(self._run(), name="trellis-client")

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def close(self) -> None:
        """Closes the connection (code 1000) and stops reconnecting; streams end, pending commands raise `Closed`."""
        if self._closing:
            if self._run_task:
                await asyncio.gather(self._run_task, return_exceptions=True)
            return
        self._closing = True
        ws = self._ws
        if ws is not None:
            await ws.close()
        if self._run_task is not None:
            self._run_task.cancel()
            await asyncio.gather(self._run_task, return_exceptions=True)
        self._finish(Closed(1000, "closed by the client"), clean=True)
        if self._tasks:  # handlers finish what they were given, briefly
            await asyncio.wait(list(self._tasks), timeout=1.0)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_closed(self) -> None:
        """Waits until the client is closed for good; raises `Closed` when that was not `close()`."""
        if self._done is None:
            return
        await asyncio.shield(self._done)

    def _spawn(self, coro, name: str = "") -> asyncio.Task:
        t = asyncio.get_running_loop().create_task(coro, name=name or None)
        self._tasks.add(t)
        t.add_done_callback(self._task_done)
        return t

    def _task_done(self, t: asyncio.Task) -> None:
        self._tasks.discard(t)
        if not t.cancelled() and t.exception() is not None and not isinstance(t.exception(), TrellisError):
            log.error("background task %s failed", t.get_name(), exc_info=t.exception())

    async def _notify_close(self, code: Optional[int], reason: str, reconnecting: bool) -> None:
        if self.on_close is None:
            return
        try:
            r = self.on_close(code, reason, reconnecting)
            if inspect.isawaitable(r):
                await r
        except Exception:
            log.exception("on_close callback failed")

    def _final_code(self, code: Optional[int]) -> bool:
        if code == 4004:
            return True
        if code == 1008:
            return not callable(self.token)  # a fixed token or key would be refused again
        return False

    async def _run(self) -> None:
        """Reads frames; after a drop, reconnects (with back-off) and resyncs, or gives up."""
        ws = self._ws
        try:
            while True:
                await self._read(ws)
                code, reason = _close_info(ws)
                self._ws = None
                self.last_close = (code, reason)
                if self._closing:
                    return
                reconnecting = self.reconnect and not self._final_code(code)
                log.warning("connection closed (%s %s)%s", code, reason, "; reconnecting" if reconnecting else "")
                if not reconnecting:
                    self._finish(Closed.for_code(code, reason))
                    await self._notify_close(code, reason, False)
                    return
                self._connection_lost(code, reason)
                await self._notify_close(code, reason, True)
                ws = await self._reconnect(code, reason)
                if ws is None:
                    return
                self._ws = ws
                self.reconnects += 1
                self._spawn(self._resync(), "trellis-client-resync")
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # a bug: do not leave callers waiting forever
            log.exception("trellis client stopped")
            self._finish(e)

    async def _reconnect(self, code: Optional[int], reason: str):
        delay = self.backoff_initial
        attempt = 0
        while not self._closing:
            attempt += 1
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, self.backoff_max)
            try:
                return await self._dial()
            except HandshakeRefused as e:
                if e.status in (401, 403, 404):
                    self._finish(e)
                    await self._notify_close(code, reason, False)
                    return None
                log.warning("reconnect attempt %d: %s", attempt, e)
            except (OSError, asyncio.TimeoutError, websockets.exceptions.WebSocketException, ProtocolError) as e:
                log.warning("reconnect attempt %d: %s", attempt, e)
            if self.max_reconnect_attempts is not None and attempt >= self.max_reconnect_attempts:
                self._finish(Closed.for_code(code, reason))
                await self._notify_close(code, reason, False)
                return None
        return None

    async def _read(self, ws) -> None:
        try:
            async for message in ws:
                try:
                    frame = decode_frame(message)
                except (ValueError, TypeError, ArithmeticError) as e:
                    log.warning("unreadable frame %r: %s", message[:200], e)
                    continue
                self._dispatch(frame)
        except websockets.exceptions.ConnectionClosed:
            pass

    def _dispatch(self, frame: Any) -> None:
        if isinstance(frame, (Snapshot, UpdateFrame)):
            ch = self._channels.get(frame.channel)
            if ch is None:
                return  # a channel given up
            res = ch.sequencer.feed(frame)
            if res.update is not None:
                for sink in list(ch.sinks):
                    sink.put(res.update)
            if res.resubscribe:
                self.resubscriptions += 1
                self._spawn(self._resubscribe(frame.channel), "trellis-client-resubscribe")
            return
        if isinstance(frame, (Ack, Refused, Pong, ErrorFrame)):
            fid = frame.id
            p = self._pending.get(fid) if fid is not None else None
            if p is None:
                if isinstance(frame, ErrorFrame):
                    log.warning("server error frame: %s %s", frame.code, frame.reason)
                    self.errors.append(frame)
                else:
                    log.debug("answer to no pending command: %r", frame)
                return
            if not p.future.done():
                p.future.set_result(frame)
            return
        if isinstance(frame, Welcome):
            self.welcome = frame
            return
        log.debug("unknown frame ignored: %r", frame)

    def _connection_lost(self, code: Optional[int], reason: str) -> None:
        """Commands sent and unanswered: those safe to repeat wait for the next connection, the others fail."""
        for cid, p in list(self._pending.items()):
            if not p.sent:
                continue
            if p.retry:
                p.sent = False
            elif not p.future.done():
                p.future.set_exception(ConnectionLost(p.frame["op"], code, reason))
        for ch in self._channels.values():
            ch.sequencer.reset()

    def _finish(self, exc: BaseException, clean: bool = False) -> None:
        """The client is closed for good: fail what waits and end the streams."""
        if self._closed_exc is not None:
            return
        self._closed_exc = exc
        self._closing = True
        for p in list(self._pending.values()):
            if not p.future.done():
                p.future.set_exception(exc)
        for ch in self._channels.values():
            for sink in ch.sinks:
                sink.put(_CLOSE if clean else exc)
        if self._done is not None and not self._done.done():
            if clean:
                self._done.set_result(None)
            else:
                self._done.set_exception(exc)
                self._done.exception()  # retrieved: no "never retrieved" warning when nobody waits

    async def _resync(self) -> None:
        """After (re)connecting: subscribe every channel again and send the commands not sent yet."""
        # a subscribe made while disconnected is among the pending frames: not twice
        queued = {ch for p in self._pending.values() if not p.sent and p.frame["op"] == "subscribe"
                  for ch in p.frame["channels"]}
        await self._flush_pending()
        names = [n for n in self._channels if n not in queued]
        for i in range(0, len(names), MAX_CHANNELS_PER_OP):
            chunk = names[i:i + MAX_CHANNELS_PER_OP]
            try:
                await self._command("subscribe", {"channels": chunk})
            except Refused:
                for name in chunk:  # find the one refused; keep the others
                    try:
                        await self._command("subscribe", {"channels": [name]})
                    except Refused as e:
                        self._drop_channel(name, e)
            except (Closed, ConnectionLost, asyncio.TimeoutError):
                return

    async def _flush_pending(self) -> None:
        for p in list(self._pending.values()):
            if not p.sent and not p.future.done():
                await self._send(p)

    async def _resubscribe(self, channel: str) -> None:
        try:
            await self._command("unsubscribe", {"channels": [channel]})
            if channel in self._channels:
                await self._command("subscribe", {"channels": [channel]})
        except Refused as e:
            log.warning("%s: resubscribing refused: %s", channel, e)
            self._drop_channel(channel, e)
        except (Closed, ConnectionLost, asyncio.TimeoutError) as e:
            log.info("%s: resubscribing interrupted (%s); a reconnect resubscribes", channel, e)

    def _drop_channel(self, name: str, exc: BaseException) -> None:
        ch = self._channels.pop(name, None)
        if ch:
            for sink in ch.sinks:
                sink.put(exc)

    # ---- commands ----

    def _next_id(self, op: str) -> str:
        return f"{op[:4]}-{next(self._ids)}"

    async def _send(self, p: _Pending) -> None:
        ws = self._ws
        if ws is None or p.sent:
            return  # sent by _resync once connected
        p.sent = True
        try:
            await ws.send(dumps(p.frame))
        except websockets.exceptions.ConnectionClosed:
            # the reader sees the close too: a retryable frame goes out on the next connection
            if p.retry and self.reconnect:
                p.sent = False
            elif not p.future.done():
                code, reason = _close_info(ws)
                p.future.set_exception(ConnectionLost(p.frame["op"], code, reason))

    async def _command(self, op: str, fields: dict, *, frame_id: Optional[str] = None) -> Any:
        """Sends one command and waits for its answer: the ack's result, or raises `Refused`. A command refused
        with `unavailable` (an actor restarting) is sent again, the same frame, up to `command_retries` times."""
        if self._closed_exc is not None:
            raise self._closed_exc
        frame = {"op": op, "id": frame_id or self._next_id(op), **fields}
        retry = op in _RETRYABLE
        delay = self.backoff_initial
        for attempt in itertools.count():
            fut = asyncio.get_running_loop().create_future()
            p = _Pending(frame, fut, retry)
            self._pending[frame["id"]] = p
            try:
                await self._send(p)
                answer = await asyncio.wait_for(fut, self.command_timeout)
            finally:
                if self._pending.get(frame["id"]) is p:
                    del self._pending[frame["id"]]
            if isinstance(answer, Refused):
                if answer.code == "unavailable" and attempt < self.command_retries:
                    log.info("%s %s: unavailable (%s); retrying", op, frame["id"], answer.reason)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.backoff_max)
                    continue
                raise Refused(answer.code, answer.reason, op=op, id=frame["id"])
            if isinstance(answer, ErrorFrame):
                raise ServerError(answer.code, answer.reason)
            if isinstance(answer, Pong):
                return answer
            return _decode_result(answer.result)
        raise AssertionError("unreachable")

    async def place_order(self, symbol: str, side: str, volume: Union[str, int, float, Decimal], *,
                          kind: str = "market", price: Union[str, int, float, Decimal, None] = None,
                          account: Optional[int] = None, client_order_id: Optional[str] = None) -> dict:
        """Places a manual order: `{"order": Order, "duplicate": bool}`, or raises `Refused` (`risk_rejected`,
        `unknown_symbol`, `no_session`, …). Without `client_order_id` a unique one is made; either way every
        retry sends the same id, so the order is placed at most once (the server answers a repeat with the
        existing order and `duplicate: True`)."""
        if side not in ("buy", "sell"):
            raise ValueError("side: buy or sell")
        if kind not in ("market", "limit", "stop"):
            raise ValueError("kind: market, limit or stop")
        if kind == "market" and price is not None:
            raise ValueError("price: not for a market order")
        if kind != "market" and price is None:
            raise ValueError(f"price: required for a {kind} order")
        fields: Dict[str, Any] = {
            "client_order_id": client_order_id or new_client_order_id(),
            "symbol": symbol,
            "side": side,
            "volume": _decimal_str("volume", volume),
            "kind": kind,
        }
        if price is not None:
            fields["price"] = _decimal_str("price", price)
        if account is not None:
            fields["account"] = int(account)
        return await self._command("place_order", fields)

    async def cancel_order(self, client_order_id: str) -> dict:
        """Cancels a pending order placed with `place_order`: `{"order": Order}`, or raises `Refused`
        (`unknown_order`, `not_cancellable`)."""
        return await self._command("cancel_order", {"client_order_id": client_order_id})

    async def flatten(self, reason: Optional[str] = None) -> dict:
        """Closes every open position: `{"orders": n}`, the closing orders sent."""
        return await self._command("flatten", {} if reason is None else {"reason": reason})

    async def kill_switch(self, on: bool, *, reason: Optional[str] = None, flatten: bool = False) -> dict:
        """Turns the tenant's kill switch on or off (`flatten=True`: close every position too):
        `{"risk": RiskView}`."""
        fields: Dict[str, Any] = {"on": bool(on), "flatten": bool(flatten)}
        if reason is not None:
            fields["reason"] = reason
        return await self._command("kill_switch", fields)

    async def strategy_start(self, strategy: str) -> dict:
        """Starts a strategy: `{"strategy": StrategyView}`, or raises `Refused` (`unknown_strategy`)."""
        return await self._command("strategy_start", {"strategy": strategy})

    async def strategy_stop(self, strategy: str) -> dict:
        """Stops a strategy: `{"strategy": StrategyView}`, or raises `Refused` (`unknown_strategy`)."""
        return await self._command("strategy_stop", {"strategy": strategy})

    async def ping(self) -> float:
        """Round trip to the server, in seconds."""
        t0 = time.perf_counter()
        await self._command("ping", {})
        return time.perf_counter() - t0

    # ---- subscriptions ----

    def _new_sink(self, handler, snapshots: bool) -> _Sink:
        sink = _Sink(handler, snapshots)
        if handler is not None:
            sink.task = self._spawn(self._drain(sink), "trellis-client-handler")
        return sink

    async def _drain(self, sink: _Sink) -> None:
        while True:
            item = await sink.queue.get()
            if item is _CLOSE or isinstance(item, BaseException):
                return
            try:
                r = sink.handler(item)
                if inspect.isawaitable(r):
                    await r
            except Exception:
                log.exception("handler of %s failed", item.channel)

    async def _add_sink(self, channels: List[str], sink: _Sink) -> None:
        if self._closed_exc is not None:
            raise self._closed_exc
        new = []
        for name in channels:
            ch = self._channels.get(name)
            if ch is None:
                ch = self._channels[name] = _Channel(name)
                new.append(name)
            elif ch.sequencer.synced:
                seq = ch.sequencer
                sink.put(Update(name, seq.seq, True, seq.state.snapshot_data()))
            ch.sinks.append(sink)
        if not new:
            return
        try:
            for i in range(0, len(new), MAX_CHANNELS_PER_OP):
                await self._command("subscribe", {"channels": new[i:i + MAX_CHANNELS_PER_OP]})
        except BaseException:
            for name in channels:
                ch = self._channels.get(name)
                if ch is not None:
                    ch.sinks = [s for s in ch.sinks if s is not sink]
                    if not ch.sinks and name in new:
                        del self._channels[name]
            if sink.task:
                sink.task.cancel()
            raise

    async def _remove_sink(self, channels: List[str], sink: _Sink) -> None:
        gone = []
        for name in channels:
            ch = self._channels.get(name)
            if ch is None:
                continue
            ch.sinks = [s for s in ch.sinks if s is not sink]
            if not ch.sinks:
                del self._channels[name]
                gone.append(name)
        sink.put(_CLOSE)
        if gone and self._closed_exc is None and self._ws is not None:
            try:
                await self._command("unsubscribe", {"channels": gone})
            except (Refused, Closed, ConnectionLost, asyncio.TimeoutError) as e:
                log.debug("unsubscribe %s: %s", gone, e)

    async def subscribe(self, channels: Union[str, Iterable[str]],
                        handler: Optional[Callable[[Update], Any]] = None, *, snapshots: bool = True) -> Subscription:
        """Subscribes to one channel or several (`"fills"`, `["orders", "positions"]`, `"ticks:EURUSD"`,
        `"bars:EURUSD:M1"`) and returns once the server acknowledged; raises `Refused` (`unknown_channel`,
        `forbidden`, `too_many_subscriptions`). `handler(update)` (plain or async) is called, in order, with each
        channel's snapshot and then its updates (`Update`; `snapshots=False` skips the snapshots). Without a
        handler the channel only feeds `client.state(channel)`."""
        names = [channels] if isinstance(channels, str) else list(channels)
        if not names:
            raise ValueError("channels: at least one")
        sink = self._new_sink(handler, snapshots)
        await self._add_sink(names, sink)
        return Subscription(self, names, sink)

    async def stream(self, channels: Union[str, Iterable[str]], *, snapshots: bool = True) -> AsyncIterator[Update]:
        """`async for update in client.stream("fills"):` — the channel's snapshot, then its updates, then a new
        snapshot after a gap or a reconnection. Ends when the client is closed; raises `Closed` when the client
        gave up (e.g. `TooFarBehind` with reconnection off) and `Refused` when the subscription was refused."""
        names = [channels] if isinstance(channels, str) else list(channels)
        sink = self._new_sink(None, snapshots)
        await self._add_sink(names, sink)
        try:
            while True:
                item = await sink.queue.get()
                if item is _CLOSE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._closed_exc is None:
                await self._remove_sink(names, sink)

    def state(self, channel: str) -> Any:
        """The channel's current state from its snapshot and updates: for `orders`, `fills`, `positions`,
        `strategies`, `supervision` and `bars:…` a dict key → record (orders by client_order_id, fills by
        (account, ticket), positions by (account, symbol), strategies by id); for the others the latest data
        (`Tick`, `Pnl`, `RiskView`). `None` when the channel is not subscribed or has no snapshot yet."""
        ch = self._channels.get(channel)
        if ch is None or not ch.sequencer.synced:
            return None
        return ch.sequencer.state.value

    @property
    def subscriptions(self) -> List[str]:
        return list(self._channels)


def _close_info(ws) -> tuple:
    code = getattr(ws, "close_code", None)
    reason = getattr(ws, "close_reason", None)
    if code is None:
        proto = getattr(ws, "protocol", None)
        code = getattr(proto, "close_code", None)
        reason = getattr(proto, "close_reason", reason)
    return code, reason or ""
