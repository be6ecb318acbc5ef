"""``edgefg deploy``: compressed artifact → self-describing bundle for a target profile.

Finds the converter chain from the artifact's format to the target's, runs it, checks numeric
parity of the deployed model against the artifact on calibration images, and writes the bundle
(model file(s) + manifest.json + labels.txt + target.toml, every file checksummed).
"""
from __future__ import annotations

import copy
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from edgefg.calibration.dataset import iter_batches, scan, stratified_subset
from edgefg.converters import ConvertRequest, find_converter
from edgefg.errors import DataError, TargetError, UnsupportedError
from edgefg.manifest import PARITY_DIR, Manifest, TensorSpec, atomic_output_dir, load_manifest
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.preprocess import convert_batch
from edgefg.shared_types import DeployResult
from edgefg.targets import Target, load_target
from edgefg.validate.metrics import parity
from edgefg.versions import library_versions
from edgefg.wrap import wrap_model

log = logging.getLogger(__name__)
EMBEDDING_FORMATS = ("onnx", "openvino", "tensorrt-onnx", "tflite")  # deploy --embedding: formats that carry the second output


def _parity_samples(artifact: Path, manifest: Manifest, data: Path | None, n: int) -> tuple[list | None, str]:
    """Images for the parity check (and calibrating converters): from ``data``, else the artifact's own."""
    if data is not None:
        return stratified_subset(scan(data, manifest.labels).samples, n, warn=False), str(data)  # a check, not calibration
    if (artifact / PARITY_DIR).is_dir():
        return scan(artifact / PARITY_DIR).samples[:n], f"{PARITY_DIR} (calibration images kept in the artifact)"
    return None, "random inputs"


def _drift_reference(tmp: Path, cand: LoadedBundle, manifest: Manifest, src: Manifest, data: Path | None, samples: list, source: str, n: int) -> None:
    """The bundle's drift reference profile, from the deployed model on ``n`` images of ``data`` (else the parity images)."""
    from edgefg.runtime.outputs.drift_profile import PROFILE_NAME, build_profile, write_profile

    if data is not None:
        samples = stratified_subset(scan(data, src.labels).samples, n, warn=False)
    profile = build_profile(cand, [s.path for s in samples[:n]], source, manifest=manifest)
    write_profile(tmp / PROFILE_NAME, profile)
    log.info("drift reference profile: %d images (%s)", profile["images"], source)


def _prepare(samples: list | None, spec, manifest: Manifest, n: int) -> np.ndarray:
    """Samples through the one preprocessing function for ``spec`` (random inputs when there are none)."""
    if samples is None:
        shape = [n] + [d if isinstance(d, int) else 1 for d in manifest.inputs[0].shape[1:]]
        return np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return np.concatenate([b.x for b in iter_batches(samples, spec, 16)])


def _candidate_inputs(x: np.ndarray, samples: list | None, src: Manifest, bundle: Manifest) -> np.ndarray:
    """The parity images as the bundle's model takes them: re-expressed in its layout/dtype, or —
    when its normalisation differs (preprocessing embedded in the model) — prepared from the images
    again with the bundle's own preprocessing."""
    try:
        return convert_batch(x, src.preprocess, bundle.preprocess)
    except DataError:
        if samples is None:
            raise
        return _prepare(samples, bundle.preprocess, bundle, len(samples))


def check_ops(model: Path, target: Target) -> None:
    """Refuse an ONNX model using an operator the target profile lists in ``unsupported_ops``
    (a user's profile for an accelerator that lacks, e.g., ``GatherElements``)."""
    if not target.unsupported_ops or model.suffix.lower() != ".onnx":
        return
    import onnx

    used = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
    bad = sorted(used & set(target.unsupported_ops))
    if bad:
        raise TargetError(
            f"the model uses {', '.join(bad)}, which target '{target.name}' does not support (its profile's unsupported_ops)",
            "compress with other settings (e.g. another --token-method), or deploy for another target",
        )


