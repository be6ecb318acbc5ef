"""File names that stay inside their bundle.

A manifest names files relative to its bundle directory. A name is accepted only if it is a plain
relative POSIX path (no leading ``/``, no ``\\``, no ``.``/``..``/empty components, no NUL), and a
file is opened only if no component below the bundle root is a symlink and the last one is a regular
file. The bundle directory itself may be a link (``DIR/current`` is one). Standard library only.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from edgefg.errors import BundleError

MAX_NAME_CHARS = 1024
MAX_COMPONENT_CHARS = 255


def name_problem(name: object) -> str | None:
    """Why ``name`` is not an acceptable bundle-relative file name (None when it is)."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty relative path"
    if len(name) > MAX_NAME_CHARS:
        return f"is longer than {MAX_NAME_CHARS} characters"
    if "\x00" in name or "\\" in name:
        return "contains a NUL or a backslash"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path; names must be relative to the bundle"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "has an empty, '.' or '..' component; names must stay inside the bundle"
    if any(len(p) > MAX_COMPONENT_CHARS for p in parts):
        return f"has a component longer than {MAX_COMPONENT_CHARS} characters"
    return None


def check_name(name: object, field: str) -> str:
    problem = name_problem(name)
    if problem:
        raise BundleError(f"manifest field '{field}': {str(name)[:80]!r} {problem}", "re-create the bundle with edgefg deploy")
    return name  # type: ignore[return-value]


def confined_file(root: str | Path, name: str, field: str = "files") -> Path | None:
    """The path of bundle file ``name`` under ``root``; None when it does not exist.

    Raises :class:`BundleError` for a bad name, a symlink anywhere below ``root`` or a non-regular file.
    """
    check_name(name, field)
    path = Path(os.path.realpath(root))
    for part in name.split("/"):
        path = path / part
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"'{name}' in the bundle is (or passes through) a symlink", "bundles hold regular files only; copy the real file in")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"'{name}' in the bundle is not a regular file")
    return path


def open_confined(root: str | Path, name: str, field: str = "files"):
    """Open bundle file ``name`` for reading (binary), never following a symlink; FileNotFoundError if absent."""
    path = confined_file(root, name, field)
    if path is None:
        raise FileNotFoundError(name)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    return os.fdopen(fd, "rb")


def inside(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` (symlinks resolved) lies inside ``root`` (symlinks resolved)."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)
