"""``edgefg compress``: model → compressed ONNX artifact + manifest + report.

The artifact is an ONNX model (FP32, or INT8 as Q/DQ) that every converter starts from. The
report measures each step on the user's data: size, parameters, MACs, host latency, top-1/top-5
and per-class accuracy, worst-class drop.
"""
from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import ImageSet, iter_batches, scan, stratified_subset
from edgefg.compress.report import write_compress_report
from edgefg.converters.torch_to_onnx import INPUT_NAME, OUTPUT_NAME, export_onnx
from edgefg.errors import DataError, UnsupportedError
from edgefg.manifest import PARITY_DIR, Manifest, TensorSpec, atomic_output_dir
from edgefg.models.loader import LoadedModel
from edgefg.models.stats import onnx_stats
from edgefg.runtime.model import LoadedBundle
from edgefg.runtime.timing import percentiles, time_calls
from edgefg.validate.evaluate import score_samples
from edgefg.validate.metrics import class_drops, classification, parity, strip_arrays
from edgefg.versions import library_versions

log = logging.getLogger(__name__)

RECIPES = {"fp32": "no compression (the reference every later step is compared with)", "int8": "NNCF INT8 post-training quantization"}
TRANSFORMER_ARCH = re.compile(r"vit|deit|beit|eva|swin|levit|cait|xcit|pit_|convit", re.I)
PARITY_SAMPLES = 32


@dataclass
class CompressOptions:
    recipe: str = "int8"
    data: Path | None = None  # calibration images (ImageFolder or flat)
    val_data: Path | None = None  # evaluation images; defaults to ``data``
    calib_size: int = 300
    seed: int = 0
    force: bool = False
    latency_iters: int = 30
    batch_size: int = 8


@dataclass
class CompressResult:
    directory: Path
    manifest: Manifest
    report: dict[str, Any] = field(default_factory=dict)


def _manifest_for(model: LoadedModel, name: str, precision: str, steps: list[dict]) -> Manifest:
    h, w = model.preprocess.input_size
    return Manifest(
        name=name,
        kind="artifact",
        model_file="model.onnx",
        format="onnx",
        backend="onnxruntime",
        precision=precision,
        labels=list(model.labels),
        preprocess=model.preprocess,
        inputs=[TensorSpec(INPUT_NAME, ["batch", 3, h, w], "float32")],
        outputs=[TensorSpec(OUTPUT_NAME, ["batch", model.num_classes], "float32")],
        compression=steps,
        source=model.source,
        versions=library_versions(),
    )


def _measure(directory: Path, manifest: Manifest, sample: np.ndarray, iters: int, val: ImageSet | None, batch: int, what: str):
    """Stats, host latency (ONNX Runtime, batch 1) and, with labelled data, accuracy of one model file."""
    stats = onnx_stats(directory / manifest.model_file)
    with LoadedBundle(directory, verify=False, manifest=manifest) as m:
        lat = percentiles(time_calls(lambda: m.scores(sample[None]), iters))
        scored = score_samples(m, val.samples, batch, f"evaluating {what}") if val is not None else None
    return stats, lat, scored


