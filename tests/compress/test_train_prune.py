"""The training loop (KD loss, checkpoints, resume after interruption) and structured pruning."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from edgefg.calibration.dataset import scan  # noqa: E402
from edgefg.compress.prune import PruneOptions, prune  # noqa: E402
from edgefg.compress.train import TrainConfig, kd_loss, train  # noqa: E402
from edgefg.manifest import Preprocess  # noqa: E402

SPEC = Preprocess(input_size=(64, 64), crop_pct=0.875, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)


def _model():
    torch.manual_seed(0)
    m = timm.create_model("test_efficientnet", num_classes=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # timm zero-initialises some BN weights: make every channel matter
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=g) * 0.8 + 0.6)
    return m


def test_kd_loss_is_hinton():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    T = 4.0
    p_t = torch.softmax(t / T, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(s / T, 1))).sum(1).mean()
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(kd_loss(s, t, y, T, 0.7), 0.7 * T * T * kl + 0.3 * ce, atol=1e-5)
    assert torch.allclose(kd_loss(s, s, y, T, 1.0), torch.tensor(0.0), atol=1e-6)


def test_resume_after_interruption_matches_uninterrupted(tmp_path, image_folder):
    samples = scan(image_folder).samples
    cfg = dict(epochs=2, lr=1e-3, batch_size=6, augment=False, seed=0)

    straight = _model()
    train(straight, samples, SPEC, TrainConfig(**cfg, max_steps=3, checkpoint_dir=tmp_path / "a"))

    interrupted = _model()
    res1 = train(interrupted, samples, SPEC, TrainConfig(**cfg, max_steps=1, checkpoint_dir=tmp_path / "b", checkpoint_every=1))
    assert res1.steps == 1
    state = json.loads((tmp_path / "b" / "state.json").read_text())
    assert state["step"] == 1 and {p.name for p in (tmp_path / "b").iterdir()} == {"state.json", "model.safetensors", "optimizer.safetensors"}
    resumed = _model()  # a fresh process: starts from the original weights, then finds the checkpoint
    res2 = train(resumed, samples, SPEC, TrainConfig(**cfg, max_steps=3, checkpoint_dir=tmp_path / "b"))
    assert res2.resumed_from_step == 1 and res2.steps == 3
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), k


def test_training_changes_only_trainable_params(image_folder):
    m = _model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    res = train(m, scan(image_folder).samples, SPEC, TrainConfig(max_steps=1, batch_size=4), trainable=["classifier."])
    assert res.trainable_params == sum(p.numel() for p in m.classifier.parameters())
    after = m.state_dict()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert torch.equal(before["conv_stem.weight"], after["conv_stem.weight"])


def test_prune_cnn_really_smaller():
    m = _model()
    info = prune(m, (64, 64), PruneOptions(0.3))
    assert info["params_after"] < 0.8 * info["params_before"] and info["macs_after"] < 0.8 * info["macs_before"]
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_prune_vit_heads_and_mlp():
    torch.manual_seed(0)
    m = timm.create_model("test_vit", num_classes=3, img_size=64).eval()
    heads = [b.attn.num_heads for b in m.blocks]
    hidden = [b.mlp.fc1.out_features for b in m.blocks]
    info = prune(m, (64, 64), PruneOptions(0.5))
    assert [b.attn.num_heads for b in m.blocks] == [h // 2 for h in heads]
    assert all(b.mlp.fc1.out_features < h for b, h in zip(m.blocks, hidden))
    assert m.embed_dim == m.blocks[0].norm1.normalized_shape[0]  # residual width untouched
    assert info["params_after"] < info["params_before"]
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_frozen_batchnorm_keeps_running_statistics(image_folder):
    samples = scan(image_folder).samples
    for freeze in (True, False):
        m = _model()
        before = m.bn1.running_mean.clone()
        train(m, samples, SPEC, TrainConfig(max_steps=1, batch_size=4, freeze_bn=freeze))
        assert torch.equal(before, m.bn1.running_mean) == freeze


def test_fresh_layers_learn_batchnorm_statistics(image_folder):
    """CLCA's aggregation head is new: its BatchNorms must learn statistics even when the whole
    model trains (trainable=None); without the ``fresh_prefixes`` mark they would stay frozen."""
    import timm

    from edgefg.compress.tokens import TokenOptions, build_token_vit

    spec = Preprocess(input_size=(32, 32), crop_pct=1.0, interpolation="bilinear", mean=(0.5,) * 3, std=(0.25,) * 3)
    for fresh in (True, False):
        torch.manual_seed(0)
        wrapped = build_token_vit(timm.create_model("test_vit", num_classes=2, img_size=32), TokenOptions(keep=0.5, method="evit", at=[1], clca=True))
        if not fresh:
            wrapped.fresh_prefixes = ()
        bns = [m for m in wrapped.cla_head.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
        before = [b.running_mean.clone() for b in bns]
        train(wrapped, scan(image_folder).samples, spec, TrainConfig(max_steps=1, batch_size=4))
        assert bns and all(torch.equal(b0, b.running_mean) != fresh for b0, b in zip(before, bns))


def test_global_ratios_and_batchnorm_recalibration(image_folder):
    """Global pruning ranks all layers together (uneven per-layer ratios); after pruning, BatchNorm
    statistics are re-estimated on the user's images, which matches them to the pruned network."""
    from edgefg.calibration.dataset import iter_batches
    from edgefg.compress.prune import recalibrate_bn

    x = torch.from_numpy(next(iter_batches(scan(image_folder).samples, SPEC, 64)).x)
    y = torch.zeros(len(x), dtype=torch.long)
    uniform, glob = _model(), _model()
    prune(uniform, (64, 64), PruneOptions(0.3, importance="magnitude", bn_recalibrate=False))
    info = prune(glob, (64, 64), PruneOptions(0.3, importance="taylor", global_pruning=True), (x, y))
    assert info["ratios"].startswith("global") and "bn_recalibrated_layers" in info  # kept only when it lowers the loss
    widths = lambda m: [c.out_channels for c in m.modules() if isinstance(c, torch.nn.Conv2d)]  # noqa: E731
    assert widths(glob) != widths(uniform)
    # recalibrated statistics are the batch statistics of the pruned network's activations
    m = _model()
    prune(m, (64, 64), PruneOptions(0.3, importance="magnitude", bn_recalibrate=False))
    assert recalibrate_bn(m, x, batch=len(x)) > 0
    feats = {}
    hook = m.bn1.register_forward_hook(lambda mod, inp, out: feats.setdefault("in", inp[0]))
    m.eval()
    with torch.no_grad():
        m(x)
    hook.remove()
    torch.testing.assert_close(m.bn1.running_mean, feats["in"].mean(dim=(0, 2, 3)), atol=1e-4, rtol=1e-4)


