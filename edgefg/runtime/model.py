"""A bundle (or artifact) opened for inference: manifest + verified files + backend.

This is what the on-device runtime, ``validate``, ``bench`` and ``compare`` use. No torch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgefg.manifest import Manifest, load_manifest
from edgefg.runtime.backends.base import Backend, open_backend
from edgefg.runtime.preprocess import preprocess, preprocess_batch


class LoadedBundle:
    """Open ``directory``: read its manifest, verify every checksum, start its backend.

    ``backend`` runs the bundle's model file with another engine than the manifest names — e.g. a
    Jetson bundle's ONNX in ONNX Runtime on a workstation, as a stand-in for TensorRT.
    ``trust``: public keys (paths) one of which must have signed the bundle (``--trust``).
    """

    def __init__(
        self,
        directory: str | Path,
        verify: bool = True,
        manifest: Manifest | None = None,
        backend: str | None = None,
        trust: Sequence[Any] | None = None,
        **backend_options: Any,
    ):
        self.directory = Path(directory)
        self.manifest = manifest or load_manifest(self.directory, verify=verify, trust=trust)
        if backend and backend != self.manifest.backend:
            self.manifest = self.manifest.with_backend(backend)
        self.backend: Backend = open_backend(self.directory, self.manifest, **backend_options)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        return preprocess(image_bgr, self.manifest.preprocess)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed batch → float32 scores (logits, or probabilities for softmax models)."""
        return self.backend.infer(batch)

    def classify(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        return self.scores(preprocess_batch(images_bgr, self.manifest.preprocess))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "LoadedBundle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
