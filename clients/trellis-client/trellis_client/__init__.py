"""trellis trading client: live subscriptions and manual trading over trellis's `/ws/v1/client` WebSocket
(docs/client-protocol.md).

```python
from trellis_client import Client

async with Client.connect("ws://127.0.0.1:8080/ws/v1/client", api_key="trk_…") as client:
    async for update in client.stream("fills"):
        print(update.data)
```
"""

from .client import (
    DEFAULT_URL, PROTOCOL_VERSION, ChannelState, Client, Closed, ConnectionLost, CredentialExpired,
    HandshakeRefused, ProtocolError, Sequencer, SeqResult, ServerError, Subscription, TenantGone, TooFarBehind,
    new_client_order_id,
)
from .messages import (
    Ack, Bar, Deal, ErrorFrame, Fill, KillSwitch, Order, Pnl, Pong, Position, Refused, RiskState, RiskView,
    Snapshot, StrategyView, SupervisionEvent, Tick, TrellisError, Update, UpdateFrame, Welcome,
    decode_channel_data, decode_frame,
)

__version__ = "0.1.0"

__all__ = [
    "Ack", "Bar", "ChannelState", "Client", "Closed", "ConnectionLost", "CredentialExpired", "DEFAULT_URL", "Deal",
    "ErrorFrame", "Fill", "HandshakeRefused", "KillSwitch", "Order", "PROTOCOL_VERSION", "Pnl", "Pong", "Position",
    "ProtocolError", "Refused", "RiskState", "RiskView", "SeqResult", "Sequencer", "ServerError", "Snapshot",
    "StrategyView", "Subscription", "SupervisionEvent", "TenantGone", "Tick", "TooFarBehind", "TrellisError",
    "Update", "UpdateFrame", "Welcome", "decode_channel_data", "decode_frame", "new_client_order_id",
]
