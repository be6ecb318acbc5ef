"""Open a bundle for scoring here, in its host stand-in when asked (``compare``/``validate --stand-in``).

A device-only engine (TensorRT) cannot run on the workstation; the model file it builds its engine
from can, in the backend :func:`edgefg.formats.stand_in` names. What was scored is then that file in
that engine, and every report says so. Without ``--stand-in`` a missing engine's error names the option.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgefg.errors import MissingDependencyError
from edgefg.formats import stand_in as host_stand_in
from edgefg.manifest import load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle


@dataclass(frozen=True)
class StandIn:
    """What ran instead of the bundle's engine."""

    engine: str  # the host backend that scored the model file
    for_backend: str  # the bundle's own engine (on the device)
    model_file: str
    text: str  # one sentence for reports

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def stand_in_of(backend: str, model_file: str) -> StandIn | None:
    """The stand-in for ``backend`` (None: it runs here itself)."""
    host = host_stand_in(backend)
    if host is None:
        return None
    return StandIn(host, backend, model_file,
                   f"scored with {host} on this host, a stand-in for {backend}: the result holds for {model_file} in {host}; "
                   f"the {backend} engine built from it on the device can differ, so check there too")


def open_bundle(path: str | Path, stand_in: bool, command: str, trust: Sequence[Any] | None = None,
                backend: str | None = None) -> tuple[LoadedBundle, str, StandIn | None]:
    """(the open bundle, the runtime it ran in as text, the stand-in or None). ``stand_in``: run a device-only
    bundle in its host stand-in; ``command`` names the command in the hint when its engine is missing here;
    ``backend`` forces another backend (labelled a stand-in when it is the bundle's stand-in)."""
    manifest = load_manifest(path, trust=trust)
    sub = stand_in_of(manifest.backend, manifest.model_file)
    if not (stand_in or (sub is not None and backend == sub.engine)):  # a forced backend that is the stand-in is labelled as one
        sub = None
    if sub is not None:
        return LoadedBundle(path, manifest=manifest, backend=sub.engine), f"{sub.engine} (stand-in for {manifest.backend})", sub
    try:
        bundle = LoadedBundle(path, manifest=manifest, backend=backend)
    except MissingDependencyError as exc:
        host = host_stand_in(manifest.backend)
        if host:
            raise MissingDependencyError(
                exc.message, f"{exc.hint}; or {command} on this host with --stand-in ({host} runs the same model file, labelled as a stand-in)"
            ) from None
        raise
    return bundle, bundle.manifest.backend + (f" (instead of {manifest.backend})" if backend and backend != manifest.backend else ""), None
