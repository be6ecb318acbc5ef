"""Typed errors with messages that tell the user what to do.

Every error edgefg raises on purpose derives from :class:`EdgefgError`. The CLI prints
``error: <message>`` (plus ``hint: ...`` when given) on one line each and exits with
``exit_code`` — 2 for bad input/usage, 1 for a check or budget that was not met.
"""
from __future__ import annotations


class EdgefgError(Exception):
    """Base class: a problem the user can fix. ``hint`` says how."""

    exit_code = 2
    summary: dict | None = None  # a run that ended on this error: what it did before (``edgefg run`` prints it)

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # one line, ready for the terminal
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class InputPathError(EdgefgError):
    """A path that does not exist or is of the wrong kind."""


class DataError(EdgefgError):
    """A data folder that cannot be used (no images, wrong layout, ...)."""


class ClassMismatchError(DataError):
    """Data classes that the model does not know (or the reverse)."""


class ModelLoadError(EdgefgError):
    """A model file that is corrupt, unsupported or inconsistent with its config."""


class BundleError(EdgefgError):
    """A bundle/artifact that is missing files, fails its checksums or has a bad manifest."""


class ChecksumError(BundleError):
    """A file whose sha256 differs from the manifest."""


class TargetError(EdgefgError):
    """Unknown target, or a target that cannot take this model/precision."""


class UnsupportedError(EdgefgError):
    """A combination that edgefg does not support (op, precision, architecture, backend)."""


class MissingDependencyError(EdgefgError):
    """An optional backend that is not installed."""

    @classmethod
    def for_module(cls, module: str, extra: str) -> MissingDependencyError:
        return cls(
            f"the optional dependency '{module}' is not installed",
            f"install it with: pip install 'edgefg[{extra}]'",
        )


class OutputExistsError(EdgefgError):
    """An output path that already exists."""


class SourceError(EdgefgError):
    """A video/camera/image source that cannot be opened."""


class CheckFailed(EdgefgError):
    """A gate (accuracy threshold, budget) that was not met. Exit code 1."""

    exit_code = 1