@contextmanager
def _embedding_source(artifact: Path, src: Manifest, tgt: Target, embedding: bool) -> Iterator[tuple[Path, Manifest]]:
    """The directory and manifest the converter and the parity reference read: the artifact itself, or
    (``embedding``) a temporary copy of its ONNX with the classifier input as a second output."""
    if not embedding:
        yield artifact, src
        return
    if tgt.format not in EMBEDDING_FORMATS:
        raise UnsupportedError(
            f"--embedding is not yet supported for {tgt.format} targets (target '{tgt.name}')",
            f"deploy with --embedding for a target of format {' or '.join(EMBEDDING_FORMATS)}",
        )
    from edgefg.converters.embedding import add_embedding_output
    from edgefg.models.loader import ARTIFACT_TORCH_DIR

    with tempfile.TemporaryDirectory(prefix="edgefg-embedding-") as d:
        path = Path(d) / src.model_file
        path.parent.mkdir(parents=True, exist_ok=True)
        name, width = add_embedding_output(artifact / src.model_file, path)
        torch_dir = artifact / ARTIFACT_TORCH_DIR  # the artifact's own PyTorch weights: the TFLite converter rebuilds from them
        if tgt.format == "tflite" and torch_dir.is_dir():
            shutil.copytree(torch_dir, Path(d) / ARTIFACT_TORCH_DIR)
        ref = copy.deepcopy(src)
        batch = src.outputs[0].shape[0] if src.outputs[0].shape else "batch"
        ref.outputs = [ref.outputs[0], TensorSpec(name, [batch, width if width else "features"], "float32", role="embedding")]
        log.info("embedding output '%s' (width %s) added after the classifier's input", name, width)
        yield Path(d), ref


def embedding_parity(cand: np.ndarray, ref: np.ndarray) -> dict:
    """Cosine (min, mean) and max abs difference of the deployed embedding against the artifact's."""
    c, r = cand.astype(np.float64), ref.astype(np.float64)
    denom = np.linalg.norm(c, axis=1) * np.linalg.norm(r, axis=1)
    cos = np.where(denom > 0, (c * r).sum(axis=1) / np.where(denom > 0, denom, 1), 1.0)
    return {"samples": int(len(c)), "width": int(c.shape[1]), "cosine_min": float(cos.min()), "cosine_mean": float(cos.mean()),
            "max_abs": float(np.abs(c - r).max()) if c.size else 0.0}


FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")


def resolve_precision(target: Target, artifact: Manifest, requested: str | None) -> str:
    """``requested``, else: an INT8 artifact stays INT8; a float artifact takes the target's preferred
    float precision (the first float one its profile lists: fp16 on Jetson and Pi, fp32 on Intel CPU)."""
    if requested:
        precision = requested
    elif artifact.precision == "int8":
        precision = "int8"
    else:
        precision = next((p for p in target.precisions if p in FLOAT_PRECISIONS), target.precisions[0])
    target.check_precision(precision)
    return precision


