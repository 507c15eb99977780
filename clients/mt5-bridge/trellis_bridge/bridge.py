"""The bridge: one WebSocket session to trellis at a time, reconnecting with back-off and resuming by
sequence number, driving the terminal through the `MetaTrader5` API.

Exactly once: an `order_request` is looked up in the journal first. A `client_order_id` already answered is
answered again from the journal; one left "sending" by a crash between `order_send` and the report is
reconciled against the terminal's history (deals and orders carrying its comment and magic) and only sent
when the broker has no trace of it.

Cancels: a `cancel_request` removes a pending (limit/stop) order with TRADE_ACTION_REMOVE and is answered with
a `cancel_result` (never an `order_result`, which is the order's own). The ticket is the request's `order`, else
the one the journal recorded for the client_order_id, else the pending order at the terminal carrying its comment
(and magic); with none, the answer is 10013 INVALID and nothing is sent. The terminal is asked first: an order that
no longer waits is answered from its order history (removed: DONE; filled meanwhile: 10013 INVALID), only a
waiting one is removed with `order_send`, whose retcode and comment are the answer. Removals are journaled like orders
("removing", then "done"): a repeated cancel of a removed order is answered DONE again without another
`order_send`, and one left "removing" by a crash is settled from the terminal's order history.

Restarts of trellis (protocol 2): trellis numbers its frames from 1 again under a new `welcome.epoch`, so the
bridge keeps the epoch its processed `seq` belongs to and forgets that `seq` when the epoch changes; and it
answers trellis's `history_request` with the terminal's deals and positions, which is how trellis books what
it missed while it was down.

Bars (protocol 3): trellis asks for the terminal's bars of a symbol and timeframe over a range of open times
(`bars_request`, to fill the bars it missed while it was down) and the bridge answers from `copy_rates_range`, in
`bars` pages of at most `MAX_BARS_PER_FRAME` bars (the newest `MAX_BARS_PER_ANSWER` of the range at most). The last
bar MT5 returns is the one still forming when no tick of a later period has come yet (the symbol's last tick is
inside its period): trellis closes a bar on the first tick of the next period, so such a bar is sent as `forming`,
never as complete. A failed read is answered with the terminal's `last_error()`. Bars are plain frames like ticks:
lost with a link, they are asked again, never re-sent.

Several trellis nodes (docs/cluster.md): each tenant is run by one node at a time, so the bridge is given every
node's URL and fails over between them. A node that does not own the key's tenant answers `hello` with a
`redirect` to the owner's URL (followed at once, without back-off, even when that URL is not in the list: nodes
advertise their own addresses); more than `MAX_REDIRECTS` of them in a row without a `welcome` is a loop (nodes
disagreeing during a hand-over), so the bridge backs off and tries the next URL of its list instead. While no node
owns the tenant (a failover in progress) the answer is a `tenant_unavailable` error: retried with back-off like
an unreachable node. A link that fails goes to the next URL, round-robin. A node that is frozen (SIGSTOP, a hung
host) keeps its TCP connection open and answers nothing, so the closed link never shows; trellis sends heartbeats
every second, so `silence_timeout` seconds without any frame means the node is gone: the bridge drops the link
itself and goes on to the next URL. The new owner is just a new trellis epoch, which the resume above covers.
"""

import asyncio
import json
import logging
import time
from datetime import datetime, timedelta, timezone

import websockets

from . import PROTOCOL_VERSION
from .journal import Journal

log = logging.getLogger("trellis_bridge")

# MT5 constants used here (the values of the MetaTrader5 package).
TRADE_ACTION_DEAL = 1
TRADE_ACTION_PENDING = 5
TRADE_ACTION_REMOVE = 8
RETCODE_DONE = 10009
RETCODE_PLACED = 10008
RETCODE_ERROR = 10011
RETCODE_INVALID = 10013
ORDER_STATE_CANCELED = 2
SYMBOL_FILLING_FOK = 1
SYMBOL_FILLING_IOC = 2
ORDER_FILLING_FOK, ORDER_FILLING_IOC, ORDER_FILLING_RETURN = 0, 1, 2
COPY_TICKS_ALL = -1
DEAL_TYPE_BUY, DEAL_TYPE_SELL = 0, 1

