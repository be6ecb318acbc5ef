"""A bundle (or artifact) opened for inference: manifest + verified files + backend.

This is what the on-device runtime, ``validate``, ``bench`` and ``compare`` use. No torch.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import BundleError
from edgefg.manifest import Manifest, load_manifest
from edgefg.runtime.backends.base import Backend, open_backend
from edgefg.runtime.engine.preprocess import preprocess, preprocess_batch


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
        self.head = None  # enrolled classes (edgefg enroll): a prototype head beside the trained one
        if self.manifest.prototypes:
            from edgefg.runtime.engine.prototypes import PrototypeHead

            self.head = PrototypeHead(self.directory, self.manifest)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    def prepare(self, image_bgr: np.ndarray) -> np.ndarray:
        return preprocess(image_bgr, self.manifest.preprocess)

    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed batch → float32 scores (logits, or probabilities for softmax models), one per
        label: with enrolled classes, the trained head's kept classes then the calibrated prototype
        scores, from one engine call."""
        if self.head is None:
            return self.backend.infer(batch)
        if not self.head.needs_embedding:
            return self.head.combine(self.backend.infer(batch), None)
        outs = self.backend.infer_outputs(batch)
        index = self.head.embedding_index
        if index is None:  # the head refuses to load without it; kept for the type
            raise BundleError("the enrolled classes need the model's embedding output, which this bundle lacks", "re-run edgefg enroll")
        return self.head.combine(outs[0], outs[index])

    def scores_and_embedding(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The trained head's raw scores and the embedding output (deploy --embedding), one engine call."""
        index = self.manifest.output_index("embedding")
        if index is None:
            from edgefg.errors import BundleError

            raise BundleError(
                f"bundle '{self.directory}' has no embedding output",
                "re-deploy it with: edgefg deploy ARTIFACT --target T --embedding -o BUNDLE",
            )
        outs = self.backend.infer_outputs(batch)
        return outs[0], outs[index]

    def classify(self, images_bgr: list[np.ndarray]) -> np.ndarray:
        return self.scores(preprocess_batch(images_bgr, self.manifest.preprocess))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> LoadedBundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
