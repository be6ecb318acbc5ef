"""ONNX Runtime backend (CPU by default; providers from the manifest/options)."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgefg.errors import MissingDependencyError, ModelLoadError
from edgefg.runtime.backends.base import Backend

try:
    import onnxruntime as ort
except ModuleNotFoundError:  # pragma: no cover - depends on the install
    raise MissingDependencyError.for_module("onnxruntime", "onnxruntime") from None


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    engine_module = "onnxruntime"

    def __init__(self, model_path, manifest, num_threads=None, **options: Any):
        super().__init__(model_path, manifest, num_threads, **options)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.num_threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = self.options.get("providers") or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(self.model_path), so, providers=providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
            raise ModelLoadError(
                f"ONNX Runtime cannot load '{self.model_path}': {str(exc).splitlines()[0][:300]}",
                "check that the file is a complete ONNX model (re-export or re-deploy it)",
            ) from None
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: batch})[0]

    def _run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        wanted = [o.name if o.name in names else names[i] for i, o in enumerate(self.manifest.outputs)]
        return self.session.run(wanted, {self._input: batch})

    def close(self) -> None:
        self.session = None
