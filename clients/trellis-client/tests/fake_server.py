"""A scripted stand-in for trellis's `/ws/v1/client`, for the unit tests: a real WebSocket server on a free port
whose every connection is handed to the test's script (a coroutine taking a `Peer`)."""

import asyncio
import json

import websockets
from websockets.asyncio.server import serve

WELCOME = {"type": "welcome", "tenant": "acme", "actor": "key:acme0001", "can_trade": True,
           "channels": ["ticks:{symbol}", "bars:{symbol}:{timeframe}", "positions", "orders", "fills", "pnl",
                        "strategies", "risk", "supervision", "predictions:{deployment}"],
           "symbols": ["EURUSD", "GBPUSD"], "expires_ms": None, "protocol_version": 1}


class Peer:
    """One client connection as the script sees it."""

    def __init__(self, server: "FakeServer", ws, index: int):
        self.server = server
        self.ws = ws
        self.index = index  # 0 for the first connection, 1 after a reconnect, …

    async def recv(self, timeout: float = 5.0) -> dict:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.server.received.append((self.index, frame))
        return frame

    async def send(self, frame: dict) -> None:
        await self.ws.send(json.dumps(frame))

    async def ack(self, frame: dict, result=None) -> None:
        await self.send({"type": "ack", "id": frame["id"], "op": frame["op"], "result": result or {}})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.ws.close(code, reason)

    async def serve_forever(self) -> None:
        """Answers what is left: subscriptions with an ack and empty snapshots, pings with pongs."""
        while True:
            f = await self.recv(timeout=3600)
            if f["op"] == "ping":
                await self.send({"type": "pong", "id": f["id"]})
            else:
                await self.ack(f)
                if f["op"] == "subscribe":
                    for ch in f["channels"]:
                        await self.send({"type": "snapshot", "channel": ch, "seq": 0, "data": {ch: []}})


class FakeServer:
    def __init__(self, script, *, status: int = 101, welcome: dict = WELCOME):
        self.script = script
        self.status = status
        self.welcome = welcome
        self.received = []  # (connection index, frame)
        self.requests = []  # (path, headers)
        self.connections = 0
        self.errors = []
        self.url = ""

    def frames(self, op=None, index=None):
        return [f for i, f in self.received if (op is None or f.get("op") == op) and (index is None or i == index)]

    def _process_request(self, connection, request):
        self.requests.append((request.path, request.headers))
        if self.status != 101:
            return connection.respond(self.status, '{"error": "refused"}\n')
        return None

    async def _handle(self, ws):
        index = self.connections
        self.connections += 1
        await ws.send(json.dumps(self.welcome))
        try:
            await self.script(Peer(self, ws, index))
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # the test looks at them
            self.errors.append(e)

    async def __aenter__(self):
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._process_request)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/ws/v1/client"
        return self

    async def __aexit__(self, *exc):
        self._server.close()
        await self._server.wait_closed()
