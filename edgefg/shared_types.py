"""Small result types more than one module returns, kept apart so those modules need not import
each other (``deploy`` and ``wrap`` both return a :class:`DeployResult`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgefg.manifest import Manifest
from edgefg.targets import Target


@dataclass
class DeployResult:
    """What ``edgefg deploy`` wrote: the bundle folder, its manifest and the target it is for."""

    directory: Path
    manifest: Manifest
    target: Target
