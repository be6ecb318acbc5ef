"""Moving bundles and images to a node that does not share our file system: bytes through Ray's
object store. Tar archives are edgefg's own (a bundle we just built, images we just read) and are
extracted with tarfile's ``data`` filter (no absolute paths, links or devices)."""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


def pack_dir(directory: str | Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(directory), arcname=".")
    return buf.getvalue()


def unpack_dir(data: bytes, dest: str | Path) -> Path:
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(dest, filter="data")
    return dest


@dataclass
class PackedSamples:
    """Image files as bytes with their labels; ``names`` keep each file's suffix for the decoder."""

    names: list[str]
    blobs: list[bytes]
    labels: list[int | None]
    digest: str
    origins: list[str]  # the paths the images had where they were packed

    @classmethod
    def from_samples(cls, samples: Sequence) -> "PackedSamples":
        h = hashlib.sha256()
        names, blobs, labels, origins = [], [], [], []
        for i, s in enumerate(samples):
            data = Path(s.path).read_bytes()
            h.update(data)
            names.append(f"{i:07d}{Path(s.path).suffix.lower()}")
            blobs.append(data)
            labels.append(s.label)
            origins.append(str(s.path))
        return cls(names, blobs, labels, h.hexdigest()[:16], origins)

    def materialize(self) -> list:
        """Write the images into a node-local cache folder (once per content) and return Samples."""
        from edgefg.calibration.dataset import Sample

        folder = Path(tempfile.gettempdir()) / f"edgefg-images-{self.digest}"
        if not (folder / ".complete").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".edgefg-images-{self.digest}.", dir=tempfile.gettempdir()))
            for name, blob in zip(self.names, self.blobs):
                (tmp / name).write_bytes(blob)
            (tmp / ".complete").touch()
            try:
                os.replace(tmp, folder)
            except OSError:  # another task on this node got there first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        return [Sample(folder / n, lab) for n, lab in zip(self.names, self.labels)]

    def relocate(self, scored, samples: list):
        """``scored`` (keyed by the original paths) re-keyed by the materialized ``samples``' paths."""
        import dataclasses

        where = {Path(o): s.path for o, s in zip(self.origins, samples)}
        return dataclasses.replace(scored, paths=[where[Path(p)] for p in scored.paths], skipped=[where[Path(p)] for p in scored.skipped])
