"""ViT token reduction (EViT / ToMe / CLCA) and ILA adapters: correctness on timm's test_vit."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from edgefg.compress.adapters import AdapterOptions, build_ila_vit, describe, trainable_prefixes  # noqa: E402
from edgefg.compress.tokens import TokenOptions, attention, build_token_vit, tome_merge  # noqa: E402
from edgefg.errors import UnsupportedError  # noqa: E402


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return timm.create_model("test_vit", num_classes=3, img_size=64).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("method", ["evit", "tome"])
def test_keep_rate_one_equals_original(vit, x, method):
    wrapped = build_token_vit(vit, TokenOptions(keep=1.0, method=method))
    with torch.no_grad():
        assert torch.allclose(wrapped(x), vit(x), atol=1e-5)


@pytest.mark.parametrize("method,keep", [("evit", 0.5), ("tome", 0.5), ("evit", 0.7), ("tome", 0.7)])
def test_static_keep_counts(vit, x, method, keep):
    wrapped = build_token_vit(vit, TokenOptions(keep=keep, method=method, at=[1, 3]))
    n = 16  # 64 px / patch 16 → 4×4 patches
    for _b in (1, 3):
        target = math.ceil(keep * n)
        n = target + 1 if method == "evit" else target  # EViT adds one fused token
    assert wrapped.final_tokens == n
    seen = []
    handle = vit.norm.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    with torch.no_grad():
        out = wrapped(x)
    handle.remove()
    assert out.shape == (2, 3) and seen == [1 + n]
    with torch.no_grad():
        assert not torch.allclose(out, vit(x), atol=1e-4)  # it really changed the computation


def test_proportional_attention_with_unit_sizes_is_plain_attention(vit):
    attn = vit.blocks[0].attn
    t = torch.randn(2, 17, vit.embed_dim)
    with torch.no_grad():
        plain, _, _ = attention(attn, t)
        prop, _, _ = attention(attn, t, size=torch.ones(2, 17))
        assert torch.allclose(plain, prop, atol=1e-6)
        assert torch.allclose(plain, attn(t), atol=1e-5)  # equals timm's own (fused) attention
        bigger, _, _ = attention(attn, t, size=torch.rand(2, 17) * 3 + 1)
        assert not torch.allclose(plain, bigger, atol=1e-4)


def test_tome_merge_conserves_size_and_mass():
    torch.manual_seed(0)
    x = torch.randn(2, 17, 8)
    keys = torch.randn(2, 2, 17, 4)
    size = torch.ones(2, 17)
    y, s = tome_merge(x, keys, size, n_prefix=1, r=6)
    assert y.shape == (2, 11, 8) and s.shape == (2, 11)
    assert torch.allclose(s.sum(1), torch.full((2,), 17.0))  # merged sizes sum to N
    assert torch.allclose((y * s[..., None]).sum(1), x.sum(1), atol=1e-5)  # size-weighted average keeps the sum
    assert torch.equal(y[:, 0], x[:, 0])  # CLS untouched
    y2, s2 = tome_merge(y, torch.randn(2, 2, 11, 4), s, 1, 4)
    assert torch.allclose(s2.sum(1), torch.full((2,), 17.0))


def test_clca_starts_as_reduced_model_and_trains(vit, x):
    plain = build_token_vit(vit, TokenOptions(keep=0.5, method="tome", at=[1, 3]))
    clca = build_token_vit(vit, TokenOptions(keep=0.5, method="tome", at=[1, 3], clca=True))
    assert clca.recovery == [1, 3, 4]
    assert clca.cla_head.conv1.kernel_size == (3,) and clca.cla_head.conv1.groups == vit.embed_dim
    with torch.no_grad():
        out = clca(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    clca.train()
    clca(x).sum().backward()
    assert clca.carrier.grad is not None and clca.cla_head.conv2.weight.grad.abs().sum() > 0
    clca.zero_grad()
    del plain


def test_unsupported_architecture_names_supported_families():
    cnn = timm.create_model("test_efficientnet", num_classes=3)
    with pytest.raises(UnsupportedError, match="vit_"):
        build_token_vit(cnn, TokenOptions())
    with pytest.raises(UnsupportedError, match="vit_"):
        build_ila_vit(cnn, AdapterOptions())


def test_tome_keep_below_half_is_refused(vit):
    with pytest.raises(UnsupportedError, match="half"):
        build_token_vit(vit, TokenOptions(keep=0.3, method="tome"))


def test_ila_adapters_shrink_the_grid_and_train_few_params(vit, x):
    big = timm.create_model("test_vit", num_classes=3, img_size=160).eval()
    wrapped = build_ila_vit(big, AdapterOptions(at=(1, 3)))
    info = describe(wrapped)
    assert info["final_grid"] == [6, 6] and info["params_trainable"] < 0.02 * info["params_total"]
    seen = []
    handle = big.blocks[4].register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    xb = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        out = wrapped(xb)
    handle.remove()
    assert out.shape == (2, 3) and seen == [1 + 36]
    assert trainable_prefixes(wrapped) == ["adapters.", "vit.head."]
    with pytest.raises(UnsupportedError, match="too small"):
        build_ila_vit(vit, AdapterOptions(at=(1, 3)))


def test_tome_clca_exports_and_runs_on_ort_and_openvino(vit, x, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    import numpy as np
    import onnxruntime as ort

    from edgefg.compress.tokens import check_runtimes, graph_ops
    from edgefg.converters.torch_to_onnx import export_onnx

    wrapped = build_token_vit(vit, TokenOptions(keep=0.5, method="tome", at=[1, 3], clca=True))
    path = export_onnx(wrapped, (64, 64), tmp_path / "m.onnx")
    ops = graph_ops(path)
    assert {"TopK", "GatherElements"} <= set(ops["indexing_ops"]) and "ScatterElements" not in ops["ops"]  # merge = one-hot MatMul
    import onnx

    from edgefg.tensorrt.lint import lint

    def unsupported(trt: str) -> set[str]:
        return {i.message.split()[1] for i in lint(onnx.load(str(path)), trt, static_shapes=False) if i.rule == "unsupported-op"}

    assert unsupported("10.3") == set()  # JetPack 6: every op of the graph is in the ONNX parser's table
    assert unsupported("8.5") == {"LayerNormalization"}  # JetPack 5: any opset-17+ ViT export, not the token reduction
    checks = check_runtimes(path, (64, 64))
    assert checks["onnxruntime"] == "ok" and checks["openvino"] == "ok" and checks["max_abs_diff_ort_vs_openvino"] < 1e-3
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xb = torch.cat([x, x.flip(0), x * 0.5])  # another batch size than the export's
    with torch.no_grad():
        ref = wrapped(xb).numpy()
    assert np.abs(sess.run(None, {"input": xb.numpy()})[0] - ref).max() < 1e-4


@pytest.mark.parametrize("method", ["evit", "tome"])
def test_token_reduced_vit_converts_to_litert(method):
    """The static token plan also lowers through litert-torch and runs in LiteRT (TopK, not a full
    sort with int64 indices; ToMe's merge without scatter): the rpi5 route is open to these models."""
    litert_torch = pytest.importorskip("litert_torch", reason="litert-torch is not installed (pip install 'edgefg[tflite-convert]')")
    import numpy as np

    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=3, img_size=32, dynamic_img_size=False).eval()
    wrapped = build_token_vit(vit, TokenOptions(keep=0.5, method=method, at=[1])).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = wrapped(x).numpy()
    assert np.abs(litert_torch.convert(wrapped, (x,))(x) - ref).max() < 1e-4
