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

Disk trouble never stops the camera. A disk error (a full disk, an I/O error) drops the event and counts
it (:attr:`Spool.lost`, part of :attr:`Spool.dropped`), the spool leaves the disk alone for a moment
(1 s, doubling to 30 s while it keeps failing) and writing resumes by itself once space returns;
acknowledged rows it could not delete stay and are deleted later. A damaged spool (``database disk image
is malformed``, ``file is not a database``, a failed ``PRAGMA quick_check`` at open) is set aside as
``<name>.damaged-<UTC time>`` (with its ``-wal``/``-shm``, kept for a look) and a new one created; its
seqs go on above the old ones (or, when those cannot be read, above the clock in milliseconds). Only a
path that can never work (a folder where the file should be, no permission) is an error at start.
"""
from __future__ import annotations

import errno
import os
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from edgefg.errors import EdgefgError

SQLITE_ERROR, SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 1, 10, 11, 13, 26
DISK_ERRNOS = {errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}
RETRY_MIN_S, RETRY_MAX_S = 1.0, 30.0  # after a disk error: drop writes without touching the disk this long (doubling)
ERROR_EVERY_S = 60.0  # at most one mqtt_spool_error event per this many seconds


class Spool:
    """See the module docstring. ``events`` (an :class:`~edgefg.runtime.loop.events.EventLog`) gets the
    warnings: ``mqtt_spool_damaged`` (set aside and recreated), ``mqtt_spool_error`` (a disk error: events
    dropped and counted, at most one a minute) and ``mqtt_spool_recovered`` (writing works again)."""

    def __init__(self, path: str | Path, max_messages: int = 100_000, events: Any = None) -> None:
        if max_messages < 1:
            raise EdgefgError(f"the spool size must be ≥ 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.events = events
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._count = 0
        self._trimmed = 0  # dropped by the full-spool trimming (kept on disk, across restarts)
        self.lost = 0  # events not spooled because of a disk error (this run)
        self.errors = 0  # failed spool operations (this run)
        self.damaged: list[str] = []  # where damaged spools were set aside (this run)
        self.last_error: str | None = None
        self._max_seq = 0
        self._failing = False  # since the last disk error, no write has succeeded
        self._retry_at = 0.0  # while failing: drop writes without touching the disk until then
        self._backoff = RETRY_MIN_S
        self._error_event_at = -1e18
        self._announced = False  # a mqtt_spool_error event went out since the last recovery
        self._lost_at_failure = 0
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if exc.errno not in DISK_ERRNOS:
                raise EdgefgError(f"cannot open the MQTT spool '{self.path}': {exc.strerror or exc}", "point --mqtt-spool at a writable file") from None
            self._disk_error("open", exc)
            return
        try:
            self._open()
        except sqlite3.Error as exc:
            if not is_disk_error(exc):  # a path that can never work: bad input
                raise EdgefgError(f"cannot open the MQTT spool '{self.path}': {exc}", "point --mqtt-spool at a writable file") from None
            self._disk_error("open", exc)  # a full disk: start without, retried (events dropped and counted meanwhile)
        except OSError as exc:  # the damaged spool could not be set aside
            self._disk_error("open", exc)

    # -- opening, damage ------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=10)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: survives a crash of this process
            check = db.execute("PRAGMA quick_check").fetchall()  # a damaged page (a power cut on an SD card)
            if [tuple(r) for r in check] != [("ok",)]:
                raise sqlite3.DatabaseError("database disk image is malformed (quick_check: " + "; ".join(str(r[0]) for r in check[:3]) + ")")
            db.execute("CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
                       "payload BLOB NOT NULL, retain INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL)")
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('dropped', 0)")
            if self._max_seq:  # a recreated spool: seqs go on above the old ones (consumers deduplicate by seq)
                row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                if row is None or int(row[0]) < self._max_seq:
                    db.execute("DELETE FROM sqlite_sequence WHERE name = 'messages'")
                    db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?)", (self._max_seq,))
            self._count = int(db.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            self._trimmed = int(db.execute("SELECT value FROM meta WHERE key = 'dropped'").fetchone()[0])
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
            self._max_seq = max(self._max_seq, int(row[0]) if row else 0)
        except BaseException:
            db.close()
            raise
        return db

    def _open(self) -> None:
        """Open (or create) the spool; a damaged one is set aside and a new one created."""
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            self._set_aside(exc)
            self._db = self._connect()

    def _set_aside(self, exc: BaseException) -> None:
        """Rename the damaged spool (and its -wal/-shm) to ``<name>.damaged-<UTC time>`` (kept for a look)."""
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
            self._db = None
        try:  # the old seqs, if still readable: the new spool's go on above them
            with closing(sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)) as old:
                row = old.execute("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").fetchone()
                self._max_seq = max(self._max_seq, int(row[0]) if row else 0)
        except (sqlite3.Error, ValueError, TypeError):
            pass
        # unreadable: a floor from the clock (ms), far above any count of rows a spool has held
        self._max_seq = max(self._max_seq, int(time.time() * 1000))
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        n = 1
        while dest.exists():
            n += 1
            dest = self.path.with_name(f"{self.path.name}.damaged-{stamp}-{n}")
        os.replace(self.path, dest)
        for suffix in ("-wal", "-shm"):
            side = Path(f"{self.path}{suffix}")
            if side.exists():
                try:
                    os.replace(side, f"{dest}{suffix}")
                except OSError:
                    side.unlink(missing_ok=True)
        self._count = 0
        self.damaged.append(str(dest))
        self._emit("mqtt_spool_damaged", path=str(self.path), kept_as=str(dest), error=str(exc),
                   action="set aside (kept for a look) and recreated: the events spooled in it are not sent")

    # -- errors ---------------------------------------------------------------------------------
    def _emit(self, event: str, **fields: Any) -> None:
        if self.events is not None:
            try:
                self.events.emit(event, **fields)
            except Exception:  # a broken event log must not stop the camera either
                pass

    def _disk_error(self, op: str, exc: BaseException, lost: int = 0) -> None:
        """Count a failed operation (and the events it lost); the disk is left alone for a while."""
        self.errors += 1
        self.lost += lost
        self.last_error = f"{op}: {_describe(exc)}"
        now = time.monotonic()
        if not self._failing:
            self._failing = True
            self._backoff = RETRY_MIN_S
            self._lost_at_failure = self.lost - lost
        else:
            self._backoff = min(RETRY_MAX_S, self._backoff * 2)
        self._retry_at = now + self._backoff
        if now - self._error_event_at >= ERROR_EVERY_S:
            self._error_event_at = now
            self._announced = True
            self._emit("mqtt_spool_error", path=str(self.path), op=op, error=_describe(exc), dropped=self.lost, errors=self.errors,
                       hint="free space on the spool's disk (or fix it): events are dropped and counted until then, the camera goes on")

    def _recovered(self) -> None:
        self._failing = False
        self._backoff = RETRY_MIN_S
        if self._announced:
            self._announced = False
            self._emit("mqtt_spool_recovered", path=str(self.path), dropped=self.lost - self._lost_at_failure, errors=self.errors)

    def _ready(self, write: bool) -> bool:
        """True when the spool may touch the disk now (reopening it if it is not open)."""
        if self._closed:
            return False
        if (write or self._db is None) and self._failing and time.monotonic() < self._retry_at:
            return False
        if self._db is None:
            try:
                self._open()
            except (sqlite3.Error, OSError) as exc:
                self._disk_error("open", exc)
                return False
        return True

    def _failed(self, op: str, exc: BaseException, lost: int = 0) -> None:
        """An operation failed (caller holds the lock; the transaction, if any, is rolled back here)."""
        if self._db is not None and self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        if isinstance(exc, sqlite3.DatabaseError) and is_damaged(exc):
            try:
                self._set_aside(exc)
            except OSError as exc2:
                self._disk_error(op, exc2, lost)
                return
            self.lost += lost
            self.errors += 1
            self.last_error = f"{op}: {_describe(exc)}"
            self._ready(write=True)  # recreate it now: the next event goes into the new spool
            return
        self._disk_error(op, exc, lost)

    # -- the API --------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, retain: bool = False) -> int | None:
        """Append a message; returns its seq, or None when a disk error dropped it (counted in
        :attr:`lost`). Drops (and counts) the oldest when full."""
        with self._lock:
            if not self._ready(write=True):
                self.lost += 1
                return None
            assert self._db is not None
            try:
                cur = self._db.execute("INSERT INTO messages (topic, payload, retain, created) VALUES (?, ?, ?, ?)", (topic, payload, int(retain), time.time()))
            except (sqlite3.Error, OSError) as exc:
                self._failed("write", exc, lost=1)
                return None
            seq = int(cur.lastrowid or 0)
            self._max_seq = max(self._max_seq, seq)
            self._count += 1
            if self._failing:
                self._recovered()
            if self._count > self.max_messages:
                try:
                    self._db.execute("BEGIN")
                    trimmed = self._trim()
                    self._db.execute("COMMIT")
                    self._count -= trimmed
                    self._trimmed += trimmed
                except (sqlite3.Error, OSError) as exc:  # the row is in; trimming is tried again at the next put
                    self._failed("trim", exc)
            return seq

    def put_many(self, items: list[tuple[str, bytes]] | list[tuple[str, bytes, bool]]) -> list[int]:
        """Append ``(topic, payload[, retain])`` messages in one transaction; returns their seqs (none when
        a disk error dropped them, counted in :attr:`lost`)."""
        if not items:
            return []
        now = time.time()
        with self._lock:
            if not self._ready(write=True):
                self.lost += len(items)
                return []
            assert self._db is not None
            seqs = []
            try:
                self._db.execute("BEGIN")
                for item in items:
                    retain = bool(item[2]) if len(item) > 2 else False  # type: ignore[misc]
                    cur = self._db.execute("INSERT INTO messages (topic, payload, retain, created) VALUES (?, ?, ?, ?)", (item[0], item[1], int(retain), now))
                    seqs.append(int(cur.lastrowid or 0))
                self._count += len(seqs)
                try:
                    trimmed = self._trim()
                    self._db.execute("COMMIT")
                except BaseException:
                    self._count -= len(seqs)
                    raise
            except (sqlite3.Error, OSError) as exc:
                self._failed("write", exc, lost=len(items))
                return []
            self._count -= trimmed
            self._trimmed += trimmed
            self._max_seq = max(self._max_seq, seqs[-1])
            if self._failing:
                self._recovered()
            return seqs

    def _trim(self) -> int:
        """Drop the oldest rows beyond ``max_messages`` (caller holds the lock, inside a transaction);
        returns how many (the caller updates the counts once the transaction is committed)."""
        assert self._db is not None
        excess = self._count - self.max_messages
        if excess > 0:
            self._db.execute("DELETE FROM messages WHERE seq IN (SELECT seq FROM messages ORDER BY seq LIMIT ?)", (excess,))
            self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (excess,))
            return excess
        return 0

    def peek(self, n: int = 1, after: int = 0) -> list[tuple[int, str, bytes, bool]]:
        """The ``n`` oldest messages with a seq above ``after``: ``(seq, topic, payload, retain)``
        (none while the spool cannot be read)."""
        with self._lock:
            if not self._ready(write=False):
                return []
            assert self._db is not None
            try:
                rows = self._db.execute("SELECT seq, topic, payload, retain FROM messages WHERE seq > ? ORDER BY seq LIMIT ?", (after, n)).fetchall()
            except (sqlite3.Error, OSError) as exc:
                self._failed("read", exc)
                return []
        return [(int(s), t, bytes(p), bool(r)) for s, t, p, r in rows]

    def ack(self, seq: int) -> None:
        self.ack_many([seq])

    def ack_many(self, seqs: list[int] | set[int] | tuple[int, ...]) -> int | None:
        """Delete these (acknowledged) messages in one transaction; returns how many rows were still there,
        or None when a disk error kept them (try again later; they are sent again after a restart).
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
            if not self._ready(write=True):
                return None
            assert self._db is not None
            deleted = 0
            try:
                self._db.execute("BEGIN")
                for lo, hi in runs:
                    deleted += self._db.execute("DELETE FROM messages WHERE seq BETWEEN ? AND ?", (lo, hi)).rowcount
                self._db.execute("COMMIT")
            except (sqlite3.Error, OSError) as exc:
                self._failed("delete", exc)
                return None
            self._count -= deleted
            if self._failing:
                self._recovered()
            return deleted

    @property
    def depth(self) -> int:
        with self._lock:
            return self._count

    @property
    def dropped(self) -> int:
        """Events lost: the oldest dropped because the spool was full (counted on disk, across restarts) and
        those a disk error kept out of it (this run)."""
        with self._lock:
            return self._trimmed + self.lost

    @property
    def ok(self) -> bool:
        """False from a disk error until a write succeeds again."""
        with self._lock:
            return self._db is not None and not self._failing

    def stats(self) -> dict[str, Any]:
        with self._lock:
            s: dict[str, Any] = {"spool_ok": self._db is not None and not self._failing, "spool_dropped_full": self._trimmed,
                                 "spool_dropped_disk": self.lost, "spool_errors": self.errors, "spool_damaged": len(self.damaged)}
            if self.last_error:
                s["spool_last_error"] = self.last_error
            return s

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._db is not None:
                try:
                    self._db.close()
                except sqlite3.Error:
                    pass
                self._db = None


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)  # Python ≥ 3.11 (extended code: the low byte is the primary one)
    return code & 0xFF if isinstance(code, int) else None


def is_damaged(exc: BaseException) -> bool:
    """An SQLite error that means the file is damaged (not a full or failing disk)."""
    code = _code(exc)
    if code is not None and code != SQLITE_ERROR:
        return code in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return any(w in text for w in ("malformed", "not a database", "quick_check"))


def is_disk_error(exc: BaseException) -> bool:
    """A full or failing disk (it may work again later), not a path that can never work."""
    if isinstance(exc, OSError):
        return exc.errno in DISK_ERRNOS
    code = _code(exc)
    if code is not None and code != SQLITE_ERROR:
        return code in (SQLITE_FULL, SQLITE_IOERR)
    text = str(exc).lower()
    return "disk is full" in text or "disk i/o error" in text


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
