"""Prints fills as they arrive and places one manual order: 0.01 lots EURUSD, buy. Runs until Ctrl-C.

    TRELLIS_API_KEY=trk_… python examples/fills_and_order.py
"""
import asyncio
import os

from trellis_client import Client


def on_fill(update):
    if not update.snapshot:  # the snapshot holds the last 200 fills
        d = update.data
        print(f"fill: {d.side} {d.volume} {d.symbol} @ {d.price} (order {d.client_order_id})", flush=True)


async def main():
    url = os.environ.get("TRELLIS_URL", "ws://127.0.0.1:8080/ws/v1/client")
    async with Client.connect(url, api_key=os.environ["TRELLIS_API_KEY"]) as client:
        await client.subscribe("fills", on_fill)
        result = await client.place_order("EURUSD", "buy", "0.01")
        print("placed:", result["order"].client_order_id, result["order"].status, flush=True)
        await client.wait_closed()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
