"""Secrets kept out of sight: read from a file or an environment variable, masked in every output.

* :func:`resolve` turns ``env:VAR`` into the value of ``$VAR`` and ``file:PATH`` into the first line of
  PATH, so a camera URL with a password (or an MQTT/HTTP credential) never appears on the process
  command line (``ps``, ``/proc/PID/cmdline``, the systemd unit). The secret parts of what it reads
  are remembered and masked wherever they later appear.
* :func:`mask` hides, in any text: URL userinfo in every form (``user:pass@``, a password containing
  ``@`` or ``:``, a bare ``token@``), query/form parameters whose name says secret (password, pwd,
  token, key, secret, auth, sig, credential, session, …), ``Bearer``/``Basic`` tokens, and every
  remembered secret. Standard library only.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

from edgefg.errors import InputPathError

MASK = "***"
MAX_SECRET_FILE = 64 << 10
_SECRET_NAME = r"[\w.-]*(?:pass|pwd|token|secret|key|auth|sig|credential|session|cookie|jwt|otp)[\w.-]*"
_PARAM = re.compile(rf"(?i)(?P<pre>(?:^|[?&;#\s,]){_SECRET_NAME}=)(?P<val>[^&;#\s,]*)")
_AUTH = re.compile(r"(?i)\b(?P<pre>(?:bearer|basic|token|digest)\s+)(?P<val>[A-Za-z0-9._~+/=:-]{4,})")
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s\"'<>]*)")
_known: set[str] = set()
_lock = threading.Lock()


def remember(value: str) -> None:
    """Mask ``value`` wherever it appears from now on (values shorter than 4 characters are not
    remembered: they would mask ordinary text)."""
    if value and len(value) >= 4:
        with _lock:
            _known.add(value)


def _userinfo_split(rest: str) -> tuple[str, str] | None:
    """``rest`` (after ``scheme://``) → (userinfo, remainder) when it holds userinfo. The userinfo ends
    at the LAST '@' before the query/fragment: a password may itself contain '@', ':' or '/'."""
    cut = len(rest)
    for ch in "?#":
        i = rest.find(ch)
        if i >= 0:
            cut = min(cut, i)
    at = rest.rfind("@", 0, cut)
    return (rest[:at], rest[at + 1 :]) if at > 0 else None


def _mask_url(m: re.Match) -> str:
    scheme, rest = m["scheme"], m["rest"]
    split = _userinfo_split(rest)
    if split is None:
        return scheme + rest
    userinfo, remainder = split
    user = userinfo.split(":", 1)[0] if ":" in userinfo else ""
    return f"{scheme}{user}:{MASK}@{remainder}" if user else f"{scheme}{MASK}@{remainder}"


def mask(text: object) -> str:
    """``text`` with every secret form replaced by ``***`` (for logs, results, /metrics, errors)."""
    s = str(text)
    with _lock:
        known = sorted(_known, key=len, reverse=True)
    for value in known:
        s = s.replace(value, MASK)
    s = _URL.sub(_mask_url, s)
    s = _PARAM.sub(lambda m: m["pre"] + (MASK if m["val"] else ""), s)
    s = _AUTH.sub(lambda m: m["pre"] + MASK, s)
    return s


def _remember_parts(value: str, whole: bool) -> None:
    """Remember the secret parts of ``value``: all of it when ``whole`` (a password, a token), else a
    URL's password/token and secret parameters (a source that is not a URL — a folder, a camera
    index — carries no secret and stays readable in logs)."""
    if whole:
        remember(value)
        return
    m = _URL.search(value)
    if not m:
        return
    split = _userinfo_split(m["rest"])
    if split:
        userinfo = split[0]
        remember(userinfo.split(":", 1)[1] if ":" in userinfo else userinfo)
    for p in _PARAM.finditer(value):
        remember(p["val"])


def resolve(spec: str | None, what: str = "value", whole: bool = False) -> str | None:
    """``env:VAR`` → ``$VAR``; ``file:PATH`` → the file's first line; anything else (``file://`` URLs
    included) unchanged. ``whole``: the value is a secret as a whole (a password, a token), not a URL
    with a secret inside. Raises :class:`InputPathError` (exit 2) when the variable is unset or the
    file unreadable.
    """
    if spec is None:
        return None
    spec = str(spec)
    if spec.startswith("env:"):
        name = spec[4:]
        value = os.environ.get(name)
        if not name or value is None or value == "":
            raise InputPathError(f"{what}: environment variable '{name}' is not set", "set it (e.g. in the systemd EnvironmentFile)")
        value = value.strip()
    elif spec.startswith("file:") and not spec.startswith("file://"):
        return read_secret_file(spec[5:], what, whole)
    else:
        return spec
    _remember_parts(value, whole)
    return value


def read_secret_file(path: str | Path, what: str = "value", whole: bool = False) -> str:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_SECRET_FILE:
            raise InputPathError(f"{what} file '{p}' is larger than {MAX_SECRET_FILE >> 10} KB")
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputPathError(f"{what} file '{p}' cannot be read ({getattr(exc, 'strerror', None) or exc})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise InputPathError(f"{what} file '{p}' is empty")
    value = lines[0]
    _remember_parts(value, whole)
    return value