# Protocol timeframes: the MT5 constant's name, its value in the MetaTrader5 package (used when the module lacks
# the name), and the period in ms.
TIMEFRAMES = {"M1": ("TIMEFRAME_M1", 1, 60_000), "M5": ("TIMEFRAME_M5", 5, 300_000),
              "M15": ("TIMEFRAME_M15", 15, 900_000), "H1": ("TIMEFRAME_H1", 16385, 3_600_000),
              "H4": ("TIMEFRAME_H4", 16388, 14_400_000), "D1": ("TIMEFRAME_D1", 16408, 86_400_000)}
# A `bars` frame carries at most this many bars (the widest rows stay inside trellis's 64 KiB frames); an answer at
# most MAX_BARS_PER_ANSWER, the newest of the range.
MAX_BARS_PER_FRAME = 250
MAX_BARS_PER_ANSWER = 50_000
LATEST_S = 32_503_680_000  # 3000-01-01

# Reads of positions, deals, positions for one history answer before giving up on a quiet moment.
HISTORY_READS = 3

FATAL_CODES = {"bad_api_key", "unsupported_version", "hello_required"}

# Redirects followed in a row without a `welcome` before the bridge takes it for a loop and backs off.
MAX_REDIRECTS = 5


class FatalError(Exception):
    """A problem retrying cannot fix: wrong key, protocol mismatch, a terminal that won't initialise."""


class Redirected(Exception):
    """trellis answered `hello` with `redirect`: the tenant is owned by the node at `url`."""

    def __init__(self, url: str, node, reason):
        super().__init__(f"redirected to {url} (node {node}): {reason}")
        self.url = url


class Refused(Exception):
    """trellis answered `hello` with an error retrying may fix (e.g. `tenant_unavailable` during a failover)."""


class BarsUnavailable(Exception):
    """The terminal cannot give the bars asked for (its error goes back to trellis in the `bars` answer)."""


class Silent(Exception):
    """Nothing came from trellis for `silence_timeout` seconds: a frozen node keeps its socket open."""


def ws_url(url: str) -> str:
    """A node URL as a WebSocket URL: `http(s)://` (how nodes advertise themselves) becomes `ws(s)://`."""
    url = url.strip()
    for plain, ws in (("http://", "ws://"), ("https://", "wss://")):
        if url.lower().startswith(plain):
            return ws + url[len(plain):]
    return url


def hang_up(ws) -> None:
    """Drops a connection at once: a closing handshake with a frozen node would wait for its close frame."""
    transport = getattr(ws, "transport", None)
    if transport is not None:
        transport.abort()


def field(row, name, default=None):
    """A field of an MT5 result: namedtuple attribute or numpy record item."""
    try:
        return getattr(row, name)
    except AttributeError:
        try:
            return row[name]
        except (KeyError, IndexError, TypeError, ValueError):
            return default


def now_ms() -> int:
    return int(time.time() * 1000)


def book(positions: list) -> list:
    """What a position snapshot says about the account's exposure, without the fields every tick moves
    (`price_current`, `profit`): two reads with the same book saw no trade in between."""
    return sorted((p["ticket"], p["identifier"], p["symbol"], p["type"], p["volume"], p["price_open"])
                  for p in positions)


