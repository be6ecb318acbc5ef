"""A bounded, ordered on-disk message spool (SQLite, stdlib) for store-and-forward.

Every outgoing event is appended here first and deleted only after the broker acknowledged it, so
events survive broker outages and edgefg restarts and leave in the order they were produced. When
the spool holds ``max_messages``, the oldest are dropped and counted (the count is kept on disk).
The row id (strictly increasing, never reused: ``AUTOINCREMENT``) is the message's ``seq``, which a
consumer uses to drop the rare duplicate an at-least-once (QoS 1) delivery can cause.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from edgefg.errors import EdgefgError


class Spool:
    def __init__(self, path: str | Path, max_messages: int = 100_000) -> None:
        if max_messages < 1:
            raise EdgefgError(f"the spool size must be ≥ 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a crash of this process
            self._db.execute("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                             "payload BLOB NOT NULL, retain INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0)")
        except (sqlite3.Error, OSError) as exc:
            raise EdgefgError(f"cannot open the MQTT spool '{self.path}': {exc}", "point --mqtt-spool at a writable file") from None
        self._lock = threading.Lock()
        self._count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])

    def put(self, topic: str, payload: bytes, retain: bool = False) -> int:
        """Append a message; returns its seq. Drops (and counts) the oldest when full."""
        with self._lock:
            cur = self._db.execute("INSERT INTO messages (topic, payload, retain, created) VALUES (?, ?, ?, ?)", (topic, payload, int(retain), time.time()))
            seq = int(cur.lastrowid)
            self._count += 1
            excess = self._count - self.max_messages
            if excess > 0:
                self._db.execute("BEGIN")
                self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)", (excess,))
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
                self._db.execute("COMMIT")
                self._count -= excess
            return seq

    def peek(self, n: int = 1) -> list[tuple[int, str, bytes, bool]]:
        """The ``n`` oldest messages: ``(seq, topic, payload, retain)``."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, retain FROM messages ORDER BY seq LIMIT ?", (n,)).fetchall()
        return [(int(s), t, bytes(p), bool(r)) for s, t, p, r in rows]

    def ack(self, seq: int) -> None:
        with self._lock:
            self._count -= self._db.execute("DELETE FROM messages WHERE seq = ?", (seq,)).rowcount

    @property
    def depth(self) -> int:
        with self._lock:
            return self._count

    @property
    def dropped(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
