"""The LiteRT backend: the input contract (dtype, shape, static batch 1), dequantized int8
outputs, clear errors for corrupt files, the tflite_runtime fallback, and run/bench without torch."""
import importlib
import json
import sys
import types

import numpy as np
import pytest

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.manifest import load_manifest
from tests.runtime.test_no_torch import device_edgefg as _edgefg

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'edgefg[tflite]')")


def test_int8_contract_static_batch_and_dequantized_scores(tflite_bundles):
    from edgefg.runtime.backends.base import open_backend

    bundle = tflite_bundles["int8"]
    m = load_manifest(bundle)
    x = np.random.default_rng(0).integers(-128, 128, size=(3, 64, 64, 3), dtype=np.int8)
    with open_backend(bundle, m, num_threads=1) as backend:
        assert backend.name == "tflite" and backend.static_batch == 1 and backend.num_threads == 1
        scores = backend.infer(x)  # 3 images through a batch-1 model
        raw = np.concatenate([backend._run(x[i : i + 1]) for i in range(3)])
        assert scores.shape == (3, 3) and scores.dtype == np.float32 and raw.dtype == np.int8
        out = m.outputs[0]
        assert np.allclose(scores, (raw.astype(np.float32) - out.quant_zero_point) * out.quant_scale)
        with pytest.raises(UnsupportedError, match="takes int8 input, got float32"):
            backend.infer(x.astype(np.float32))
        with pytest.raises(UnsupportedError, match=r"shape \[1, 64, 64, 3\]"):
            backend.infer(np.zeros((1, 3, 64, 64), np.int8))


def test_corrupt_or_truncated_model_is_a_clear_error(tflite_bundles, tmp_path):
    from edgefg.runtime.backends.tflite import TFLiteBackend, inspect_tflite

    m = load_manifest(tflite_bundles["fp32"])
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer" * 10)
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes((tflite_bundles["fp32"] / "model.tflite").read_bytes()[:2000])
    for bad in (garbage, truncated):
        with pytest.raises(ModelLoadError, match="LiteRT cannot load"):
            TFLiteBackend(bad, m)
        with pytest.raises(ModelLoadError, match="not a readable .tflite"):
            inspect_tflite(str(bad))


def test_falls_back_to_tflite_runtime_and_names_the_extra(monkeypatch, tflite_bundles):
    from ai_edge_litert.interpreter import Interpreter

    import edgefg.runtime.backends.tflite as mod

    fake = types.ModuleType("tflite_runtime.interpreter")
    fake.Interpreter = Interpreter  # same API; stands in for the old package on a device
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", types.ModuleType("tflite_runtime"))
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", fake)
    try:
        reloaded = importlib.reload(mod)
        assert reloaded.ENGINE == "tflite_runtime"
        m = load_manifest(tflite_bundles["fp32"])
        with reloaded.TFLiteBackend(tflite_bundles["fp32"] / m.model_file, m) as b:
            assert b.infer(np.zeros((2, 64, 64, 3), np.float32)).shape == (2, 3)
        monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
        with pytest.raises(MissingDependencyError, match=r"edgefg\[runtime-tflite\]"):
            importlib.reload(mod)
    finally:
        monkeypatch.undo()
        importlib.reload(mod)


def test_run_and_bench_an_int8_nhwc_bundle_without_torch(tflite_bundles, image_folder, tmp_path):
    bundle = tflite_bundles["int8"]
    r = _edgefg("run", bundle, "--source", image_folder, "--max-frames", 4, "--output", tmp_path / "o.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(row.get("label") or row.get("top") for row in rows), rows[:1]
    r = _edgefg("bench", bundle, "--rounds", 1, "--iters", 3, "--warmup", 1, "--json", tmp_path / "b.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "b.json").read_text())["results"][0]
    assert res["latency_ms"]["p50"] > 0 and res.get("backend", "tflite") == "tflite"
