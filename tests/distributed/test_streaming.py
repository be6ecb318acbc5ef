"""Validation streams images: in-process a batch at a time, on Ray a bounded number of chunks in
flight (a fake Ray here; tests/tune/test_ray.py runs the real one). The JSON is the same as a
computation that reads the whole set at once, corrupt images included."""
from __future__ import annotations

import dataclasses
import json
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from edgefg.calibration.dataset import Sample
from edgefg.distributed import validate as dist_validate
from edgefg.distributed.shipping import PackedSamples, StreamedSamples, content_digest
from edgefg.distributed.stream import bounded_map
from edgefg.validate.api import validate
from edgefg.validate.evaluate import score_samples


class Handle:
    def __init__(self, worker, item):
        self.worker, self.item = worker, item


def test_bounded_map_keeps_slots_and_submits_lazily():
    rng = random.Random(3)
    pulled, finished, per_worker_live, max_live = [], [], Counter(), Counter()

    def items():
        for i in range(23):
            assert len(pulled) - len(finished) <= 3 * 2, "an item was made before a slot was free"
            pulled.append(i)
            yield i

    def submit(worker, item):
        per_worker_live[worker] += 1
        max_live[worker] = max(max_live[worker], per_worker_live[worker])
        return Handle(worker, item)

    def wait(handles):
        done = rng.choice(handles)  # completion in any order
        per_worker_live[done.worker] -= 1
        finished.append(done.item)
        return done

    out = [(i, h.item) for i, h in bounded_map(items(), ["a", "b", "c"], submit, wait, per_worker=2)]
    assert sorted(i for i, _ in out) == list(range(23)) and all(i == item for i, item in out)
    assert max(max_live.values()) == 2 and set(max_live) == {"a", "b", "c"}
    assert [i for i, _ in out] != list(range(23))  # out of order really happened, and each index still names its item


def test_bounded_map_rejects_bad_settings():
    with pytest.raises(ValueError, match="per_worker must be ≥ 1"):
        list(bounded_map([1], ["w"], lambda w, i: i, lambda h: h[0], per_worker=0))
    with pytest.raises(ValueError, match="at least one worker"):
        list(bounded_map([1], [], lambda w, i: i, lambda h: h[0]))


# -- a fake Ray: actor calls run when waited on, so "submitted, not finished" is real ------------
class FakeRef:
    def __init__(self, fn=None, value=None, chunk: bool = False):
        self.fn, self.value, self.done, self.chunk = fn, value, fn is None, chunk


class FakeRay:
    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.live_chunks = 0  # chunk tasks submitted and not yet run (their images are in flight)
        self.max_live_chunks = 0
        self.per_actor: Counter = Counter()
        self.max_per_actor = 0
        self.leftovers: list[list[str]] = []

    def _run(self, ref: FakeRef):
        if not ref.done:
            ref.value, ref.done = ref.fn(), True
            if ref.chunk:
                self.live_chunks -= 1
        return ref.value

    def _resolve(self, args):
        return [self._run(a) if isinstance(a, FakeRef) else a for a in args]

    def put(self, value):
        return FakeRef(value=value)

    def get(self, refs, timeout=None):
        return [self._run(r) for r in refs] if isinstance(refs, list) else self._run(refs)

    def wait(self, refs, num_returns=1):
        ready = [r for r in refs if r.done] or [self.rng.choice(refs)]
        self._run(ready[0])
        return ready[:1], [r for r in refs if r is not ready[0]]

    def kill(self, actor):
        pass

    def remote(self, **_options):
        return lambda cls: FakeActorClass(self, cls)


class FakeActorClass:
    def __init__(self, ray: FakeRay, cls):
        self.ray, self.cls = ray, cls

    def remote(self, *args):
        return FakeActor(self.ray, self.cls(*self.ray._resolve(args)))


class FakeActor:
    def __init__(self, ray: FakeRay, instance):
        self.ray, self.instance = ray, instance

    def __getattr__(self, name):
        ray, instance, actor = self.ray, self.instance, self

        class Method:
            @staticmethod
            def remote(*args):
                if name != "score":
                    return FakeRef(value=getattr(instance, name)(*ray._resolve(args)))

                def run():
                    ray.per_actor[id(actor)] -= 1
                    value = instance.score(*ray._resolve(args))
                    ray.leftovers.append([p.name for p in Path(instance.work).iterdir() if p.name.startswith("chunk-")])
                    return value

                ray.live_chunks += 1
                ray.per_actor[id(actor)] += 1
                ray.max_live_chunks = max(ray.max_live_chunks, ray.live_chunks)
                ray.max_per_actor = max(ray.max_per_actor, ray.per_actor[id(actor)])
                return FakeRef(run, chunk=True)

        return Method


@pytest.fixture
def data_with_corrupt(image_folder, tmp_path) -> Path:
    """The shared image folder plus an unreadable JPEG in the middle of the file order."""
    data = shutil.copytree(image_folder, tmp_path / "data")
    (data / "Least_Flycatcher" / "002b.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG")
    return data


