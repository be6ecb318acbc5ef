"""Atomic bundle updates on a device: ``edgefg install BUNDLE --into DIR`` / ``edgefg rollback --into DIR``.

Layout of DIR::

    releases/<bundle>-<target>-<hash12>/   verified copies of installed bundles (named after the bundle folder and its target)
    current  -> releases/…      what the service runs (``edgefg run DIR/current``)
    previous -> releases/…      what ``rollback`` switches back to

A bundle is verified (every sha256 in its manifest) before anything is written, copied to a temporary
directory next to ``releases/``, verified again there, renamed into place, and only then does
``current`` switch — by ``os.replace`` of a temporary symlink, which is atomic on POSIX: a service
(re)starting at any moment sees either the old or the new bundle, never a half-copied one. A bundle
that fails its checksums (or, with ``trust``, its signature) is refused and ``current`` is left as it
was. Only the files the manifest lists are copied (plus ``manifest.json`` and ``manifest.sig``), read
without following symlinks; releases get ordinary permissions, so a service user can read them, and
temporary folders left by an interrupted install are removed by the next one. Standard library only
(``cryptography`` with ``trust``).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgefg.errors import BundleError, InputPathError
from edgefg.manifest import MANIFEST_NAME, Manifest, load_manifest
from edgefg.outputs import write_bytes
from edgefg.trust.outputs import ordinary_modes, sweep_stale, temp_dir
from edgefg.trust.paths import open_confined

RELEASES = "releases"
CURRENT = "current"
PREVIOUS = "previous"
LOCK = ".install.lock"
LOCK_WAIT_S = 30.0


class InstallInterrupted(KeyboardInterrupt):
    """SIGTERM/SIGHUP arrived during an install: raised so that the temporary copy is removed."""


@dataclass
class InstallResult:
    release: Path  # the installed release directory
    current: Path  # the `current` link
    previous: Path | None  # what `current` pointed to before (None on the first install)
    unchanged: bool = False  # the same bundle was already current


def _target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    return (link.parent / os.readlink(link)).resolve()


def _switch(link: Path, target: Path) -> None:
    """Point ``link`` at ``target`` atomically (relative link, so DIR can be moved/mounted elsewhere)."""
    rel = os.path.relpath(target, link.parent)
    tmp = link.with_name(f".{link.name}.tmp-{os.getpid()}-link")
    tmp.unlink(missing_ok=True)
    os.symlink(rel, tmp)
    os.replace(tmp, link)
    _fsync_dir(link.parent)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def release_name(bundle: Path, manifest: Manifest | None = None) -> str:
    """``<bundle folder>[-<target>]-<hash12>``: what the operator deployed and for which device
    (the manifest's own name is the artifact's, shared by every bundle made from it)."""
    with open_confined(bundle, MANIFEST_NAME) as fh:
        manifest_hash = hashlib.sha256(fh.read()).hexdigest()[:12]
    manifest = manifest or load_manifest(bundle, verify=False)
    name = Path(os.path.abspath(bundle)).name or manifest.name
    if manifest.target and manifest.target not in name:
        name = f"{name}-{manifest.target}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "bundle"
    return f"{safe}-{manifest_hash}"


def copy_listed(bundle: Path, manifest: Manifest, dest: Path) -> None:
    """Copy the manifest, its signature and the files it lists — nothing else, never through a symlink."""
    from edgefg.trust.signing import SIG_NAME

    names = list(dict.fromkeys([MANIFEST_NAME, SIG_NAME, *manifest.files]))
    for name in names:
        try:
            src = open_confined(bundle, name)
        except FileNotFoundError:
            if name == SIG_NAME:
                continue
            raise
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with src, open(target, "xb") as out:
            shutil.copyfileobj(src, out, 1 << 20)


def _refresh_signature(bundle: Path, dest: Path) -> None:
    from edgefg.trust.signing import SIG_NAME

    try:
        with open_confined(bundle, SIG_NAME) as fh:
            data = fh.read(1 << 20)
    except FileNotFoundError:
        return
    write_bytes(dest / SIG_NAME, data)


@contextlib.contextmanager
def install_lock(into: Path, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """One install or rollback into ``into`` at a time (``flock`` on ``into/.install.lock``; released
    by the kernel if the process dies). Waits ``wait_s``, then a clear error."""
    import fcntl

    into.mkdir(parents=True, exist_ok=True)
    fd = os.open(into / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise BundleError(f"another edgefg install or rollback into '{into}' has held its lock for {wait_s:.0f} s",
                                      "wait for it to finish (or stop it), then run this again") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM/SIGHUP raise :class:`InstallInterrupted` (cleanup runs) instead of killing the process mid-copy."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum: int, _frame: Any) -> None:
        raise InstallInterrupted(f"{signal.Signals(signum).name} during install")

    old = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _check_not_older(manifest: Manifest, bundle: Path, old: Path | None, allow_downgrade: bool) -> None:
    """Refuse a bundle whose release is lower than the installed one's (a signed but old bundle)."""
    if old is None or allow_downgrade:
        return
    try:
        installed = load_manifest(old, verify=False)
    except Exception:  # a damaged current release: nothing to compare with (install repairs it)
        return
    new_order, old_order = manifest.release_order(), installed.release_order()
    if new_order < old_order:
        def what(m: Manifest) -> str:
            return f"release {m.release} (created {m.created})" if m.release is not None else f"created {m.created}, no release number"

        raise BundleError(f"refusing a downgrade: '{bundle}' is {what(manifest)}, older than the installed {old.name}: {what(installed)}",
                          "pass --allow-downgrade to install an older bundle on purpose, or `edgefg rollback --into DIR` to go back one")


