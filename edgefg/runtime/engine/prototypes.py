"""Prototype head: classes enrolled from a few images (``edgefg enroll``), scored beside the trained head.

Numpy only (the on-device runtime). A bundle with enrolled classes lists ``prototypes`` in its
manifest and keeps the prototypes in a checksummed ``.npz`` (read with ``allow_pickle=False``).
Scores over the extended labels, in one engine call:

    trained (kept) classes:   the linear head's logits (log-probabilities for a softmax model)
    enrolled classes:         temperature × cos(embedding, prototype) + bias

then softmax again for a softmax model, so every consumer sees the kind of vector it always did.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgefg.errors import BundleError

PROTOTYPES_FILE = "prototypes.npz"
REFERENCE_FILE = "embedding_reference.npz"  # deploy --embedding: embeddings + head scores of the parity images
EPS = 1e-12


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), EPS)


def read_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a prototype file (no pickled objects)."""
    try:
        with np.load(str(path), allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read the prototype file '{path}': {exc}", "re-run edgefg enroll") from None


def write_arrays(path: str | Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as fh:
        named: Any = {k: np.asarray(v) for k, v in arrays.items()}  # numpy's stub reads ** as allow_pickle
        np.savez(fh, **named)


class PrototypeHead:
    """The enrolled classes of a bundle: combines the trained head's scores with prototype scores."""

    def __init__(self, directory: str | Path, manifest: Any):
        spec = manifest.prototypes
        self.activation = manifest.output_activation
        head = list(spec["head_labels"])
        removed = set(spec["removed"])
        self.keep = np.asarray([i for i, lab in enumerate(head) if lab not in removed], dtype=np.int64)
        self.all_kept = len(self.keep) == len(head)
        self.temperature = float(spec["temperature"])
        self.bias = float(spec["bias"])
        self.embedding_index = next((i for i, o in enumerate(manifest.outputs) if o.name == spec["embedding_output"]), None)
        k = len(spec["classes"])
        if k:
            arrays = read_arrays(Path(directory) / spec["file"])
            protos = arrays.get("prototypes")
            if protos is None or protos.ndim != 2 or protos.shape[0] != k or not np.all(np.isfinite(protos)):
                raise BundleError(f"'{spec['file']}' does not hold {k} finite prototypes (array 'prototypes')", "re-run edgefg enroll")
            if self.embedding_index is None:
                raise BundleError(f"the model has no output '{spec['embedding_output']}' for the enrolled classes", "re-run edgefg enroll")
            self.prototypes: np.ndarray | None = l2_normalise(protos)
            centre = arrays.get("centre")
            self.centre = None if centre is None or centre.size == 0 else centre.astype(np.float32).reshape(1, -1)
            if self.centre is not None and self.centre.shape[1] != protos.shape[1]:
                raise BundleError(f"'{spec['file']}': the centre and the prototypes differ in width", "re-run edgefg enroll")
        else:
            self.prototypes = None
            self.centre = None

    @property
    def needs_embedding(self) -> bool:
        return self.prototypes is not None

    def combine(self, head_scores: np.ndarray, embedding: np.ndarray | None) -> np.ndarray:
        s = np.asarray(head_scores, dtype=np.float32)
        if self.activation == "softmax":
            s = np.log(np.maximum(s, EPS))
        parts = [s if self.all_kept else s[:, self.keep]]
        if self.prototypes is not None:
            if embedding is None or embedding.shape[-1] != self.prototypes.shape[1]:
                got = None if embedding is None else embedding.shape[-1]
                raise BundleError(f"the embedding has width {got}, the prototypes {self.prototypes.shape[1]}", "re-run edgefg enroll on this bundle")
            parts.append(prototype_scores(embedding, self.prototypes, self.temperature, self.bias, self.centre))
        out = np.concatenate(parts, axis=1).astype(np.float32, copy=False)
        if self.activation == "softmax":
            out = np.exp(out - out.max(axis=1, keepdims=True))
            out /= out.sum(axis=1, keepdims=True)
        return out


def prototype_scores(embedding: np.ndarray, prototypes: np.ndarray, temperature: float, bias: float,
                     centre: np.ndarray | None = None) -> np.ndarray:
    """temperature × cosine(embedding − centre, each prototype) + bias; prototypes already L2-normalised
    (and built from centred embeddings). The centre — the mean embedding of trained-class images —
    removes the component every post-ReLU feature vector shares, which leaves raw cosines all near 1."""
    e = np.asarray(embedding, np.float32) if centre is None else np.asarray(embedding, np.float32) - centre
    return (l2_normalise(e) @ prototypes.T) * np.float32(temperature) + np.float32(bias)
