"""Our own logic around Ray, without Ray: shipping bundles/images as bytes, chunking, the worker's start command."""
from __future__ import annotations

import json

from edgefg.calibration.dataset import Sample
from edgefg.distributed.shipping import PackedSamples, pack_dir, unpack_dir
from edgefg.distributed.validate import chunks
from edgefg.distributed.worker import ray_start_command, worker_env
from edgefg.validate.evaluate import Scored


def test_bundle_round_trip(tmp_path):
    src = tmp_path / "b"
    (src / "sub").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "sub" / "model.bin").write_bytes(b"\x00\x01" * 100)
    out = unpack_dir(pack_dir(src), tmp_path / "out")
    assert (out / "manifest.json").read_text() == "{}" and (out / "sub" / "model.bin").read_bytes() == b"\x00\x01" * 100


def test_packed_samples_materialize_once_and_relocate_reference(image_folder):
    samples = [Sample(p, i % 3) for i, p in enumerate(sorted(image_folder.rglob("*.jpg"))[:5])]
    packed = PackedSamples.from_samples(samples)
    local = packed.materialize()
    again = packed.materialize()  # same content → same node-local folder
    assert [s.path for s in local] == [s.path for s in again] and [s.label for s in local] == [s.label for s in samples]
    assert all(a.path.read_bytes() == b.path.read_bytes() for a, b in zip(local, samples))
    ref = Scored(None, None, [s.path for s in samples[1:]], [samples[0].path])
    moved = packed.relocate(ref, local)
    assert moved.paths == [s.path for s in local[1:]] and moved.skipped == [local[0].path]


def test_chunks_are_batch_aligned_and_cover_everything():
    spans = chunks(21, 8, 10)
    assert spans == [(0, 8), (8, 16), (16, 21)]
    assert chunks(5, 8, 256) == [(0, 5)]


def test_worker_command_advertises_target_and_sets_threads():
    cmd = ray_start_command("10.0.0.1:6379", "rpi5", 4)
    res = json.loads(next(c for c in cmd if c.startswith("--resources=")).split("=", 1)[1])
    assert res == {"edgefg-timing": 1, "edgefg-target:rpi5": 1}
    assert "--address=10.0.0.1:6379" in cmd and "--num-cpus=4" in cmd and "--block" in cmd and cmd[1:4] == ["-m", "ray.scripts.scripts", "start"]
    env = worker_env(4, {})
    assert env["OMP_NUM_THREADS"] == env["EDGEFG_NUM_THREADS"] == "4" and env["EDGEFG_OPENVINO_CPU_PINNING"] == "0"


def test_openvino_pinning_off_under_edgefg_worker(tiny_bundles, monkeypatch):
    from edgefg.runtime.engine.bundle import LoadedBundle

    bundle = tiny_bundles["fp32-intel-cpu"]
    with LoadedBundle(bundle) as m:
        default = m.backend.compiled.get_property("ENABLE_CPU_PINNING")
    monkeypatch.setenv("EDGEFG_OPENVINO_CPU_PINNING", "0")  # what `edgefg worker` exports
    with LoadedBundle(bundle, num_threads=1) as m:
        assert m.backend.compiled.get_property("ENABLE_CPU_PINNING") is False
        assert m.backend.compiled.get_property("INFERENCE_NUM_THREADS") == 1
    assert isinstance(default, bool)
