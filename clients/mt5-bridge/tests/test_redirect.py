"""Several trellis nodes, without trellis: the bridge fails over along its URL list, follows a `redirect` to the
node that owns the tenant, retries `tenant_unavailable`, drops a node that went silent and does not spin in a
redirect loop. The nodes are small stand-in servers (the `websockets` library) on 127.0.0.1; the bridge is the
real one, in this process, on the fake terminal."""

import asyncio
import json
import socket
import time

from conftest import KEY, T0, Bridge
from trellis_bridge import PROTOCOL_VERSION
from trellis_bridge import bridge as core
from trellis_bridge.journal import Journal

import websockets

TEST_TIMEOUT = 8.0  # every test's asyncio part; pytest itself has no timeout plugin here
WELCOME, SILENT = "welcome", "silent"


def welcome(epoch: int) -> dict:
    return {"type": "welcome", "seq": 1, "session_id": "acme-5001-x", "epoch": epoch,
            "protocol_version": PROTOCOL_VERSION, "resume_from": 0, "heartbeat_interval_ms": 100,
            "symbols": ["EURUSD"]}


def redirect(url: str, node: str) -> dict:
    return {"type": "redirect", "seq": 0, "url": url, "node": node, "tenant": "acme",
            "reason": f"tenant `acme` is owned by node {node}"}


TENANT_UNAVAILABLE = {"type": "error", "seq": 0, "code": "tenant_unavailable",
                      "message": "tenant `acme` has no owner yet (failover in progress)", "fatal": True}


