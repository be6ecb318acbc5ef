"""OpenVINO GPU/NPU targets: deploy works on a machine without them (static batch for NPU), and
running says the device is absent and how to use the CPU instead."""
from __future__ import annotations

import numpy as np
import pytest

ov = pytest.importorskip("openvino")

from edgefg.errors import UnsupportedError  # noqa: E402
from edgefg.manifest import load_manifest  # noqa: E402
from edgefg.runtime.engine.bundle import LoadedBundle  # noqa: E402


@pytest.fixture(scope="module")
def device_bundles(tiny_artifacts, tmp_path_factory):
    from edgefg.deploy import deploy

    root = tmp_path_factory.mktemp("ov-devices")
    return {t: deploy(tiny_artifacts["int8"], t, root / t).directory for t in ("intel-gpu", "intel-npu")}


def test_npu_bundle_has_static_batch(device_bundles):
    m = load_manifest(device_bundles["intel-npu"])
    assert m.inputs[0].shape == [1, 3, 64, 64] and m.outputs[0].shape == [1, 3]
    assert m.backend_options["device"] == "NPU"
    model = ov.Core().read_model(str(device_bundles["intel-npu"] / "model.xml"))
    assert model.inputs[0].get_partial_shape().is_static and list(model.inputs[0].get_shape()) == [1, 3, 64, 64]
    assert m.parity["cosine_min"] > 0.999
    gpu = load_manifest(device_bundles["intel-gpu"])
    assert gpu.inputs[0].shape[0] == "batch" and gpu.backend_options["device"] == "GPU"


@pytest.mark.parametrize("target,device", [("intel-gpu", "GPU"), ("intel-npu", "NPU")])
def test_absent_device_is_a_clear_error_and_cpu_fallback_works(device_bundles, tiny_bundles, monkeypatch, target, device):
    if any(d.split(".")[0] == device for d in ov.Core().available_devices):
        pytest.skip(f"this machine has an OpenVINO {device}")
    monkeypatch.delenv("EDGEFG_OPENVINO_DEVICE", raising=False)
    with pytest.raises(UnsupportedError, match=f"OpenVINO device '{device}' is not present") as err:
        LoadedBundle(device_bundles[target])
    assert "EDGEFG_OPENVINO_DEVICE=CPU" in err.value.hint
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    monkeypatch.setenv("EDGEFG_OPENVINO_DEVICE", "CPU")
    with LoadedBundle(device_bundles[target]) as b, LoadedBundle(tiny_bundles["int8-intel-cpu"]) as cpu:
        assert b.backend.device == "CPU"
        np.testing.assert_allclose(b.scores(x), cpu.scores(x), atol=1e-4)  # batch 3 on the NPU's batch-1 IR: split
    monkeypatch.setenv("EDGEFG_OPENVINO_DEVICE", device)
    with LoadedBundle(device_bundles[target], device="CPU") as b:  # an explicit option wins over the variable
        assert b.backend.device == "CPU"
