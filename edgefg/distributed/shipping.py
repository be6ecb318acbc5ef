"""Moving bundles and images to a node that does not share our file system: bytes through Ray's
object store. Tar archives are edgefg's own (a bundle we just built, images we just read) and are
extracted with tarfile's ``data`` filter (no absolute paths, links or devices)."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


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


def content_digest(samples: Sequence) -> str:
    """The images' content hash (their bytes in order), read one file at a time."""
    h = hashlib.sha256()
    for s in samples:
        h.update(Path(s.path).read_bytes())
    return h.hexdigest()[:16]


def packed_name(index: int, path: str | Path) -> str:
    """The file name image ``index`` gets where it is unpacked (its suffix kept for the decoder)."""
    return f"{index:07d}{Path(path).suffix.lower()}"


def cache_folder(digest: str) -> Path:
    """The node-local folder that holds an image set of this content once it has arrived."""
    return Path(tempfile.gettempdir()) / f"edgefg-images-{digest}"


def _publish(tmp: Path, folder: Path) -> None:
    """Mark ``tmp`` complete and move it to ``folder``, unless another task on this node got there first."""
    (tmp / ".complete").touch()
    try:
        os.replace(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _relocate(scored, origins: Sequence, samples: list):
    """``scored`` (keyed by the ``origins`` paths) re-keyed by the materialized ``samples``' paths."""
    where = {Path(o): s.path for o, s in zip(origins, samples)}
    return dataclasses.replace(scored, paths=[where[Path(p)] for p in scored.paths], skipped=[where[Path(p)] for p in scored.skipped])


@dataclass
class PackedSamples:
    """Image files as bytes with their labels; ``names`` keep each file's suffix for the decoder."""

    names: list[str]
    blobs: list[bytes]
    labels: list[int | None]
    digest: str
    origins: list[str]  # the paths the images had where they were packed

    @classmethod
    def from_samples(cls, samples: Sequence, first: int = 0) -> PackedSamples:
        """Read ``samples`` into memory (a chunk, not a whole set); ``first``: the index of the first one in its set."""
        h = hashlib.sha256()
        names, blobs, labels, origins = [], [], [], []
        for i, s in enumerate(samples, first):
            data = Path(s.path).read_bytes()
            h.update(data)
            names.append(packed_name(i, s.path))
            blobs.append(data)
            labels.append(s.label)
            origins.append(str(s.path))
        return cls(names, blobs, labels, h.hexdigest()[:16], origins)

    def write(self, folder: str | Path) -> list:
        """Write the images into ``folder`` and return their Samples there."""
        from edgefg.calibration.dataset import Sample

        folder = Path(folder)
        for name, blob in zip(self.names, self.blobs):
            (folder / name).write_bytes(blob)
        return [Sample(folder / n, lab) for n, lab in zip(self.names, self.labels)]

    def materialize(self) -> list:
        """Write the images into a node-local cache folder (once per content) and return Samples."""
        from edgefg.calibration.dataset import Sample

        folder = cache_folder(self.digest)
        if not (folder / ".complete").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".edgefg-images-{self.digest}.", dir=tempfile.gettempdir()))
            self.write(tmp)
            _publish(tmp, folder)
        return [Sample(folder / n, lab) for n, lab in zip(self.names, self.labels)]

    def relocate(self, scored, samples: list):
        """``scored`` (keyed by the original paths) re-keyed by the materialized ``samples``' paths."""
        return _relocate(scored, self.origins, samples)


def read_chunk(samples: Sequence, first: int) -> PackedSamples:
    """A Ray task on the node that has the files: one chunk of an image set, packed."""
    return PackedSamples.from_samples(samples, first)


class RayChunkSource:
    """Fetches chunks with :func:`read_chunk` run on ``node`` (where the files are), one task per chunk."""

    def __init__(self, node: str):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.ray = ray
        # num_cpus=0: the files' node may have every CPU taken by the sweep's pinned tasks
        self.task = ray.remote(read_chunk).options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))

    def submit(self, _worker, span: tuple[int, list]):
        return self.task.remote(span[1], span[0])

    def wait(self, refs: list):
        return self.ray.wait(refs, num_returns=1)[0][0]

    def get(self, ref) -> PackedSamples:
        return self.ray.get(ref)


@dataclass
class StreamedSamples:
    """An image set that stays on ``node``, the node that has its files: a task elsewhere copies it into
    its node-local cache chunk by chunk (at most ``in_flight`` chunks on their way, so memory holds a
    bounded window of images, not the set). Small to ship: paths, labels and the content digest."""

    samples: list  # edgefg.calibration.dataset.Sample, paths on ``node``
    node: str
    digest: str
    chunk_images: int = 256
    in_flight: int = 2

    @classmethod
    def from_samples(cls, samples: Sequence, node: str, chunk_images: int = 256, in_flight: int = 2) -> StreamedSamples:
        if chunk_images < 1 or in_flight < 1:
            raise ValueError(f"chunk_images and in_flight must be ≥ 1, got {chunk_images} and {in_flight}")
        samples = list(samples)
        return cls(samples, node, content_digest(samples), chunk_images, in_flight)

    def spans(self) -> Iterator[tuple[int, list]]:
        """(index of the first image, its chunk of samples), in order."""
        for i in range(0, len(self.samples), self.chunk_images):
            yield i, self.samples[i:i + self.chunk_images]

    def materialize(self, source=None) -> list:
        """The images in this node's cache folder (fetched from ``source``, default Ray tasks on
        ``node``, unless an earlier task on this node fetched them already) as Samples."""
        from edgefg.calibration.dataset import Sample
        from edgefg.distributed.stream import bounded_map

        folder = cache_folder(self.digest)
        if not (folder / ".complete").is_file():
            source = source or RayChunkSource(self.node)
            tmp = Path(tempfile.mkdtemp(prefix=f".edgefg-images-{self.digest}.", dir=tempfile.gettempdir()))
            try:
                for _, handle in bounded_map(self.spans(), [None], source.submit, source.wait, self.in_flight):
                    source.get(handle).write(tmp)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _publish(tmp, folder)
        return [Sample(folder / packed_name(i, s.path), s.label) for i, s in enumerate(self.samples)]

    def relocate(self, scored, samples: list):
        """``scored`` (keyed by the original paths) re-keyed by the materialized ``samples``' paths."""
        return _relocate(scored, [s.path for s in self.samples], samples)
