"""``$EDGEFG_NUM_THREADS``: the inference thread count when ``--threads`` is not given, range-checked."""
from __future__ import annotations

import os

from edgefg.errors import EdgefgError

ENV = "EDGEFG_NUM_THREADS"
MAX_THREADS = 1024


def env_threads() -> int | None:
    """The value of $EDGEFG_NUM_THREADS (None when unset or empty); :class:`EdgefgError` (exit 2) when it
    is not a whole number from 1 to 1024."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise EdgefgError(f"{ENV} must be a whole number of threads, got {raw[:40]!r}", f"unset it or give 1-{MAX_THREADS}") from None
    if not 1 <= n <= MAX_THREADS:
        raise EdgefgError(f"{ENV} must be between 1 and {MAX_THREADS}, got {n}", "unset it to use every core")
    return n
