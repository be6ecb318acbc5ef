"""Writing the files a command reports into (``--json``, ``--junit``, ``--markdown``, ``--output``, ``-o``).

One rule for every writer: the parent folders are created, and the file is written to a
temporary name in the same folder and renamed over the target, so a reader (CI, a dashboard)
never sees half a report and a crash never leaves one. Standard library only (the runtime uses it).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgefg.errors import InputPathError


def prepare_parent(path: str | Path) -> Path:
    """Create ``path``'s parent folders; a parent that is a file is a one-line error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputPathError(f"cannot write '{path}': a parent of it is a file, not a folder") from None
    except PermissionError:
        raise InputPathError(f"cannot write '{path}': permission denied on its folder") from None
    if path.is_dir():
        raise InputPathError(f"cannot write '{path}': it is a folder", "pass a file name")
    return path


def write_bytes(path: str | Path, data: bytes, fsync: bool = False) -> Path:
    """Atomically write ``data`` to ``path`` (parents created, temp file + rename), with the mode the
    umask gives a new file (``mkstemp`` makes 0600); ``fsync``: on disk before the rename."""
    from edgefg.trust.outputs import current_umask

    path = prepare_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, data: Any, fsync: bool = False) -> Path:
    """Atomically write ``data`` as indented JSON (non-JSON values via ``str``)."""
    return write_bytes(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"), fsync=fsync)