def install_bundle(bundle: str | Path, into: str | Path, keep: int = 3, trust: Sequence[Any] | None = None,
                   allow_downgrade: bool = False, lock_wait_s: float = LOCK_WAIT_S) -> InstallResult:
    """Verify ``bundle``, copy it under ``into/releases``, switch ``into/current`` to it atomically.

    ``keep`` releases are kept (always including current and previous); older ones are deleted.
    ``trust``: public keys, one of which must have signed the bundle. A bundle with a lower release
    number than the installed one is refused unless ``allow_downgrade``. One install at a time per
    ``into`` (a lock, waited for ``lock_wait_s``); SIGTERM/SIGHUP mid-copy remove the partial copy.
    Raises :class:`~edgefg.errors.ChecksumError` (and changes nothing) for a corrupt bundle.
    """
    if keep < 1:
        raise BundleError(f"keep must be at least 1, got {keep}")
    bundle, into = Path(bundle), Path(into)
    manifest = load_manifest(bundle, verify=True, trust=trust)  # refuse a corrupt bundle before touching DIR
    with install_lock(into, lock_wait_s), _signals_interrupt():
        return _install_locked(bundle, into, manifest, keep, trust, allow_downgrade)


def _install_locked(bundle: Path, into: Path, manifest: Manifest, keep: int, trust: Sequence[Any] | None, allow_downgrade: bool) -> InstallResult:
    releases = into / RELEASES
    releases.mkdir(parents=True, exist_ok=True)
    sweep_stale(releases)  # temporary copies an interrupted install left behind
    sweep_stale(into)
    current = into / CURRENT
    if current.exists() and not current.is_symlink():
        raise BundleError(f"'{current}' exists and is not a symlink", "move it away; edgefg install manages DIR/current as a link")
    old = _target(current)
    dest = releases / release_name(bundle, manifest)
    if old is not None and old == dest.resolve():
        return InstallResult(dest, current, _target(into / PREVIOUS), unchanged=True)
    _check_not_older(manifest, bundle, old if old is not None and old.is_dir() else None, allow_downgrade)
    if not dest.is_dir():
        tmp = temp_dir(releases, dest.name)
        try:
            copy_listed(bundle, manifest, tmp)
            load_manifest(tmp, verify=True, trust=trust)  # the copy itself (a full disk, a bad card) must verify too
            ordinary_modes(tmp)
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    else:
        _refresh_signature(bundle, dest)  # the same manifest, signed since (or by another key)
        load_manifest(dest, verify=True, trust=trust)  # re-installing a release that is already there: check it is intact
    if old is not None and old.is_dir():
        _switch(into / PREVIOUS, old)
    _switch(current, dest)
    _prune(releases, keep, {dest.resolve(), *(p for p in [old] if p is not None)})
    return InstallResult(dest, current, old)


def rollback(into: str | Path, lock_wait_s: float = LOCK_WAIT_S) -> InstallResult:
    """Switch ``current`` back to ``previous`` (and ``previous`` to what was current): the operator's
    deliberate step back, so no release check."""
    into = Path(into)
    if not into.is_dir():
        raise InputPathError(f"'{into}' does not exist", "pass the --into directory used with edgefg install")
    with install_lock(into, lock_wait_s):
        return _rollback_locked(into)


def _rollback_locked(into: Path) -> InstallResult:
    current, previous = into / CURRENT, into / PREVIOUS
    prev = _target(previous)
    if prev is None or not prev.is_dir():
        raise BundleError(f"'{into}' has no previous bundle to roll back to", "install at least two bundles first")
    load_manifest(prev, verify=True)  # never roll back onto a damaged release
    cur = _target(current)
    _switch(current, prev)
    if cur is not None and cur.is_dir():
        _switch(previous, cur)
    return InstallResult(prev, current, cur)


def _prune(releases: Path, keep: int, protected: set[Path]) -> None:
    dirs = sorted((p for p in releases.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.stat().st_mtime, reverse=True)
    kept = 0
    for d in dirs:
        if d.resolve() in protected or kept < keep:
            kept += 1
            continue
        shutil.rmtree(d, ignore_errors=True)
