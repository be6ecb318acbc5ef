"""``edgefg validate --ray``: the image list sharded over actors that each load the bundle once.

Chunks are contiguous and a multiple of the batch size, so every actor sees the same batches the
in-process run would; their scores are put back in file order and go through the same metrics
code (:func:`edgefg.validate.api.validate`), so the JSON is that of the in-process run. Images and
the bundle travel as bytes through Ray's object store: the actors need no shared file system.
Chunks are read from disk and packed only when an actor has a free slot (:func:`bounded_map`, two
per actor), so the driver and the object store hold a bounded window of images, never the set; an
actor deletes each chunk's files once it has scored them.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgefg.distributed.cluster import connect
from edgefg.distributed.shipping import PackedSamples, pack_dir, unpack_dir
from edgefg.distributed.stream import PER_WORKER, bounded_map, ray_wait_one
from edgefg.validate.evaluate import Scored, score_samples

log = logging.getLogger(__name__)
CHUNK_IMAGES = 256


class ShardScorer:
    """A Ray actor: unpacks one bundle, opens it once (single-threaded), scores chunks of images."""

    def __init__(self, packed_bundle: bytes, manifest, threads: int = 1):
        from edgefg.manifest import load_manifest
        from edgefg.runtime.engine.bundle import LoadedBundle

        os.environ["EDGEFG_NUM_THREADS"] = str(threads)
        self.work = tempfile.mkdtemp(prefix="edgefg-shard-")
        unpack_dir(packed_bundle, self.work)
        load_manifest(self.work, verify=True)  # the shipped files match their sha256
        # the caller's manifest: it may run the model file with a stand-in backend
        self.bundle = LoadedBundle(self.work, verify=False, manifest=manifest, num_threads=threads)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def score(self, chunk: PackedSamples, batch_size: int) -> dict:
        """Scores of one chunk, its rows (indices into the chunk) in order; its files are removed after."""
        with tempfile.TemporaryDirectory(prefix="chunk-", dir=self.work) as folder:
            samples = chunk.write(folder)
            scored = score_samples(self.bundle, samples, batch_size, "shard")
        index = {s.path: i for i, s in enumerate(samples)}
        return {"scores": scored.scores, "labels": scored.labels, "rows": [index[p] for p in scored.paths],
                "skipped": [index[p] for p in scored.skipped]}

    def close(self) -> None:
        self.bundle.close()
        shutil.rmtree(self.work, ignore_errors=True)


def chunks(n: int, batch_size: int, size: int = CHUNK_IMAGES) -> list[tuple[int, int]]:
    step = max(batch_size, (size // batch_size) * batch_size)
    return [(i, min(i + step, n)) for i in range(0, n, step)]


class RayScorer:
    """A :data:`edgefg.validate.api.Scorer` that shards over ``workers`` actors (default: the cluster's CPUs)."""

    def __init__(self, address: str, workers: int | None = None, chunk_images: int = CHUNK_IMAGES, per_actor: int = PER_WORKER):
        if chunk_images < 1 or per_actor < 1:
            raise ValueError(f"chunk_images and per_actor must be ≥ 1, got {chunk_images} and {per_actor}")
        self.ray, self._owned = connect(address)
        self.chunk_images, self.per_actor = chunk_images, per_actor
        self.workers = workers or max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        self.nodes: list[str] = []

    def __call__(self, bundle, samples: Sequence, batch_size: int, description: str) -> Scored:
        if not samples:
            return score_samples(bundle, samples, batch_size, description)
        batch_size = 1 if bundle.backend.static_batch == 1 else batch_size
        if not (bundle.directory / "manifest.json").is_file():  # a bare .onnx reference: its folder may be anything
            return score_samples(bundle, samples, batch_size, description)
        ray = self.ray
        actor_cls = ray.remote(num_cpus=1)(ShardScorer)
        packed = ray.put(pack_dir(bundle.directory))
        spans = chunks(len(samples), batch_size, self.chunk_images)
        n = min(self.workers, len(spans))
        actors = [actor_cls.remote(packed, bundle.manifest) for _ in range(n)]
        try:
            self.nodes = sorted(set(ray.get([a.node.remote() for a in actors])))
            parts: list[dict | None] = [None] * len(spans)

            def submit(actor, span: tuple[int, int]):  # the chunk is read from disk only now
                return actor.score.remote(PackedSamples.from_samples(samples[span[0]:span[1]], span[0]), batch_size)

            for i, ref in bounded_map(spans, actors, submit, ray_wait_one(ray), self.per_actor):
                parts[i] = ray.get(ref)
        finally:
            try:
                ray.get([a.close.remote() for a in actors], timeout=30)
            except Exception:  # noqa: BLE001 - best effort: the temp folders are per actor
                pass
            for a in actors:
                ray.kill(a)
        log.info("%s: %d images in %d chunk(s) over %d actor(s) on %d node(s)", description, len(samples), len(spans), n, len(self.nodes))
        scores, labels, paths, skipped = [], [], [], []
        for (start, _), part in zip(spans, parts):
            scores.append(part["scores"])
            labels.append(part["labels"])
            paths += [Path(samples[start + r].path) for r in part["rows"]]
            skipped += [Path(samples[start + r].path) for r in part["skipped"]]
        return Scored(np.concatenate(scores), np.concatenate(labels), paths, skipped)

    def close(self) -> None:
        if self._owned and self.ray.is_initialized():
            self.ray.shutdown()
