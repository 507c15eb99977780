"""The bridge's local journal (SQLite): what makes orders execute exactly once.

It records every `client_order_id` before `order_send` ("sending") and its result after ("done"), so a
re-sent order — after a reconnect, a bridge restart or a trellis restart — is answered from here and never
sent to MT5 twice. Cancels of pending orders are journaled the same way: "removing" before the
TRADE_ACTION_REMOVE, "done" once the order is removed, so a repeated `cancel_request` is answered DONE again
without another removal. It also keeps the protocol state that must survive a restart: the highest trellis `seq`
processed, the trellis epoch that `seq` belongs to, and the outbox of reliable frames not yet acknowledged.
"""

import json
import sqlite3
import threading


class Journal:
    def __init__(self, path: str):
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(
                """
                CREATE TABLE IF NOT EXISTS orders (
                    client_order_id TEXT PRIMARY KEY,
                    state TEXT NOT NULL CHECK (state IN ('sending', 'done')),
                    request TEXT NOT NULL,
                    result TEXT,
                    order_ticket INTEGER
                );
                CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL);
                CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                CREATE TABLE IF NOT EXISTS deals_sent (ticket INTEGER PRIMARY KEY);
                CREATE TABLE IF NOT EXISTS cancels (
                    client_order_id TEXT PRIMARY KEY,
                    state TEXT NOT NULL CHECK (state IN ('removing', 'done')),
                    order_ticket INTEGER NOT NULL,
                    result TEXT
                );
                """
            )

    # -- orders ----------------------------------------------------------------------------------------
    def order(self, client_order_id: str):
        """(state, request, result) of an order, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, request, result FROM orders WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]), json.loads(row[2]) if row[2] else None

    def mark_sending(self, client_order_id: str, request: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO orders (client_order_id, state, request) VALUES (?, 'sending', ?)",
                (client_order_id, json.dumps(request)),
            )

    def mark_done(self, client_order_id: str, result: dict) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE orders SET state = 'done', result = ?, order_ticket = ? WHERE client_order_id = ?",
                (json.dumps(result), result.get("order") or None, client_order_id),
            )

    def client_order_id_of(self, order_ticket: int):
        with self._lock:
            row = self._db.execute(
                "SELECT client_order_id FROM orders WHERE order_ticket = ?", (order_ticket,)
            ).fetchone()
        return row[0] if row else None

    # -- cancels ---------------------------------------------------------------------------------------
    def cancel(self, client_order_id: str):
        """(state, order ticket, result) of the cancel of an order, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT state, order_ticket, result FROM cancels WHERE client_order_id = ?", (client_order_id,)
            ).fetchone()
        if row is None:
            return None
        return row[0], row[1], json.loads(row[2]) if row[2] else None

    def mark_removing(self, client_order_id: str, order_ticket: int) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cancels (client_order_id, state, order_ticket) VALUES (?, 'removing', ?)",
                (client_order_id, order_ticket),
            )

    def mark_removed(self, client_order_id: str, order_ticket: int, result: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cancels (client_order_id, state, order_ticket, result) "
                "VALUES (?, 'done', ?, ?)",
                (client_order_id, order_ticket, json.dumps(result)),
            )

    def forget_cancel(self, client_order_id: str) -> None:
        """A removal the trade server refused: the order is still what it was, and a repeat may try again."""
        with self._lock:
            self._db.execute("DELETE FROM cancels WHERE client_order_id = ?", (client_order_id,))

    # -- deals -----------------------------------------------------------------------------------------
    def deal_sent(self, ticket: int) -> bool:
        """Records a deal ticket as sent; False when it already was."""
        with self._lock:
            cur = self._db.execute("INSERT OR IGNORE INTO deals_sent (ticket) VALUES (?)", (ticket,))
            return cur.rowcount == 1

    # -- protocol state --------------------------------------------------------------------------------
    def get(self, key: str, default: int = 0) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def put(self, key: str, value: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, value))

    def enter_epoch(self, epoch: int) -> None:
        """Keeps a new trellis epoch and forgets the trellis `seq` processed in the old one, in one transaction:
        were a crash to leave the new epoch beside the old `in_seq`, the restarted bridge would drop the frames
        of the restarted trellis (numbered from 1 again) as duplicates."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('in_seq', 0)")
                self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('epoch', ?)", (epoch,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def keep(self, seq: int, frame: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO outbox (seq, frame) VALUES (?, ?)", (seq, frame))

    def acknowledge(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,))

    def unacknowledged(self, after: int):
        with self._lock:
            return [f for (f,) in self._db.execute("SELECT frame FROM outbox WHERE seq > ? ORDER BY seq", (after,))]
