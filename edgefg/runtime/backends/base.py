"""The runtime backend contract and its registry.

A backend loads one model file described by a :class:`~edgefg.manifest.Manifest` and turns a
preprocessed batch into scores. Every backend implements the same four things — ``load`` (the
constructor), ``input_spec``, ``infer`` and ``close`` — in its own module, imported lazily so that
a device needs only the one engine it uses. The base class checks every feed against the manifest
and times each call, so all backends do both alike. Adding a backend = one module + one row in
:data:`edgefg.formats.BACKENDS` (its class, pip extra and host stand-in).
"""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgefg.errors import UnsupportedError
from edgefg.formats import BACKENDS
from edgefg.lazy import pick, resolve
from edgefg.manifest import Manifest, TensorSpec


def default_threads() -> int:
    """Physical-ish core count: what latency-oriented edge inference should use by default."""
    from edgefg.runtime.loop.threads import env_threads

    env = env_threads()  # range-checked: a clear error, not a crash or a silent 1
    if env:
        return env
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Backend(ABC):
    """Runs one model file. Construct with the model path and its manifest; use as a context manager."""

    name: ClassVar[str]
    engine_module: ClassVar[str]  # the Python module of the engine, for error messages

    def __init__(self, model_path: str | Path, manifest: Manifest, num_threads: int | None = None, **options: Any):
        self.model_path = Path(model_path)
        self.manifest = manifest
        if num_threads is not None and not 1 <= num_threads <= 1024:
            raise UnsupportedError(f"threads must be between 1 and 1024, got {num_threads}")
        self.num_threads = num_threads or default_threads()
        self.options = {**manifest.backend_options, **options}
        self.last_infer_ms: float | None = None  # the time of the last infer() call, engine and dequantization

    # -- the contract ------------------------------------------------------------------------
    @property
    def input_spec(self) -> TensorSpec:
        return self.manifest.inputs[0]

    @property
    def static_batch(self) -> int | None:
        """The model's fixed batch size, or None when the batch axis is dynamic."""
        b = self.input_spec.shape[0]
        return b if isinstance(b, int) and b > 0 else None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed batch (N, ...) → float32 scores (N, classes), dequantized if needed. The feed is
        checked against the manifest's input (dtype, rank, fixed dimensions) for every backend alike,
        and the call's time is kept in ``last_infer_ms``."""
        self.check_feed(batch)
        t0 = time.perf_counter()
        static = self.static_batch
        if static is not None and batch.shape[0] != static:
            if static != 1:
                raise UnsupportedError(f"model has a static batch of {static}, got {batch.shape[0]}")
            raw = np.concatenate([self._run(batch[i : i + 1]) for i in range(batch.shape[0])])
        else:
            raw = self._run(batch)
        scores = self._dequantize(raw)
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        return scores

    def infer_outputs(self, batch: np.ndarray) -> list[np.ndarray]:
        """Like :meth:`infer`, but every output the manifest lists (scores, then e.g. the embedding),
        each float32 (N, -1) and dequantized by its own spec — one engine call for all of them."""
        self.check_feed(batch)
        t0 = time.perf_counter()
        static = self.static_batch
        if static is not None and batch.shape[0] != static:
            if static != 1:
                raise UnsupportedError(f"model has a static batch of {static}, got {batch.shape[0]}")
            parts = [self._run_all(batch[i : i + 1]) for i in range(batch.shape[0])]
            raw = [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]
        else:
            raw = self._run_all(batch)
        outs = [self._dequantize(r, spec) for r, spec in zip(raw, self.manifest.outputs)]
        self.last_infer_ms = (time.perf_counter() - t0) * 1e3
        return outs

    def _run_all(self, batch: np.ndarray) -> list[np.ndarray]:
        """Every output of the manifest, in its order. Backends that run multi-output models override it."""
        if len(self.manifest.outputs) == 1:
            return [self._run(batch)]
        raise UnsupportedError(f"the {self.name} backend runs only the first output of a model", "deploy without --embedding for this engine")

    def check_feed(self, batch: np.ndarray) -> None:
        """A one-line error, not an engine's traceback, for a batch the model does not take."""
        spec = self.input_spec
        hint = "prepare inputs with edgefg.runtime.engine.preprocess.preprocess and the bundle's manifest (layout, input size, dtype)"
        if batch.dtype != np.dtype(spec.dtype):
            raise UnsupportedError(f"the model takes {np.dtype(spec.dtype).name} input, got {batch.dtype.name}", hint)
        fixed = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        if batch.ndim != len(spec.shape) or any(d is not None and d != n for d, n in zip(fixed[1:], batch.shape[1:])):
            shown = [d if d is not None else "?" for d in fixed]
            raise UnsupportedError(f"the model takes input of shape {shown}, got {list(batch.shape)}", hint)

    @abstractmethod
    def _run(self, batch: np.ndarray) -> np.ndarray:
        """Run the engine on a batch it accepts as-is; return its first output."""

    def close(self) -> None:  # noqa: B027  (an optional hook: engines free their memory when dropped; override if not)
        pass

    # -- helpers -----------------------------------------------------------------------------
    def _dequantize(self, raw: np.ndarray, spec: TensorSpec | None = None) -> np.ndarray:
        out = spec or self.manifest.outputs[0]
        raw = raw.reshape(raw.shape[0], -1)
        if out.quant_scale is not None and np.issubdtype(raw.dtype, np.integer):
            return (raw.astype(np.float32) - (out.quant_zero_point or 0)) * out.quant_scale
        return raw.astype(np.float32, copy=False)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def backend_class(name: str) -> type[Backend]:
    info = pick(BACKENDS, name, "runtime backend")
    return resolve(info.entry, extra=info.extra)


def open_backend(directory: str | Path, manifest: Manifest, **options: Any) -> Backend:
    """Instantiate the manifest's backend on the manifest's model file inside ``directory``."""
    cls = backend_class(manifest.backend)
    return cls(Path(directory) / manifest.model_file, manifest, **options)
