"""The ONNX export cache trusts nothing it reads back (issue 26, class 6): an entry is reused only
when its sha256 matches the one recorded when it was stored and it reproduces the model's outputs;
otherwise it is discarded with a warning and exported again."""
import json
import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    import timm

    from edgefg.converters import torch_to_onnx as t2o

    monkeypatch.setenv("EDGEFG_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    calls = []
    real = t2o.export_onnx
    monkeypatch.setattr(t2o, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    t2o.export_onnx_cached(model, (64, 64), tmp_path / "first.onnx")
    (entry,) = (tmp_path / "cache" / "onnx").glob("*.onnx")
    meta = json.loads(entry.with_suffix(".json").read_text())
    assert calls == [1] and meta["sha256"] == t2o._sha256(entry.read_bytes())
    return t2o, model, entry, calls


def outputs_match(model, path):
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        want = model(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return np.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_an_intact_entry_is_reused(setup, tmp_path):
    t2o, model, entry, calls = setup
    out = t2o.export_onnx_cached(model, (64, 64), tmp_path / "again.onnx")
    assert calls == [1] and out.read_bytes() == entry.read_bytes() and outputs_match(model, out)


@pytest.mark.parametrize("damage", ["flipped bytes", "no sha256 record"])
def test_a_modified_entry_is_discarded_and_rebuilt(setup, tmp_path, caplog, damage):
    t2o, model, entry, calls = setup
    if damage == "flipped bytes":
        data = bytearray(entry.read_bytes())
        data[len(data) // 2 : len(data) // 2 + 16] = bytes(b ^ 0xFF for b in data[len(data) // 2 : len(data) // 2 + 16])
        entry.write_bytes(bytes(data))
    else:
        entry.with_suffix(".json").unlink()
    with caplog.at_level(logging.INFO, logger="edgefg.converters.torch_to_onnx"):
        out = t2o.export_onnx_cached(model, (64, 64), tmp_path / "rebuilt.onnx")
    assert calls == [1, 1]
    warned = [r for r in caplog.records if r.levelno == logging.WARNING and "discarding the cached ONNX export" in r.getMessage()]
    assert len(warned) == 1 and not any("reusing" in r.getMessage() for r in caplog.records)
    assert outputs_match(model, out)
    assert json.loads(entry.with_suffix(".json").read_text())["sha256"] == t2o._sha256(entry.read_bytes())  # stored afresh


def test_another_valid_model_with_a_matching_record_fails_the_parity_check(setup, tmp_path, caplog):
    """Whoever can write the cache can also write the record: the export must still reproduce torch."""
    t2o, model, entry, calls = setup
    import copy

    other = copy.deepcopy(model)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.0)
    t2o.export_onnx_cached(other, (64, 64), tmp_path / "other.onnx")
    assert calls == [1, 1]
    forged = (tmp_path / "other.onnx").read_bytes()
    entry.write_bytes(forged)
    entry.with_suffix(".json").write_text(json.dumps({"sha256": t2o._sha256(forged)}))
    assert not outputs_match(model, entry)  # the forged entry really is another model
    with caplog.at_level(logging.WARNING, logger="edgefg.converters.torch_to_onnx"):
        out = t2o.export_onnx_cached(model, (64, 64), tmp_path / "rebuilt.onnx")
    assert calls == [1, 1, 1]
    assert any("does not match the model" in r.getMessage() for r in caplog.records)
    assert outputs_match(model, out)
