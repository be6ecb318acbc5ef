"""Registries by name whose entries are imported on first use — the one shape every lazy table takes.

A table maps a name to an entry string, ``"package.module:attribute"`` (or ``"package.module"`` for a
module), so that listing or validating names imports nothing heavy: the CLI's commands, the runtime
backends (:data:`edgefg.formats.BACKENDS`), the field outputs of ``edgefg run``, the tune engines and
the converter modules. :func:`pick` finds a name (an unknown one is a one-line error with a "did you
mean"), :func:`resolve` imports an entry (a missing optional engine says which pip extra installs it).
Standard library only: the on-device runtime uses it.
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from edgefg.errors import EdgefgError, MissingDependencyError, UnsupportedError

V = TypeVar("V")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """``"did you mean 'x'? "`` for the closest of ``known`` (case-insensitive), else ``""``."""
    names = list(known)
    lowered = {n.lower(): n for n in names}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"did you mean '{lowered[close[0]]}'? " if close else ""


def pick(table: Mapping[str, V], name: str, what: str, error: type[EdgefgError] = UnsupportedError, hint: str = "") -> V:
    """``table[name]``; an unknown name raises ``error`` ("unknown WHAT 'name'") naming the known ones."""
    if name in table:
        return table[name]
    known = ", ".join(sorted(table))
    raise error(f"unknown {what} '{name}'", f"{did_you_mean(name, table)}known: {known}" + (f" ({hint})" if hint else ""))


def resolve(entry: str, extra: str | None = None) -> Any:
    """Import ``"module:attribute"`` (the attribute) or ``"module"`` (the module). With ``extra``, a module
    that is not installed is a :class:`MissingDependencyError` naming ``pip install 'edgefg[extra]'``."""
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if extra is None:
            raise
        raise MissingDependencyError.for_module(exc.name or module_name, extra) from None
    return getattr(module, attr) if attr else module