def eager_scorer(bundle, samples, batch_size, description):
    """Today's non-streamed shape: every image read into memory first, then scored."""
    packed = PackedSamples.from_samples(samples)
    with tempfile.TemporaryDirectory() as folder:
        local = packed.write(folder)
        scored = score_samples(bundle, local, batch_size, description)
    back = {s.path: Path(o) for o, s in zip(packed.origins, local)}
    return dataclasses.replace(scored, paths=[back[p] for p in scored.paths], skipped=[back[p] for p in scored.skipped])


def test_streamed_validation_json_identical_and_corrupt_skipped(tiny_bundles, tiny_artifacts, data_with_corrupt, monkeypatch):
    fake = FakeRay(seed=1)
    monkeypatch.setenv("EDGEFG_NUM_THREADS", "1")  # what a ShardScorer sets in its (here: this) process; restored after
    monkeypatch.setattr(dist_validate, "connect", lambda address: (fake, False))
    monkeypatch.setattr(dist_validate.ShardScorer, "node", lambda self: "node-0")
    bundle, ref = tiny_bundles["int8-onnxruntime-cpu"], tiny_artifacts["fp32"]
    kwargs = {"reference": ref, "batch_size": 2}
    streamed = validate(bundle, data_with_corrupt, **kwargs)  # in-process: batch by batch from disk
    eager = validate(bundle, data_with_corrupt, scorer=eager_scorer, **kwargs)
    sharded = validate(bundle, data_with_corrupt, scorer=dist_validate.RayScorer("fake", workers=2, chunk_images=4, per_actor=2), **kwargs)
    text = json.dumps(streamed, indent=2, default=str)
    assert text == json.dumps(eager, indent=2, default=str) == json.dumps(sharded, indent=2, default=str)
    assert streamed["skipped_corrupt"] == 1 and streamed["images"] == 18 and streamed["class_drops"]
    # 19 files in chunks of 4 → 5 chunks per scoring; never more than 2 per actor, 4 in all, in flight
    assert fake.max_per_actor == 2 and fake.max_live_chunks == 4 and fake.live_chunks == 0
    assert len(fake.leftovers) == 10 and not any(fake.leftovers)  # each chunk's files deleted once scored


def test_in_process_validation_holds_one_batch_of_images(tiny_bundles, image_folder, monkeypatch):
    import edgefg.calibration.dataset as dataset
    from edgefg.runtime.engine.bundle import LoadedBundle

    decoded, scored, window = [0], [0], []
    read, scores = dataset.read_image, LoadedBundle.scores

    def counting_read(path, *a, **k):
        decoded[0] += 1
        window.append(decoded[0] - scored[0])
        return read(path, *a, **k)

    def counting_scores(self, x):
        scored[0] += len(x)
        return scores(self, x)

    monkeypatch.setattr(dataset, "read_image", counting_read)
    monkeypatch.setattr(LoadedBundle, "scores", counting_scores)
    res = validate(tiny_bundles["fp32-onnxruntime-cpu"], image_folder, batch_size=4)
    assert res["images"] == decoded[0] == scored[0] == 18 and max(window) == 4


def test_streamed_samples_arrive_chunk_by_chunk_and_once(image_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the node-local cache of this test
    samples = [Sample(p, i % 3) for i, p in enumerate(sorted(image_folder.rglob("*.jpg")))]
    streamed = StreamedSamples.from_samples(samples, "node-0", chunk_images=4, in_flight=2)
    assert streamed.digest == content_digest(samples) == PackedSamples.from_samples(samples).digest  # same cache folder as before

    class Source:
        def __init__(self):
            self.live, self.max_live, self.calls = 0, 0, 0

        def submit(self, _worker, span):
            self.live, self.calls = self.live + 1, self.calls + 1
            self.max_live = max(self.max_live, self.live)
            return Handle(None, span)

        def wait(self, handles):
            self.live -= 1
            return handles[-1]  # the newest first: files land out of order

        def get(self, handle):
            return PackedSamples.from_samples(handle.item[1], handle.item[0])

    source = Source()
    local = streamed.materialize(source)
    assert source.calls == 5 and source.max_live == 2
    assert [s.label for s in local] == [s.label for s in samples]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(local, samples))
    again = Source()
    assert streamed.materialize(again) == local and again.calls == 0  # cached on this node: nothing fetched again
    from edgefg.validate.evaluate import Scored

    moved = streamed.relocate(Scored(None, None, [s.path for s in samples[1:]], [samples[0].path]), local)
    assert moved.paths == [s.path for s in local[1:]] and moved.skipped == [local[0].path]


def test_streamed_samples_reject_bad_sizes(image_folder):
    with pytest.raises(ValueError, match="chunk_images and in_flight must be ≥ 1"):
        StreamedSamples.from_samples([], "n", chunk_images=0)