def test_iterative_recipe_is_prune_and_distil_three_times():
    from edgefg.compress.recipes import load_recipe

    _, steps = load_recipe("prune-iterative")
    assert [s["type"] for s in steps] == ["prune", "distil"] * 3


def test_batchnorm_recalibration_is_kept_only_when_it_helps(image_folder):
    """Identity BatchNorms of a BN-folded checkpoint are part of its weights: re-estimating them from
    data would change the network, so the re-calibration is refused when it raises the loss."""
    from edgefg.calibration.dataset import iter_batches
    from edgefg.compress.prune import recalibrate_bn_if_better

    b = next(iter_batches(scan(image_folder).samples, SPEC, 64))
    x, y = torch.from_numpy(b.x), torch.from_numpy(b.labels).long()
    m = _model()
    with torch.no_grad():
        before_out = m.eval()(x)
        bn_before = m.bn1.running_mean.clone()
        n = recalibrate_bn_if_better(m, x, y)
        after = torch.nn.functional.cross_entropy(m.eval()(x), y)
    before = torch.nn.functional.cross_entropy(before_out, y)
    assert after <= before + 1e-6
    assert (n > 0) == (not torch.equal(bn_before, m.bn1.running_mean))


def test_training_device_errors_are_clear():
    from edgefg.compress.train import resolve_device
    from edgefg.errors import UnsupportedError

    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(UnsupportedError, match="unknown training device 'gpu0'"):
        resolve_device("gpu0")
    with pytest.raises(UnsupportedError, match="not supported"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(UnsupportedError, match="sees no CUDA GPU") as err:
            resolve_device("cuda")
        assert "--device" in err.value.hint


def test_training_precision_choices_and_refusals(monkeypatch):
    from edgefg.compress import train as train_mod
    from edgefg.errors import UnsupportedError

    tp = train_mod.training_precision
    assert tp("auto", "cpu") is False and tp("auto", "cuda:0") is True and tp("fp32", "cuda") is False and tp("bf16", "cuda") is True
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(UnsupportedError, match="without native bfloat16") as err:
        tp("bf16", "cpu")
    assert "--train-precision fp32" in err.value.hint
    monkeypatch.setattr(train_mod, "cpu_has_native_bf16", lambda: True)
    assert tp("bf16", "cpu") is True
    with pytest.raises(UnsupportedError, match="unknown training precision 'fp16'"):
        tp("fp16", "cpu")


@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_training_in_channels_last_hands_back_default_layout_and_learns(image_folder, amp):
    """Training runs NHWC (and under bf16 autocast when asked); the model and teacher come back in the default
    layout, float32, so safetensors/ONNX export need no conversion, and the training loss falls."""
    from safetensors.torch import save

    samples = scan(image_folder).samples
    m, teacher = _model(), _model()
    cfg = TrainConfig(epochs=6, batch_size=4, lr=3e-3, amp=amp, augment=False, freeze_bn=False)
    res = train(m, samples, SPEC, cfg, teacher=teacher)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    for mod in (m, teacher):
        for name, t in mod.state_dict().items():
            assert t.is_contiguous(), name
            assert not t.is_floating_point() or t.dtype == torch.float32, name
    save(dict(m.state_dict()))  # would raise on a non-contiguous (NHWC) weight


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run where one is lent)")
def test_training_and_pruning_on_cuda_match_the_cpu_contract(image_folder):
    samples = scan(image_folder).samples
    m, teacher = _model(), _model()
    res = train(m, samples, SPEC, TrainConfig(max_steps=2, batch_size=4, device="cuda", amp=True), teacher=teacher)
    assert res.steps == 2
    assert next(m.parameters()).device.type == "cpu" and next(teacher.parameters()).device.type == "cpu"  # handed back where they were
    m.cuda()
    x = torch.randn(8, 3, 64, 64)
    desc = prune(m, (64, 64), PruneOptions(0.3, importance="taylor", iterative_steps=2), (x, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])))
    assert desc["params_after"] < desc["params_before"] and next(m.parameters()).device.type == "cuda"