class Node:
    """A stand-in trellis node. Each connection is answered after its `hello` with the next of `answers` (the
    last one repeats): a frame (a redirect, an error), sent then the socket closed with 1000 as trellis does; or
    WELCOME, a session with a heartbeat every 0.1 s; or SILENT, a welcome and then a frozen node: nothing sent,
    nothing read (not even a close frame), the socket left open. Records what it receives and when each
    connection came."""

    def __init__(self, *answers, epoch=1_785_200_000_000_001):
        self.answers, self.epoch = list(answers), epoch
        self.connected_at = []  # time.monotonic() of each connection
        self.closed_at = []
        self.received = []  # (connection number, frame)
        self.frozen = []  # the SILENT connections, aborted at the end
        self.server = None
        self.url = None

    async def __aenter__(self):
        self.server = await websockets.serve(self._handle, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/ws/mt5"
        return self

    async def __aexit__(self, *exc):
        for ws in self.frozen:
            ws.transport.abort()
        self.server.close()
        await self.server.wait_closed()

    @property
    def connections(self) -> int:
        return len(self.connected_at)

    def frames(self, kind: str) -> list:
        return [f for _, f in self.received if f.get("type") == kind]

    async def _handle(self, ws, *_):
        n = self.connections
        self.connected_at.append(time.monotonic())
        answer = self.answers[min(n, len(self.answers) - 1)]
        beats = None
        try:
            self.received.append((n, json.loads(await ws.recv())))
            if isinstance(answer, dict):
                await ws.send(json.dumps(answer))
                await ws.close(1000)
                return
            await ws.send(json.dumps(welcome(self.epoch)))
            if answer == SILENT:
                self.frozen.append(ws)
                ws.transport.pause_reading()  # as if SIGSTOPped: the kernel keeps the connection, no one reads
                await ws.wait_closed()
                return
            beats = asyncio.create_task(self._heartbeats(ws))
            async for text in ws:
                self.received.append((n, json.loads(text)))
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            self.closed_at.append(time.monotonic())
            if beats:
                beats.cancel()

    @staticmethod
    async def _heartbeats(ws):
        seq = 1
        while True:
            await asyncio.sleep(0.1)
            seq += 1
            await ws.send(json.dumps({"type": "heartbeat", "seq": seq, "time_msc": core.now_ms(), "ack": 0}))


def dead_url() -> str:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"ws://127.0.0.1:{port}/ws/mt5"


def make_bridge(tmp_path, mt5, urls, **kwargs) -> core.Bridge:
    kwargs = dict(dict(heartbeat_s=0.1, poll_s=0.02, connect_retries=3), **kwargs)
    return core.Bridge(mt5, urls, KEY, 5001, "Fake-Server", ["EURUSD"], Journal(str(tmp_path / "journal.db")), **kwargs)


async def until(what, predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def run(scenario):
    """Runs `scenario(start)` within TEST_TIMEOUT; `start(bridge)` runs the bridge in the background until the end
    of the scenario, which checks that it is still running (nothing here is fatal)."""

    async def main():
        tasks = []

        def start(bridge):
            tasks.append(asyncio.create_task(bridge.run()))
            return tasks[-1]

        try:
            await asyncio.wait_for(scenario(start), TEST_TIMEOUT)
            for t in tasks:
                assert not t.done(), f"the bridge stopped: {t.exception() if not t.cancelled() else 'cancelled'}"
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def test_a_bridge_redirected_by_a_node_moves_at_once_to_the_owner_and_sends_it_its_snapshot_and_ticks(tmp_path, terminal):
    terminal.push_tick("EURUSD", T0, 1.1000, 1.1002)

    async def scenario(start):
        async with Node(WELCOME) as b:
            async with Node(redirect(b.url, "node-b")) as a:
                # connect_retries=1: a redirect counted as a failed attempt would end the bridge at once.
                bridge = make_bridge(tmp_path, terminal, [a.url], connect_retries=1)
                start(bridge)
                await until("the snapshot and a tick on node B",
                            lambda: b.frames("positions") and b.frames("tick"))
                assert a.connections == 1 and a.frames("hello"), "node A got the hello and redirected it"
                assert b.frames("hello")[0]["api_key"] == KEY
                assert b.frames("account")[0]["login"] == 5001
                assert b.frames("tick")[0]["time_msc"] == T0
                assert b.connected_at[0] - a.connected_at[0] < 0.4, "the redirect is followed without back-off"
                assert bridge.url == b.url, "the redirect's URL is the current one, though not in the list"
                assert bridge.epoch == b.epoch
                await asyncio.sleep(0.3)
                assert (a.connections, b.connections) == (1, 1), "the session on B stays"

    run(scenario)


def test_a_bridge_whose_first_url_is_dead_reaches_the_next_node_of_its_list(tmp_path, terminal):
    async def scenario(start):
        async with Node(WELCOME) as b:
            dead = dead_url()
            bridge = make_bridge(tmp_path, terminal, [dead, b.url])
            start(bridge)
            await until("the session on B", lambda: b.frames("positions"))
            assert bridge.url == b.url

    run(scenario)


def test_a_dropped_link_fails_over_to_the_next_url_round_robin(tmp_path, terminal):
    async def scenario(start):
        async with Node(WELCOME) as a, Node(WELCOME, epoch=1_785_200_000_000_002) as b:
            bridge = make_bridge(tmp_path, terminal, f"{a.url}, {b.url}".split(","))
            start(bridge)
            await until("the session on A", lambda: a.frames("positions"))
            await a.__aexit__()  # node A goes away: its sessions are closed
            await until("the session on B", lambda: b.frames("positions"))
            assert bridge.epoch == b.epoch, "the new node is a new epoch"

    run(scenario)


def test_tenant_unavailable_during_a_failover_is_retried_not_fatal(tmp_path, terminal):
    async def scenario(start):
        async with Node(TENANT_UNAVAILABLE, WELCOME) as a:
            bridge = make_bridge(tmp_path, terminal, a.url)  # one URL, as a string: still accepted
            start(bridge)
            await until("the session after the retry", lambda: a.frames("positions"))
            assert a.connections == 2
            assert [n for n, f in a.received if f["type"] == "positions"] == [1], "the second connection's session"

    run(scenario)


def test_a_node_that_goes_silent_after_welcome_is_left_within_the_silence_timeout(tmp_path, terminal):
    async def scenario(start):
        async with Node(SILENT, WELCOME) as a:
            bridge = make_bridge(tmp_path, terminal, [a.url], silence_timeout=0.5)
            start(bridge)
            await until("the reconnection", lambda: a.frames("positions") and a.connections == 2, timeout=4)
            silent_for = a.connected_at[1] - a.connected_at[0]
            # 0.5 s of silence, then 0.5 s of back-off, and no closing handshake with the frozen node (which
            # would wait for its close frame); the bridge's own heartbeats to it do not count.
            assert 0.45 <= silent_for < 2.5, silent_for
            await asyncio.sleep(0.8)
            assert a.connections == 2, "a node that sends heartbeats is not left"

    run(scenario)


def test_a_redirect_loop_does_not_spin_but_backs_off(tmp_path, terminal):
    async def scenario(start):
        async with Node() as a:
            a.answers = [redirect(a.url, "node-a")]  # to itself, forever
            bridge = make_bridge(tmp_path, terminal, [a.url])
            start(bridge)
            await asyncio.sleep(2.0)
            first = core.MAX_REDIRECTS + 1
            assert first <= a.connections <= 4 * first, f"{a.connections} connections in 2 s"
            gaps = [y - x for x, y in zip(a.connected_at, a.connected_at[1:])]
            assert max(gaps[:first - 1]) < 0.4, "the first redirects are followed at once"
            assert gaps[first - 1] >= 0.4, "then the bridge backs off"

    run(scenario)


def test_the_cli_takes_several_urls_repeated_or_comma_separated_and_tries_them_in_turn(tmp_path, terminal):
    one, two, three = dead_url(), dead_url(), dead_url()
    bridge = Bridge(tmp_path, f"{one},{two}", args=("--url", three, "--connect-retries", "3",
                                                     "--silence-timeout", "2"))
    assert bridge.wait(timeout=9) == 2
    out = bridge.output()
    assert "could not connect to trellis" in out
    assert f"cannot reach trellis at {one} (attempt 1/3)" in out
    assert f"cannot reach trellis at {two} (attempt 2/3)" in out
    assert f"cannot reach trellis at {three} (attempt 3/3)" in out
