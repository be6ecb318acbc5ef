"""A bounded, ordered on-disk message spool (SQLite, stdlib) for store-and-forward.

Every outgoing event is appended here first and deleted only after the broker acknowledged it, so
events survive broker outages and edgefg restarts and leave in the order they were produced. When
the spool holds ``max_messages``, the oldest are dropped and counted (the count is kept on disk).
The row id (strictly increasing, never reused: ``AUTOINCREMENT``) is the message's ``seq``, which a
consumer uses to drop the rare duplicate an at-least-once (QoS 1) delivery can cause.

Throughput: with WAL and ``synchronous=NORMAL`` a commit is not an fsync, so a single :meth:`put` is
cheap; :meth:`put_many` and :meth:`ack_many` do many rows in one transaction. The sender reads ahead
with ``peek(n, after=seq)`` (the rows it has not handed out yet) and deletes acknowledged rows in
batches: a crash between a PUBACK and the batch's commit only means those few rows are sent again
after the restart, which at-least-once delivery allows. The in-memory ``depth`` follows the rows
really deleted, so acknowledging a row the full-spool trimming already dropped is not counted twice.
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
            if self._count > self.max_messages:
                self._db.execute("BEGIN")
                self._trim()
                self._db.execute("COMMIT")
            return seq

    def put_many(self, items: list[tuple[str, bytes]] | list[tuple[str, bytes, bool]]) -> list[int]:
        """Append ``(topic, payload[, retain])`` messages in one transaction; returns their seqs."""
        if not items:
            return []
        now = time.time()
        with self._lock:
            seqs = []
            self._db.execute("BEGIN")
            try:
                for item in items:
                    retain = bool(item[2]) if len(item) > 2 else False  # type: ignore[misc]
                    cur = self._db.execute("INSERT INTO messages (topic, payload, retain, created) VALUES (?, ?, ?, ?)", (item[0], item[1], int(retain), now))
                    seqs.append(int(cur.lastrowid))
                self._count += len(seqs)
                self._trim()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._count = int(self._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
                raise
            return seqs

    def _trim(self) -> None:
        """Drop the oldest rows beyond ``max_messages`` (caller holds the lock, inside a transaction)."""
        excess = self._count - self.max_messages
        if excess > 0:
            self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)", (excess,))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
            self._count -= excess

    def peek(self, n: int = 1, after: int = 0) -> list[tuple[int, str, bytes, bool]]:
        """The ``n`` oldest messages with a seq above ``after``: ``(seq, topic, payload, retain)``."""
        with self._lock:
            rows = self._db.execute("SELECT seq, topic, payload, retain FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (after, n)).fetchall()
        return [(int(s), t, bytes(p), bool(r)) for s, t, p, r in rows]

    def ack(self, seq: int) -> None:
        self.ack_many([seq])

    def ack_many(self, seqs: list[int] | set[int] | tuple[int, ...]) -> int:
        """Delete these (acknowledged) messages in one transaction; returns how many rows were still there.
        Seqs already gone (dropped by trimming, or acknowledged twice) are ignored and not counted."""
        ordered = sorted(set(int(s) for s in seqs))
        if not ordered:
            return 0
        runs: list[tuple[int, int]] = []  # consecutive seqs → one range delete each
        lo = hi = ordered[0]
        for s in ordered[1:]:
            if s == hi + 1:
                hi = s
            else:
                runs.append((lo, hi))
                lo = hi = s
        runs.append((lo, hi))
        with self._lock:
            deleted = 0
            self._db.execute("BEGIN")
            try:
                for lo, hi in runs:
                    deleted += self._db.execute("DELETE FROM messages WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= deleted
            return deleted

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
