"""Structured event log: one JSON object per line (source lost/reopened/stalled, stats, ...).

The CLI writes events to stderr (results go to stdout or a file); the Python API logs them through
``logging`` (logger ``edgefg.runtime.loop.events``) unless given a stream. Counters of every event kind
are kept for the summary and ``/metrics``.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

from edgefg.trust.secrets import mask

log = logging.getLogger("edgefg.runtime.loop.events")
WARN_EVENTS = {"source_lost", "source_open_failed", "source_stalled", "source_gave_up", "corrupt_frame", "sink_error", "http_insecure", "mqtt_disconnected", "mqtt_refused", "collect_error",
               "mqtt_spool_error", "mqtt_spool_damaged", "mqtt_client_failed", "mqtt_bad_topic"}


class EventLog:
    """Thread-safe JSON-lines event writer with per-event counters."""

    def __init__(self, stream: TextIO | None = None, listener: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.stream = stream
        self.listener = listener
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def emit(self, event: str, **fields: Any) -> dict[str, Any]:
        record = {"ts": round(time.time(), 3), "event": event, **fields}
        line = mask(json.dumps(record, default=str))  # a URL or token in an error message stays hidden
        with self._lock:
            self.counts[event] += 1
            if self.stream is not None:
                try:
                    self.stream.write(line + "\n")
                    self.stream.flush()
                except (OSError, ValueError):  # closed/broken stderr must not stop the camera
                    pass
            else:
                log.log(logging.WARNING if event in WARN_EVENTS else logging.INFO, line)
        if self.listener is not None:
            self.listener(record)
        return record
