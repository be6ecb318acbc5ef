"""Library notices that are false for edgefg's use, dropped at their logger — nothing else is.

torch logs "No CUDA runtime is found, using CUDA_HOME=…" when ``torch.utils.cpp_extension`` is imported
(NNCF's PyTorch backend imports it for its optional CUDA kernels) on any machine with a CPU build of torch
or no CUDA toolkit. edgefg never compiles an extension, so the line says nothing true about the run; the
CLI already hid it with every third-party log, but the Python API printed it (as a W-prefixed torch log
line) in the user's own program. A filter on that one logger drops that one message; the user's own
logging configuration, and every other record of torch's, are left as they are.
"""
from __future__ import annotations

import logging

_FALSE_NOTICES: dict[str, tuple[str, ...]] = {
    "torch.utils.cpp_extension": ("No CUDA runtime is found",),
}


class _DropNotice(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to judge
            return True
        return not message.startswith(self.prefixes)


def drop_false_notices() -> None:
    """Attach the filters (idempotent). Importing torch is not needed: the loggers exist by name."""
    for name, prefixes in _FALSE_NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) for f in logger.filters):
            logger.addFilter(_DropNotice(prefixes))
