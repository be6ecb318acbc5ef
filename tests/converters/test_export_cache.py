"""An unchanged input model is exported to ONNX once (edgefg/converters/torch_to_onnx.py)."""

import pytest

torch = pytest.importorskip("torch")


def test_second_export_of_the_same_model_is_reused_and_a_changed_one_is_not(tmp_path, monkeypatch):
    import timm

    from edgefg.converters import torch_to_onnx as t2o

    monkeypatch.setenv("EDGEFG_CACHE", str(tmp_path / "cache"))
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    calls = []
    real = t2o.export_onnx
    monkeypatch.setattr(t2o, "export_onnx", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = t2o.export_onnx_cached(model, (64, 64), tmp_path / "a.onnx")
    second = t2o.export_onnx_cached(model, (64, 64), tmp_path / "b.onnx")
    assert len(calls) == 1 and first.read_bytes() == second.read_bytes()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # other weights: another model
    t2o.export_onnx_cached(model, (64, 64), tmp_path / "c.onnx")
    t2o.export_onnx_cached(model, (48, 48), tmp_path / "d.onnx")  # another input size
    assert len(calls) == 3 and len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 3
    monkeypatch.setenv("EDGEFG_CACHE", "off")
    t2o.export_onnx_cached(model, (64, 64), tmp_path / "e.onnx")
    assert len(calls) == 4
