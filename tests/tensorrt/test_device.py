"""GPU facts without pycuda: the device tree of a Jetson, nvidia-smi, the CUDA toolkit version, and
that every probe gives the same engine-key facts on a Jetson (the module, not "Orin (nvgpu)")."""
from __future__ import annotations

import subprocess
import types

import pytest

from edgefg.errors import UnsupportedError
from edgefg.tensorrt import device as dev
from edgefg.tensorrt.cache import detect_device
from tests.tensorrt.fakes import fake_pycuda, fake_tensorrt, install


def jetson_tree(root, compatible="nvidia,p3768-0000+p3767-0005\0nvidia,p3767-0005\0nvidia,tegra234\0",
                model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super\0", cuda='{"cuda": {"name": "CUDA SDK", "version": "12.6.68"}}'):
    dt = root / "device-tree"
    dt.mkdir(parents=True)
    (dt / "compatible").write_bytes(compatible.encode())
    (dt / "model").write_bytes(model.encode())
    home = root / "cuda"
    home.mkdir()
    (home / "version.json").write_text(cuda)
    (root / "nv_tegra_release").write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    return dev.SystemPaths(device_tree=dt, cuda_home=home, tegra_release=root / "nv_tegra_release")


def test_jetson_module_and_cuda_version_from_files(tmp_path):
    paths = jetson_tree(tmp_path)
    assert dev.jetson_module(paths) == ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", "p3767-0005", "tegra234")
    assert dev.cuda_toolkit_version(paths) == "12.6"
    (paths.cuda_home / "version.json").unlink()
    (paths.cuda_home / "version.txt").write_text("CUDA Version 10.2.300\n")  # JetPack 4
    assert dev.cuda_toolkit_version(paths) == "10.2"
    assert dev.jetson_module(dev.SystemPaths(device_tree=tmp_path / "none")) is None


def test_device_tree_probe_gives_the_same_key_facts_as_pycuda(tmp_path, monkeypatch):
    paths = jetson_tree(tmp_path)
    trt = fake_tensorrt("10.3.0")
    no_cuda = {"device-tree": dev.probe_device_tree}
    from_tree = detect_device(trt, dev.probe_gpu(0, paths, no_cuda), paths)
    assert (from_tree.compute_capability, from_tree.sm_count, from_tree.source) == ("8.7", None, "device-tree")
    install(monkeypatch, cuda=fake_pycuda(sm_count=8, name="Orin (nvgpu)"))
    from_pycuda = detect_device(trt, dev.probe_gpu(0, paths), paths)
    assert from_pycuda.source == "pycuda" and from_pycuda.sm_count == 8
    # the GPU name in the key is the module in both cases (pycuda says "Orin (nvgpu)" on every Orin)
    assert from_tree.gpu_name == from_pycuda.gpu_name == "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super [p3767-0005]"
    assert from_tree.cuda == from_pycuda.cuda == "12.6" and from_tree.l4t == "36.4.3"


def test_nvidia_smi_probe(monkeypatch):
    monkeypatch.setattr(dev.shutil, "which", lambda exe: "/usr/bin/nvidia-smi")

    def run(cmd, **kw):
        assert "--query-gpu=name,compute_cap" in cmd
        return types.SimpleNamespace(returncode=0, stdout="NVIDIA GeForce RTX 3060, 8.6\n")

    facts = dev.probe_nvidia_smi(0, run=run)
    assert (facts.name, facts.compute_capability, facts.sm_count, facts.source) == ("NVIDIA GeForce RTX 3060", "8.6", None, "nvidia-smi")
    old_driver = lambda cmd, **kw: types.SimpleNamespace(returncode=0, stdout="NVIDIA GeForce GTX 1080, [Not Supported]\n")  # noqa: E731
    assert dev.probe_nvidia_smi(0, run=old_driver) is None
    assert dev.probe_nvidia_smi(0, run=lambda *a, **k: (_ for _ in ()).throw(subprocess.TimeoutExpired("x", 1))) is None


def test_no_gpu_is_one_clear_error(tmp_path):
    with pytest.raises(UnsupportedError, match="cannot find a CUDA GPU here \\(tried: device-tree\\)") as err:
        dev.probe_gpu(0, dev.SystemPaths(device_tree=tmp_path), {"device-tree": dev.probe_device_tree})
    assert "cuda-python" in err.value.hint


def test_cuda_python_probe_against_the_real_bindings_and_a_fake_driver(monkeypatch):
    import re
    import sys

    real = dev.probe_cuda_python()  # the installed cuda-python (if any): None without a driver, facts with one
    assert real is None or (re.fullmatch(r"\d+\.\d+", real.compute_capability) and real.sm_count > 0)

    attrs = types.SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR="major", CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR="minor",
                                  CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT="sms")
    ok = "CUDA_SUCCESS"
    drv = types.ModuleType("cuda.bindings.driver")
    drv.CUresult = types.SimpleNamespace(CUDA_SUCCESS=ok)
    drv.CUdevice_attribute = attrs
    drv.cuInit = lambda flags: (ok,)  # cuda-python returns (CUresult, values...) tuples
    drv.cuDeviceGet = lambda i: (ok, 0)
    drv.cuDeviceGetAttribute = lambda a, d: (ok, {"major": 8, "minor": 7, "sms": 4}[a])
    drv.cuDeviceGetName = lambda n, d: (ok, b"Orin\x00\x00\x00")
    drv.cuDriverGetVersion = lambda: (ok, 12060)
    pkg = types.ModuleType("cuda.bindings")
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "cuda.bindings", pkg)
    monkeypatch.setitem(sys.modules, "cuda.bindings.driver", drv)
    facts = dev.probe_cuda_python()
    assert (facts.compute_capability, facts.name, facts.sm_count, facts.driver_cuda, facts.source) == ("8.7", "Orin", 4, "12.6", "cuda-python")
    drv.cuInit = lambda flags: ("CUDA_ERROR_NO_DEVICE",)
    assert dev.probe_cuda_python() is None