def compress(model: LoadedModel, out: str | Path, opts: CompressOptions) -> CompressResult:
    if opts.recipe not in RECIPES:
        raise UnsupportedError(f"unknown recipe '{opts.recipe}'", f"built-in recipes: {', '.join(RECIPES)}")
    if opts.recipe != "fp32" and opts.data is None:
        raise DataError(f"recipe '{opts.recipe}' needs calibration images", "pass --data DIR (an ImageFolder of your classes)")
    calib_set = scan(opts.data, model.labels) if opts.data else None
    val_set = scan(opts.val_data, model.labels) if opts.val_data else calib_set
    val_labelled = val_set if val_set is not None and val_set.labelled else None

    calib_samples = stratified_subset(calib_set.samples, opts.calib_size, opts.seed) if calib_set else []
    skipped: list[Path] = []
    calib = [b.x for b in iter_batches(calib_samples, model.preprocess, 64, skipped)]
    calib_x = np.concatenate(calib) if calib else None
    if calib_set is not None and calib_x is None:
        raise DataError(f"no readable calibration images in '{opts.data}'")
    if calib_set is not None and calib_set.labelled:
        n_classes = len({s.label for s in calib_samples})
        log.info("calibration: %d images covering %d of %d classes", len(calib_x), n_classes, len(calib_set.classes))

    out = Path(out)
    name = out.name
    with atomic_output_dir(out, opts.force) as tmp:
        ref_dir = tmp / ".reference"
        ref_dir.mkdir()
        if model.onnx_path is not None:
            shutil.copy2(model.onnx_path, ref_dir / "model.onnx")
        else:
            export_onnx(model.module, model.preprocess.input_size, ref_dir / "model.onnx")
        ref_manifest = _manifest_for(model, name, "fp32", [])
        sample = calib_x[0] if calib_x is not None else _dummy(model)
        ref_stats, ref_lat, ref_scored = _measure(ref_dir, ref_manifest, sample, opts.latency_iters, val_labelled, opts.batch_size, "fp32")

        steps: list[dict[str, Any]] = []
        if opts.recipe == "int8":
            from edgefg.compress.quantize import quantize_onnx

            transformer = bool(model.arch and TRANSFORMER_ARCH.search(model.arch))
            steps.append(quantize_onnx(ref_dir / "model.onnx", tmp / "model.onnx", calib_x, transformer=transformer))
            precision = "int8"
        else:
            shutil.copy2(ref_dir / "model.onnx", tmp / "model.onnx")
            precision = "fp32"
        manifest = _manifest_for(model, name, precision, steps)
        if opts.recipe == "fp32":
            stats, lat, scored = ref_stats, ref_lat, ref_scored
        else:
            stats, lat, scored = _measure(tmp, manifest, sample, opts.latency_iters, val_labelled, opts.batch_size, opts.recipe)

        rows = [_row("fp32 (reference)", ref_stats, ref_lat, ref_scored, model.labels)]
        if opts.recipe != "fp32":
            rows.append(_row(opts.recipe, stats, lat, scored, model.labels))
        report: dict[str, Any] = {
            "model": model.source,
            "recipe": opts.recipe,
            "calibration": {"data": str(opts.data) if opts.data else None, "images": 0 if calib_x is None else int(len(calib_x)), "skipped_corrupt": [str(p) for p in skipped]},
            "validation": {"data": str(val_labelled.root) if val_labelled else None},
            "latency_backend": "onnxruntime (host CPU, batch 1)",
            "steps": rows,
        }
        if ref_scored is not None and scored is not None:
            ref_m = classification(ref_scored.scores, ref_scored.labels, model.labels)
            cand_m = classification(scored.scores, scored.labels, model.labels)
            drops = class_drops(cand_m, ref_m)
            report["top1_drop"] = 100.0 * (ref_m["top1"] - cand_m["top1"])
            report["worst_class_drop"] = drops[0]["drop_pts"] if drops else 0.0
            report["class_drops"] = drops
            report["agreement"] = parity(scored.scores, ref_scored.scores)["top1_agreement"]
            report["validation"]["skipped_corrupt"] = [str(p) for p in scored.skipped]
            manifest.accuracy = {
                "data": str(val_labelled.root),
                **{k: v for k, v in strip_arrays(cand_m).items() if k != "per_class"},
                "reference_top1": ref_m["top1"],
                "top1_drop": report["top1_drop"],
                "worst_class_drop": report["worst_class_drop"],
            }
        if calib_x is not None:
            _save_parity_samples(tmp / PARITY_DIR, calib_samples, skipped)
        shutil.rmtree(ref_dir)
        write_compress_report(tmp, report)
        manifest.record_files(tmp)
        manifest.save(tmp)
    return CompressResult(out, manifest, report)


def _dummy(model: LoadedModel) -> np.ndarray:
    h, w = model.preprocess.input_size
    return np.random.default_rng(0).standard_normal((3, h, w)).astype(np.float32)


def _row(step: str, stats: dict, lat: dict, scored, labels: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {"step": step, **stats, "latency_ms_p50": lat["p50"], "latency_ms_p90": lat["p90"]}
    if scored is not None:
        m = classification(scored.scores, scored.labels, labels)
        row.update({k: m[k] for k in ("images", "top1", "top5", "worst_class_accuracy", "mean_class_accuracy")})
    return row


def _save_parity_samples(folder: Path, samples, skipped: list[Path]) -> None:
    """Copy a few calibration images into the artifact so deploy can check parity without the data."""
    folder.mkdir()
    bad = set(skipped)
    kept = [s.path for s in samples if s.path not in bad][:PARITY_SAMPLES]
    for i, path in enumerate(kept):
        shutil.copy2(path, folder / f"{i:03d}{path.suffix.lower()}")
