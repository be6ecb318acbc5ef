"""OpenVINO backend. Honours the manifest's precision: on CPUs with bf16/fp16 support OpenVINO
would otherwise silently run FP32 models in reduced precision."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, ModelLoadError, UnsupportedError
from edgefg.formats import openvino_device_present, openvino_inference_precision
from edgefg.runtime.backends.base import Backend

try:
    import openvino as ov
except ModuleNotFoundError:  # pragma: no cover - depends on the install
    raise MissingDependencyError.for_module("openvino", "openvino") from None


class OpenVINOBackend(Backend):
    name = "openvino"
    engine_module = "openvino"

    def __init__(self, model_path, manifest, num_threads=None, **options: Any):
        super().__init__(model_path, manifest, num_threads, **options)
        core = ov.Core()
        # an explicit option wins, then $EDGEFG_OPENVINO_DEVICE (run a GPU/NPU bundle on CPU), then the manifest
        device = str(options.get("device") or os.environ.get("EDGEFG_OPENVINO_DEVICE") or self.options.get("device", "CPU"))
        available = core.available_devices
        if not openvino_device_present(device, available):
            raise UnsupportedError(
                f"OpenVINO device '{device}' is not present on this machine (available: {', '.join(available)})",
                "run it on the CPU with EDGEFG_OPENVINO_DEVICE=CPU (same IR), or deploy for the intel-cpu target",
            )
        precision = openvino_inference_precision(manifest.precision, device, self.options.get("inference_precision"))
        config = {
            "PERFORMANCE_HINT": self.options.get("performance_hint", "LATENCY"),
            "INFERENCE_PRECISION_HINT": precision,
        }
        if device == "CPU":
            config["INFERENCE_NUM_THREADS"] = self.num_threads
            if os.environ.get("EDGEFG_OPENVINO_CPU_PINNING") == "0":  # set by `edgefg worker`: pinned threads fight under Ray
                config["ENABLE_CPU_PINNING"] = False
        try:
            model = core.read_model(str(self.model_path))
            self.compiled = core.compile_model(model, device, config)
        except RuntimeError as exc:
            raise ModelLoadError(
                f"OpenVINO cannot load '{self.model_path}': {str(exc).strip().splitlines()[0][:300]}",
                "check that the .xml and its .bin are complete (re-deploy the bundle)",
            ) from None
        self.device = device
        self.inference_precision = precision
        self.request = self.compiled.create_infer_request()

    def _run(self, batch: np.ndarray) -> np.ndarray:
        # a tensor over the caller's memory: no input copy (≈9% more FPS at batch 1 than infer({0: array}))
        self.request.set_input_tensor(ov.Tensor(np.ascontiguousarray(batch), shared_memory=True))
        self.request.infer()
        return self.request.get_output_tensor(0).data.copy()

    def _run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        self.request.set_input_tensor(ov.Tensor(np.ascontiguousarray(batch), shared_memory=True))
        self.request.infer()
        index = {name: i for i, port in enumerate(self.compiled.outputs) for name in port.get_names()}
        picks = [index.get(o.name, i) for i, o in enumerate(self.manifest.outputs)]
        return [self.request.get_output_tensor(i).data.copy() for i in picks]

    def close(self) -> None:
        self.request = None
        self.compiled = None
