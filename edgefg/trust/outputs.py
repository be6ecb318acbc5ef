"""Outputs left in order: stale temporary folders swept, ordinary permissions.

Every edgefg output is built in a temporary sibling ``.<name>.tmp-<pid>-<random>`` and renamed into
place. A run that was killed leaves that folder behind; the next run writing next to it removes the
ones whose process is gone (:func:`sweep_stale`). ``tempfile.mkdtemp`` makes folders 0700, so a
finished output is given the modes the user's umask gives any new file (:func:`ordinary_modes`:
usually folders 0755, files 0644) — a service user can then read a bundle root installed.
Standard library only.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

_TMP = re.compile(r"^\.(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)(?:-.*)?$")


def current_umask() -> int:
    try:  # Linux: read it without changing it (os.umask is process-wide and racy under threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def temp_dir(parent: Path, name: str) -> Path:
    """A fresh ``.<name>.tmp-<pid>-XXXX`` folder in ``parent`` (mode 0700 until :func:`ordinary_modes`)."""
    return Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent))


def sweep_stale(parent: Path, name: str | None = None) -> list[Path]:
    """Remove ``.<name>.tmp-<pid>-*`` / ``.<name>.old-<pid>`` left in ``parent`` by processes that are gone
    (any name when ``name`` is None). Returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def ordinary_modes(root: Path) -> None:
    """Folders 0777 & ~umask, files 0666 & ~umask (executable files keep x where the umask allows)."""
    mask = current_umask()
    dmode, fmode = 0o777 & ~mask, 0o666 & ~mask
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for p in paths:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            continue
        if stat.S_ISDIR(st.st_mode):
            os.chmod(p, dmode)
        else:
            os.chmod(p, fmode | ((st.st_mode & 0o111) & ~mask if st.st_mode & 0o100 else 0))