def deploy(
    artifact: str | Path,
    target: str | Path | Target,
    out: str | Path,
    precision: str | None = None,
    force: bool = False,
    data: str | Path | None = None,
    parity_samples: int = 32,
    labels: str | Path | None = None,
    options: dict | None = None,
    calib_size: int = 300,
    wrap_options: dict | None = None,
    drift_samples: int = 500,
    release: int | None = None,
    embedding: bool = False,
) -> DeployResult:
    """``drift_samples``: images (from ``data``, stratified; else the artifact's parity images) for the
    bundle's drift reference profile (``drift_reference.json``, :mod:`edgefg.runtime.outputs.drift_profile`); 0: none.
    ``release``: the bundle's release number (default: now in seconds); install refuses a lower one.
    ``embedding``: also export the classifier's input features as a second output (role "embedding",
    parity-checked), which ``edgefg enroll`` needs (:mod:`edgefg.converters.embedding`)."""
    artifact = Path(artifact)
    if artifact.is_file() and embedding:
        raise UnsupportedError("--embedding needs an artifact directory (from edgefg compress), not a model file")
    if artifact.is_file():  # an already-converted model (.tflite/.onnx/.xml): wrap it into a bundle
        return wrap_model(artifact, target, out, labels=labels, precision=precision, force=force, data=data, release=release, **(wrap_options or {}))
    src = load_manifest(artifact)
    tgt = (target if isinstance(target, Target) else load_target(target)).require_available()
    precision = resolve_precision(tgt, src, precision)
    converter = find_converter(src.format, tgt.format)
    check_ops(artifact / src.model_file, tgt)
    if (options or {}).get("embed_preprocess") and tgt.format != "openvino":
        raise TargetError(f"--embed-preprocess is an OpenVINO option; target '{tgt.name}' uses {tgt.format}")
    samples, parity_source = _parity_samples(artifact, src, Path(data) if data else None, parity_samples)
    if samples is None:
        log.warning("no images for the parity check: using random inputs (pass --data DIR for a meaningful check)")
    x = _prepare(samples, src.preprocess, src, parity_samples)
    calib, calib_source = x, parity_source
    if precision == "int8" and data and calib_size > len(x) and converter.calibrates:  # a larger stratified subset
        calib_samples, calib_source = _parity_samples(artifact, src, Path(data), calib_size)
        calib = _prepare(calib_samples, src.preprocess, src, calib_size)
    options = {"samples_source": calib_source, **(options or {})}

    with atomic_output_dir(out, force) as tmp, _embedding_source(artifact, src, tgt, embedding) as (ref_dir, ref_manifest):
        result = converter.fn(ConvertRequest(ref_dir / src.model_file, tmp, precision, tgt, ref_manifest, samples=calib, options=dict(options)))
        shutil.copy2(tgt.path, tmp / "target.toml")

        manifest = copy.deepcopy(src)
        manifest.kind = "bundle"
        manifest.model_file = result.model_file
        manifest.format = tgt.format
        manifest.backend = tgt.backend
        manifest.precision = precision
        manifest.target = tgt.name
        manifest.backend_options = result.backend_options
        manifest.inputs = result.inputs or manifest.inputs
        manifest.outputs = result.outputs or copy.deepcopy(ref_manifest.outputs)
        manifest.preprocess = result.preprocess or manifest.preprocess
        manifest.versions = library_versions()
        manifest.stamp_release(release)  # the bundle's own time and release, not the artifact's
        manifest.compression = src.compression + [
            {"method": "deploy", "target": tgt.name, "converters": [f"{converter.src}->{converter.dst}"], "notes": result.notes}
        ]
        # the target's engine runs only on the device (or its device is absent here): check the file with the host's engine defaults
        host = manifest.with_backend(result.host_backend) if result.host_backend else manifest
        with LoadedBundle(tmp, verify=False, manifest=host) as cand, LoadedBundle(ref_dir, verify=False, manifest=ref_manifest) as ref:
            xc = _candidate_inputs(x, samples, src, host)
            manifest.parity = {
                "reference": f"artifact '{artifact.name}' ({src.precision}, onnxruntime)",
                "inputs": parity_source,
                **({"candidate_runtime": f"{host.backend} on the deploying host, as a stand-in for {tgt.backend}"} if result.host_backend else {}),
                **parity(cand.scores(xc), ref.scores(x), src.output_activation),
            }
            if embedding:  # the second output is checked like the first: cosine and abs error per image
                head, emb = cand.scores_and_embedding(xc)
                manifest.parity["embedding"] = embedding_parity(emb, ref.scores_and_embedding(x)[1])
                if samples is not None:  # trained-class examples for enroll's calibration (numeric arrays, checksummed)
                    from edgefg.runtime.engine.prototypes import REFERENCE_FILE, write_arrays

                    write_arrays(tmp / REFERENCE_FILE, embeddings=emb.astype(np.float32), head_scores=head.astype(np.float32))
            if drift_samples and samples is not None:  # before the checksums: the profile is covered by them (and the signature)
                _drift_reference(tmp, cand, manifest, src, Path(data) if data else None, samples, parity_source, drift_samples)
        manifest.record_files(tmp)
        manifest.save(tmp)
    return DeployResult(Path(out), manifest, tgt)
