"""trellis MT5 bridge: drives a MetaTrader 5 terminal through the official `MetaTrader5` package and speaks
the trellis bridge protocol v3 (docs/mt5-protocol.md) over a WebSocket."""

PROTOCOL_VERSION = 3