def test_pruned_model_rebuilds_from_shapes_and_a_plain_state_dict():
    from edgefg.compress.prune import apply_shapes, pruned_shapes
    from edgefg.errors import UnsupportedError

    m = _model()
    prune(m, (64, 64), PruneOptions(0.4, round_to=4))
    shapes = json.loads(json.dumps(pruned_shapes(m)))  # survives JSON
    rebuilt = _model()
    assert pruned_shapes(rebuilt) != shapes
    apply_shapes(rebuilt, shapes)
    rebuilt.load_state_dict(m.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(rebuilt.eval()(x), m.eval()(x), atol=1e-5)
    with pytest.raises(UnsupportedError, match="lacks"):
        apply_shapes(_model(), {"no.such.layer": [1]})
    with pytest.raises(UnsupportedError, match="not 3 positive integers"):  # a hand-edited config.json
        apply_shapes(_model(), {"conv_stem": [3, "8"]})


def test_distillation_leaves_the_teacher_as_it_was(image_folder):
    import copy

    teacher = _model()
    train(_model(), scan(image_folder).samples, SPEC, TrainConfig(max_steps=1, batch_size=4), teacher=teacher)
    assert all(p.requires_grad for p in teacher.parameters())  # a copy of the teacher can be pruned/trained next
    student = copy.deepcopy(teacher)
    desc = prune(student, (64, 64), PruneOptions(0.2, importance="taylor", iterative_steps=1), (torch.randn(6, 3, 64, 64), torch.tensor([0, 1, 2] * 2)))
    assert desc["params_after"] < desc["params_before"]