class Bridge:
    def __init__(self, mt5, url, api_key, login, server, symbols, journal: Journal,
                 heartbeat_s=1.0, poll_s=0.05, connect_retries=10, silence_timeout=10.0):
        # `url`: one node's URL or a list of them, tried round-robin; `self.url` is the one in use.
        self.urls = [ws_url(u) for u in ([url] if isinstance(url, str) else url) if u and u.strip()]
        if not self.urls:
            raise ValueError("no trellis URL")
        self.url_index = 0
        self.url = self.urls[0]
        self.mt5, self.api_key = mt5, api_key
        self.login, self.server, self.symbols = login, server, symbols
        self.journal = journal
        self.heartbeat_s, self.poll_s, self.connect_retries = heartbeat_s, poll_s, connect_retries
        self.silence_timeout = silence_timeout
        self.last_received = time.monotonic()
        self.welcomed = False
        # Sequence numbers never go backwards, even across a restart that lost the last few.
        self.out_seq = max(journal.get("out_seq"), now_ms() * 1000)
        self.in_seq = journal.get("in_seq")
        self.epoch = journal.get("epoch")
        self.last_tick = {}
        self.last_tick_msc = None
        self.ws = None
        self.lock = asyncio.Lock()

    # -- sending ---------------------------------------------------------------------------------------
    def _seq(self) -> int:
        self.out_seq += 1
        return self.out_seq

    async def _send(self, frame: dict) -> None:
        async with self.lock:
            frame["seq"] = self._seq()
            await self.ws.send(json.dumps(frame))

    async def _send_reliable(self, frame: dict) -> None:
        """Sends a frame that must arrive: kept in the journal's outbox until trellis acknowledges it."""
        async with self.lock:
            frame["seq"] = self._seq()
            text = json.dumps(frame)
            self.journal.keep(frame["seq"], text)
            self.journal.put("out_seq", self.out_seq)
            await self.ws.send(text)

    # -- the connection loop ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Sessions one after another, until a fatal error.

        `attempts` counts connections that failed in a row (reset by reaching any node); `backoff` grows until a
        session is welcomed, so a node that keeps refusing, or a redirect loop, is not hammered either.
        """
        attempts, backoff, redirects = 0, 0.5, 0
        while True:
            url, self.welcomed = self.url, False
            try:
                async with websockets.connect(url, max_size=2**20, open_timeout=5) as ws:
                    attempts = 0
                    await self._session(ws)
            except FatalError:
                raise
            except Redirected as r:
                if self.welcomed:  # the owner changed during a session: a fresh start
                    backoff, redirects = 0.5, 0
                redirects += 1
                if redirects <= MAX_REDIRECTS:
                    log.info("trellis at %s: %s", url, r)
                    self._go_to(ws_url(r.url))
                    continue  # at once: a redirect is an answer, not a failure
                log.warning("%d redirects in a row without a welcome (last from %s: %s): backing off, next URL",
                            redirects, url, r)
                redirects = 0
                self._next_url()
            except Refused as e:
                log.warning("trellis at %s refused the bridge for now (%s); retrying", url, e)
                self._next_url()
                # A tenant moving between nodes is owned again within a lease: retry at least every 2 s.
                backoff = min(backoff, 1.0)
            except Silent as e:
                log.warning("trellis at %s is silent (%s); reconnecting", url, e)
                self._next_url()
            except websockets.exceptions.ConnectionClosed as e:
                log.warning("link to trellis at %s dropped (%s); reconnecting", url, e)
                self._next_url()
            except (OSError, asyncio.TimeoutError, websockets.exceptions.InvalidHandshake) as e:
                attempts += 1
                log.warning("cannot reach trellis at %s (attempt %d/%d): %s", url, attempts,
                            self.connect_retries, e)
                if attempts >= self.connect_retries:
                    raise FatalError(f"could not connect to trellis at {' or '.join(self.urls)} after {attempts} "
                                     f"attempts: {e}")
                self._next_url()
            if self.welcomed:
                backoff, redirects = 0.5, 0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _go_to(self, url: str) -> None:
        """Makes `url` (a redirect's) the current URL; when it is in the list, round-robin goes on from there."""
        self.url = url
        if url in self.urls:
            self.url_index = self.urls.index(url)

    def _next_url(self) -> None:
        """The next URL of the list after the last one of the list used (round-robin)."""
        self.url_index = (self.url_index + 1) % len(self.urls)
        self.url = self.urls[self.url_index]

    async def _session(self, ws) -> None:
        self.ws = ws
        await self._send({"type": "hello", "api_key": self.api_key, "login": self.login, "server": self.server,
                          "build": 0, "protocol_version": PROTOCOL_VERSION, "last_seq_received": self.in_seq,
                          "epoch": self.epoch})
        try:
            first = json.loads(await asyncio.wait_for(ws.recv(), self.silence_timeout))
        except asyncio.TimeoutError:
            hang_up(ws)
            raise Silent(f"no answer to hello in {self.silence_timeout:g}s") from None
        self.last_received = time.monotonic()
        if first.get("type") == "error":
            message = f"trellis refused the bridge: {first.get('code')}: {first.get('message')}"
            if first.get("code") in FATAL_CODES:
                raise FatalError(message)
            raise Refused(f"{first.get('code')}: {first.get('message')}")
        if first.get("type") == "redirect":
            self._redirect(first)
        if first.get("type") != "welcome":
            raise FatalError(f"expected welcome, got {first.get('type')}")
        self.welcomed = True
        self._enter_epoch(int(first.get("epoch", 0)))
        resume_from = int(first.get("resume_from", 0))
        log.info("connected to trellis: session %s, epoch %d, resume from %d (%s)", first.get("session_id"),
                 self.epoch, resume_from, self.url)
        self.journal.acknowledge(resume_from)
        for text in self.journal.unacknowledged(resume_from):
            await ws.send(text)
        await self._send_snapshot(force=True)
        self.last_received = time.monotonic()  # frames that came during the re-sending wait unread, not missing
        tasks = [asyncio.create_task(c) for c in (self._reader(), self._ticks(), self._heartbeats(), self._watch(),
                                                  self._silence())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _redirect(frame: dict) -> None:
        """Raises `Redirected` for a `redirect` frame (a malformed one, without a URL, is refused for now)."""
        if not frame.get("url"):
            raise Refused(f"redirect without a url: {frame.get('reason')}")
        raise Redirected(str(frame["url"]), frame.get("node"), frame.get("reason"))

    async def _silence(self) -> None:
        """Ends the session when nothing at all came from trellis for `silence_timeout` seconds."""
        while True:
            quiet = time.monotonic() - self.last_received
            if quiet >= self.silence_timeout:
                hang_up(self.ws)
                raise Silent(f"nothing received for {quiet:.1f}s")
            await asyncio.sleep(self.silence_timeout - quiet)

    def _enter_epoch(self, epoch: int) -> None:
        """Adopts trellis's epoch from `welcome`, before any further frame is read.

        `in_seq` only means something within the epoch it was counted in: a restarted trellis numbers from 1
        again, and its frames would all look like duplicates of the old ones. Orders stay protected across
        epochs by the client_order_id journal, not by sequence numbers.
        """
        if epoch == self.epoch:
            return
        log.info("trellis epoch %d (was %d): its sequence starts again, last trellis seq %d forgotten",
                 epoch, self.epoch, self.in_seq)
        self.journal.enter_epoch(epoch)
        self.epoch, self.in_seq = epoch, 0

    # -- frames from trellis ---------------------------------------------------------------------------
    async def _reader(self) -> None:
        async for text in self.ws:
            self.last_received = time.monotonic()
            frame = json.loads(text)
            seq = int(frame.get("seq", 0))
            if seq and seq <= self.in_seq:
                continue  # a duplicate from a resume
            kind = frame.get("type")
            if kind == "order_request":
                await self._execute(frame)
            elif kind == "cancel_request":
                await self._cancel(frame)
            elif kind == "history_request":
                await self._answer_history(frame)
            elif kind == "bars_request":
                await self._answer_bars(frame)
            elif kind == "heartbeat":
                self.journal.acknowledge(int(frame.get("ack", 0)))
            elif kind == "redirect":
                self._redirect(frame)  # the node gave the tenant up (a hand-over): go to the new owner
            elif kind == "error":
                log.warning("trellis error %s: %s", frame.get("code"), frame.get("message"))
                if frame.get("code") in FATAL_CODES:
                    raise FatalError(f"{frame.get('code')}: {frame.get('message')}")
            if seq:
                self.in_seq = seq
                self.journal.put("in_seq", seq)

    def _request(self, req: dict) -> dict:
        """The MT5 trade request for an `order_request`."""
        symbol = req["symbol"]
        action = int(req["action"])
        price = float(req.get("price") or 0)
        if action == TRADE_ACTION_DEAL and price == 0:
            tick = self.mt5.symbol_info_tick(symbol)
            price = field(tick, "ask") if int(req["order_type"]) == 0 else field(tick, "bid")
        request = {
            "action": action, "symbol": symbol, "volume": float(req["volume"]), "type": int(req["order_type"]),
            "price": price, "sl": float(req.get("sl") or 0), "tp": float(req.get("tp") or 0),
            "deviation": int(req.get("deviation") or 0), "magic": int(req.get("magic") or 0),
            "comment": str(req.get("comment") or req["client_order_id"])[:31],
            "type_filling": self._filling(symbol, int(req.get("type_filling", ORDER_FILLING_IOC))),
            "type_time": int(req.get("type_time") or 0),
        }
        if int(req.get("position") or 0):
            request["position"] = int(req["position"])
        return request

    def _filling(self, symbol: str, wanted: int) -> int:
        """A filling mode the symbol allows (10030 INVALID_FILL is the most common real rejection)."""
        info = self.mt5.symbol_info(symbol)
        modes = int(field(info, "filling_mode", 0) or 0)
        if wanted == ORDER_FILLING_FOK and modes & SYMBOL_FILLING_FOK:
            return ORDER_FILLING_FOK
        if wanted == ORDER_FILLING_IOC and modes & SYMBOL_FILLING_IOC:
            return ORDER_FILLING_IOC
        if modes & SYMBOL_FILLING_IOC:
            return ORDER_FILLING_IOC
        if modes & SYMBOL_FILLING_FOK:
            return ORDER_FILLING_FOK
        return ORDER_FILLING_RETURN

    async def _execute(self, req: dict) -> None:
        coid = req["client_order_id"]
        known = self.journal.order(coid)
        if known and known[0] == "done":
            log.info("order %s already executed: answering from the journal", coid)
            await self._report(coid, known[2])
            return
        if known and known[0] == "sending":
            found = self._reconcile(known[1])
            if found is not None:
                log.info("order %s was executed before a crash: reconciled from the terminal's history", coid)
                self.journal.mark_done(coid, found)
                await self._report(coid, found)
                return
            log.info("order %s has no trace at the broker: sending it", coid)
        request = self._request(req)
        self.journal.mark_sending(coid, request)
        check = self.mt5.order_check(request)
        if check is None or int(field(check, "retcode", 0)) not in (0, RETCODE_DONE):
            code = int(field(check, "retcode", RETCODE_ERROR)) if check is not None else RETCODE_ERROR
            comment = field(check, "comment", "") if check is not None else str(self.mt5.last_error())
            result = {"retcode": code, "deal": 0, "order": 0, "volume": 0, "price": 0, "comment": comment}
            self.journal.mark_done(coid, result)
            await self._report(coid, result)
            return
        sent = self.mt5.order_send(request)
        if sent is None:
            # No answer proves nothing: keep it "sending" so a repeat reconciles instead of re-sending.
            await self._send_reliable({"type": "order_result", "client_order_id": coid, "retcode": RETCODE_ERROR,
                                       "comment": f"order_send returned nothing: {self.mt5.last_error()}"})
            return
        result = {name: field(sent, name, 0) for name in
                  ("retcode", "deal", "order", "volume", "price", "bid", "ask", "request_id", "retcode_external")}
        result["comment"] = field(sent, "comment", "") or ""
        self.journal.mark_done(coid, result)
        log.info("order %s: retcode %s, order %s, deal %s", coid, result["retcode"], result["order"], result["deal"])
        await self._report(coid, result)

    def _reconcile(self, request: dict):
        """The result of an order found in the terminal's history or open orders, by comment and magic."""
        frm, to = datetime(2000, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(days=1)
        for d in self.mt5.history_deals_get(frm, to) or ():
            if field(d, "comment") == request["comment"] and int(field(d, "magic", 0)) == request["magic"]:
                return {"retcode": RETCODE_DONE, "deal": field(d, "ticket"), "order": field(d, "order"),
                        "volume": field(d, "volume"), "price": field(d, "price"), "comment": "reconciled"}
        for o in self.mt5.orders_get() or ():
            if field(o, "comment") == request["comment"] and int(field(o, "magic", 0)) == request["magic"]:
                return {"retcode": RETCODE_PLACED, "deal": 0, "order": field(o, "ticket"),
                        "volume": field(o, "volume_initial"), "price": field(o, "price_open"), "comment": "reconciled"}
        return None

    async def _report(self, coid: str, result: dict) -> None:
        frame = {"type": "order_result", "client_order_id": coid}
        frame.update({k: v for k, v in result.items() if v is not None})
        await self._send_reliable(frame)
        order = int(result.get("order") or 0)
        if order:
            for d in self.mt5.history_deals_get(ticket=order) or ():
                await self._send_deal(d)

    # -- cancels -------------------------------------------------------------------------------------------
    async def _cancel(self, req: dict) -> None:
        """Answers a `cancel_request`: removes the pending order (TRADE_ACTION_REMOVE) once, reports `cancel_result`."""
        coid = req["client_order_id"]
        known = self.journal.cancel(coid)
        if known and known[0] == "done":
            log.info("cancel of %s already done: answering from the journal", coid)
            await self._report_cancel(coid, known[2])
            return
        if known:
            ticket, why = known[1], ""  # "removing" when a crash came between order_send and the report
        else:
            ticket, why = self._ticket_of(coid, int(req.get("order") or 0))
        if not ticket:
            log.info("cancel of %s: %s", coid, why)
            await self._report_cancel(coid, {"retcode": RETCODE_INVALID, "order": 0, "comment": why})
            return
        settled = self._settled(ticket)
        if settled is not None:
            log.info("cancel of %s: order %s is no longer pending at the terminal: %s", coid, ticket,
                     settled["comment"])
            if settled["retcode"] == RETCODE_DONE:
                self.journal.mark_removed(coid, ticket, settled)
            else:
                self.journal.forget_cancel(coid)
            await self._report_cancel(coid, settled)
            return
        self.journal.mark_removing(coid, ticket)
        sent = self.mt5.order_send({"action": TRADE_ACTION_REMOVE, "order": ticket})
        if sent is None:
            # No answer proves nothing: keep it "removing" so a repeat asks the terminal instead of guessing.
            await self._report_cancel(coid, {"retcode": RETCODE_ERROR, "order": ticket,
                                             "comment": f"order_send returned nothing: {self.mt5.last_error()}"})
            return
        result = {"retcode": int(field(sent, "retcode", RETCODE_ERROR)), "order": ticket,
                  "comment": field(sent, "comment", "") or ""}
        if result["retcode"] == RETCODE_DONE:
            self.journal.mark_removed(coid, ticket, result)
        else:
            self.journal.forget_cancel(coid)
        log.info("cancel of %s: retcode %s, order %s", coid, result["retcode"], ticket)
        await self._report_cancel(coid, result)

    def _ticket_of(self, coid: str, order: int):
        """(ticket, "") of the order a cancel is for, or (0, why not): the request's ticket, the journal's, or the
        one pending order at the terminal with the order's comment (and magic, when the journal knows it)."""
        if order:
            return order, ""
        known = self.journal.order(coid)
        request, result = (known[1], known[2]) if known else ({}, None)
        if result and int(result.get("order") or 0):
            return int(result["order"]), ""
        comment = str(request.get("comment") or coid)[:31]
        magic = request.get("magic")
        found = [int(field(o, "ticket")) for o in self.mt5.orders_get() or ()
                 if field(o, "comment") == comment and (magic is None or int(field(o, "magic", 0)) == int(magic))]
        if len(found) == 1:
            return found[0], ""
        if found:
            return 0, f"{len(found)} pending orders carry the comment {comment!r}: none removed"
        return 0, "no such pending order: no ticket in the request or the journal, none at the terminal"

    def _settled(self, ticket: int):
        """The answer for an order that no longer waits at the terminal, from its order history (CANCELED: DONE,
        it was removed; filled or expired: not removed), or None while it is pending or the history has no word."""
        if self.mt5.orders_get(ticket=ticket):
            return None
        for o in self.mt5.history_orders_get(ticket=ticket) or ():
            if int(field(o, "ticket", 0)) != ticket:
                continue
            state = int(field(o, "state", -1))
            if state == ORDER_STATE_CANCELED:
                return {"retcode": RETCODE_DONE, "order": ticket, "comment": "removed"}
            return {"retcode": RETCODE_INVALID, "order": ticket,
                    "comment": f"no longer a pending order (order state {state})"}
        return None

    async def _report_cancel(self, coid: str, result: dict) -> None:
        await self._send_reliable({"type": "cancel_result", "client_order_id": coid,
                                   "retcode": int(result["retcode"]), "order": int(result.get("order") or 0),
                                   "comment": result.get("comment") or ""})

    async def _send_deal(self, d) -> None:
        """Reports a deal seen live, once: the journal remembers which tickets went out."""
        if not self.journal.deal_sent(int(field(d, "ticket"))):
            return
        if int(field(d, "type", 0)) not in (DEAL_TYPE_BUY, DEAL_TYPE_SELL):
            return  # balance and other non-trade deals
        await self._send_reliable(self._deal_frame(d))

    def _deal_frame(self, d) -> dict:
        """The `deal` frame of an MT5 deal, with the client_order_id of its order when the journal knows it."""
        order = int(field(d, "order", 0))
        frame = {"type": "deal", "ticket": int(field(d, "ticket")), "order": order,
                 "position_id": int(field(d, "position_id", 0)), "symbol": field(d, "symbol"),
                 "deal_type": int(field(d, "type", 0)), "entry": int(field(d, "entry", 0)),
                 "volume": field(d, "volume"), "price": field(d, "price"), "commission": field(d, "commission", 0),
                 "swap": field(d, "swap", 0), "profit": field(d, "profit", 0), "fee": field(d, "fee", 0),
                 "magic": int(field(d, "magic", 0)), "comment": field(d, "comment", ""),
                 "time_msc": int(field(d, "time_msc", 0))}
        coid = self.journal.client_order_id_of(order)
        if coid:
            frame["client_order_id"] = coid
        return frame

    async def _answer_history(self, req: dict) -> None:
        """Answers a `history_request`: every trade deal from `from_msc` on, then `history_end` with the positions.

        Deals sent before are sent again: trellis asks because it may have lost them (a restart before it stored
        them), and it books each ticket once. The positions must agree with the deals, or trellis would adopt
        a trade as a difference and then book its deal too; so positions are read before and after the deals,
        and the reads start over when a trade happened in between. When the account never keeps still for
        `HISTORY_READS` reads, the last read is sent anyway: an unanswered request would stop trellis from
        reconciling this account at all, while a wrong difference is corrected by the next reconciliation.
        """
        from_msc = int(req.get("from_msc", 0))
        for attempt in range(1, HISTORY_READS + 1):
            before = self._positions()
            deals = self._deals_since(from_msc)
            positions = self._positions()
            if book(before) == book(positions):
                break
            log.info("positions changed while reading history (read %d of %d)", attempt, HISTORY_READS)
        else:
            log.warning("positions kept changing while reading history: answering with the last read")
        for d in deals:
            self.journal.deal_sent(int(field(d, "ticket")))
            await self._send_reliable(self._deal_frame(d))
        await self._send_reliable({"type": "history_end", "request_id": int(req["request_id"]), "deals": len(deals),
                                   "positions": positions})
        log.info("history request %s (deals from %d, after ticket %s): %d deals, %d positions", req["request_id"],
                 from_msc, req.get("after_ticket"), len(deals), len(positions))

    async def _answer_bars(self, req: dict) -> None:
        """Answers a `bars_request` with the terminal's bars whose open time is in [from_msc, to_msc], in pages."""
        request_id, symbol, timeframe = int(req["request_id"]), str(req["symbol"]), str(req["timeframe"])
        page = {"type": "bars", "request_id": request_id, "symbol": symbol, "timeframe": timeframe}
        try:
            bars, forming = self._rates(symbol, timeframe, int(req["from_msc"]), int(req["to_msc"]))
            count = req.get("count")
            if count is not None and int(count) < len(bars):
                # The newest `count` of the range: a series trellis lacks asks from the beginning of time.
                bars = bars[len(bars) - int(count):]
        except BarsUnavailable as e:
            log.warning("bars request %s (%s %s): %s", request_id, symbol, timeframe, e)
            await self._send(dict(page, bars=[], error=str(e)))
            return
        pages = [bars[i:i + MAX_BARS_PER_FRAME] for i in range(0, len(bars), MAX_BARS_PER_FRAME)] or [[]]
        for i, rows in enumerate(pages):
            frame = dict(page, bars=rows, more=i < len(pages) - 1)
            if i == len(pages) - 1 and forming is not None:
                frame["forming"] = forming
            await self._send(frame)
        log.info("bars request %s (%s %s from %s to %s): %d bars%s in %d frames", request_id, symbol, timeframe,
                 req["from_msc"], req["to_msc"], len(bars), " and the forming one" if forming else "", len(pages))

    def _rates(self, symbol: str, timeframe: str, from_msc: int, to_msc: int):
        """(complete bars, forming bar or None) of `copy_rates_range`, as protocol rows, open times exactly in range.

        MT5 selects by whole seconds: the window is widened to them and the exact bounds applied here.
        """
        if timeframe not in TIMEFRAMES:
            raise BarsUnavailable(f"no timeframe {timeframe!r}: one of {', '.join(TIMEFRAMES)}")
        name, value, period = TIMEFRAMES[timeframe]
        if to_msc < from_msc:
            return [], None
        self.mt5.symbol_select(symbol, True)
        # Seconds, clamped to what a datetime holds (trellis may send 2^53 for "up to now").
        frm = datetime.fromtimestamp(min(max(from_msc, 0) // 1000, LATEST_S), timezone.utc)
        to = datetime.fromtimestamp(min(-(-max(to_msc, 0) // 1000), LATEST_S), timezone.utc)
        rates = self.mt5.copy_rates_range(symbol, getattr(self.mt5, name, value), frm, to)
        if rates is None:
            raise BarsUnavailable(f"copy_rates_range({symbol}, {timeframe}) failed: {self.mt5.last_error()}")
        rows = [{"time_msc": int(field(r, "time")) * 1000, "open": float(field(r, "open")),
                 "high": float(field(r, "high")), "low": float(field(r, "low")), "close": float(field(r, "close")),
                 "tick_volume": int(field(r, "tick_volume", 0))} for r in rates]
        rows = sorted((r for r in rows if from_msc <= r["time_msc"] <= to_msc), key=lambda r: r["time_msc"])
        forming = None
        if rows:
            tick = self.mt5.symbol_info_tick(symbol)
            last_tick = int(field(tick, "time_msc", 0) or 0) if tick is not None else 0
            # No tick of a later period yet (or no tick known): the bar may still change, so it is not complete.
            if last_tick < rows[-1]["time_msc"] + period:
                forming = rows.pop()
        return rows[-MAX_BARS_PER_ANSWER:], forming

    def _deals_since(self, from_msc: int) -> list:
        """The account's trade deals with `time_msc` >= `from_msc`, oldest first.

        MT5 selects history by whole seconds, and terminals disagree on the time zone of a datetime, so the
        window opens a day early and closes a day late and the exact bound is applied here. A `from_msc`
        beyond that window (trellis sends 2^53 - 1 when it has booked no deal yet) asks for no deals.
        """
        to = datetime.now(timezone.utc) + timedelta(days=1)
        if from_msc > to.timestamp() * 1000:
            return []
        frm = datetime.fromtimestamp(max(from_msc // 1000 - 86_400, 0), timezone.utc)
        deals = [d for d in self.mt5.history_deals_get(frm, to) or ()
                 if int(field(d, "type", -1)) in (DEAL_TYPE_BUY, DEAL_TYPE_SELL)
                 and int(field(d, "time_msc", 0)) >= from_msc]
        return sorted(deals, key=lambda d: (int(field(d, "time_msc", 0)), int(field(d, "ticket"))))

    # -- what the terminal sees ------------------------------------------------------------------------
    async def _ticks(self) -> None:
        """Streams new ticks of every symbol, without duplicates, filling gaps from the terminal's history."""
        for s in self.symbols:
            self.mt5.symbol_select(s, True)
        while True:
            for s in self.symbols:
                last = self.last_tick.get(s)
                if last is None:
                    t = self.mt5.symbol_info_tick(s)
                    rows = [t] if t is not None else []
                else:
                    rows = self.mt5.copy_ticks_from(s, datetime.fromtimestamp(last / 1000, timezone.utc), 10_000,
                                                    COPY_TICKS_ALL)
                    rows = [] if rows is None else rows
                for t in rows:
                    t_msc = int(field(t, "time_msc"))
                    if last is not None and t_msc <= last:
                        continue
                    await self._send({"type": "tick", "symbol": s, "time_msc": t_msc, "bid": float(field(t, "bid")),
                                      "ask": float(field(t, "ask")), "flags": int(field(t, "flags", 0) or 0)})
                    last = t_msc
                    self.last_tick_msc = max(self.last_tick_msc or 0, t_msc)
                if last is not None:
                    self.last_tick[s] = last
            await asyncio.sleep(self.poll_s)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self._send({"type": "heartbeat", "time_msc": now_ms(), "last_tick_msc": self.last_tick_msc,
                              "ack": self.in_seq})
            self.journal.put("out_seq", self.out_seq)
            await self._send_snapshot(force=False)

    async def _watch(self) -> None:
        """Deals as they happen (pending orders filling, trades made by hand at the terminal)."""
        while True:
            await asyncio.sleep(0.5)
            frm = datetime.now(timezone.utc) - timedelta(days=1)
            for d in self.mt5.history_deals_get(frm, datetime.now(timezone.utc) + timedelta(days=1)) or ():
                await self._send_deal(d)

    _last_snapshot = None

    def _positions(self) -> list:
        """The terminal's open positions, in the shape of the `positions` and `history_end` frames."""
        return [{"ticket": int(field(p, "ticket")), "identifier": int(field(p, "identifier")),
                 "symbol": field(p, "symbol"), "type": int(field(p, "type")), "volume": field(p, "volume"),
                 "price_open": field(p, "price_open"), "price_current": field(p, "price_current"),
                 "profit": field(p, "profit"), "magic": int(field(p, "magic", 0)),
                 "time_msc": int(field(p, "time_msc", 0))} for p in (self.mt5.positions_get() or ())]

    async def _send_snapshot(self, force: bool) -> None:
        a = self.mt5.account_info()
        positions = self._positions()
        account = {"login": int(field(a, "login")), "currency": field(a, "currency"), "leverage": int(field(a, "leverage")),
                   "balance": field(a, "balance"), "equity": field(a, "equity"), "margin": field(a, "margin"),
                   "margin_free": field(a, "margin_free"), "profit": field(a, "profit"),
                   "margin_mode": int(field(a, "margin_mode", 0))}
        snapshot = (json.dumps(account, sort_keys=True), json.dumps(positions, sort_keys=True))
        if force or snapshot != self._last_snapshot:
            self._last_snapshot = snapshot
            await self._send_reliable(dict(account, type="account"))
            await self._send_reliable({"type": "positions", "positions": positions})
