"""The three kinds of work in a trial, as plain functions both engines call.

* :func:`build_artifact` — compress once per distinct compression configuration (torch).
* :func:`deploy_bundle` — convert that artifact for one target at the trial's precision.
* :func:`measure_bundle` — score the bundle per class against the FP32 reference scores, then
  bench it (numpy + runtime only: this is what runs on a device node).

Each returns a JSON-able dict and never raises for a trial's own failure: the error is one line
in ``error`` so the sweep goes on.
"""
from __future__ import annotations

import logging
import platform
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgefg.errors import CheckFailed, EdgefgError, UnsupportedError
from edgefg.formats import stand_in
from edgefg.manifest import MANIFEST_NAME
from edgefg.tune.latency_source import classify, measured_of
from edgefg.tune.options import TuneOptions
from edgefg.tune.space import TrialConfig

log = logging.getLogger(__name__)


def one_line(exc: BaseException) -> str:
    """The error a trial records: edgefg's own message, else the exception's first line."""
    if isinstance(exc, EdgefgError):
        return exc.message
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _compress_options(opts: TuneOptions, cfg: TrialConfig):
    from edgefg.compress.api import CompressOptions

    int8 = cfg.precision.startswith("int8")
    accuracy_aware = cfg.precision == "int8-accuracy"
    return CompressOptions(
        recipe="int8" if int8 else "fp32",
        data=opts.data,
        val_data=opts.val_data,
        val_size=opts.compress_val_size,
        calib_size=cfg.calib_size,
        seed=opts.seed,
        force=True,
        latency_iters=5,
        plot=False,
        prune=cfg.prune or None,
        input_size=cfg.resolution if cfg.resolution and cfg.resolution_kd else None,
        epochs=cfg.kd_epochs if cfg.prune or cfg.resolution_kd else None,
        max_steps=opts.train_max_steps,
        token_keep=cfg.token_keep,
        token_method=cfg.token_method,
        adapters=cfg.adapters,
        max_drop=(opts.budget.max_drop if opts.budget.max_drop is not None else 1.0) if accuracy_aware else None,
        max_class_drop=opts.budget.max_class_drop if accuracy_aware else None,
        class_alpha=opts.budget.class_alpha,
        class_gate=opts.budget.class_gate,
        early_stop_drop=opts.early_stop_drop if (cfg.prune or cfg.resolution_kd) and opts.early_stop else None,
    )


def artifact_dir(opts: TuneOptions, cfg: TrialConfig) -> Path:
    return Path(opts.out) / "artifacts" / cfg.compress_key


def build_artifact(opts: TuneOptions, cfg: TrialConfig) -> dict[str, Any]:
    """Compress ``cfg``'s model once (reused when the artifact already exists: other trials, --resume)."""
    out = artifact_dir(opts, cfg)
    result: dict[str, Any] = {"artifact": str(out), "compress_key": cfg.compress_key, "error": None, "note": None, "reused": False}
    if (out / MANIFEST_NAME).is_file():
        result["reused"] = True
        return result
    t0 = time.perf_counter()
    try:
        from edgefg.compress.api import TRANSFORMER_ARCH, compress
        from edgefg.models.loader import load_model, with_input_size

        model = load_model(opts.model, arch=opts.arch, num_classes=opts.num_classes, labels=opts.labels, checkpoint=opts.checkpoint)
        if cfg.resolution and not cfg.resolution_kd:  # a plain down-scale; with KD, compress --input-size does it
            if model.module is None:
                raise UnsupportedError("the resolution knob needs a PyTorch model (an ONNX file has a fixed input size)")
            if (model.arch and TRANSFORMER_ARCH.search(model.arch)) or getattr(model.module, "global_pool", None) is None:
                raise UnsupportedError(f"resolution {cfg.resolution} needs a CNN with global pooling; '{model.arch}' is not one")
            model = with_input_size(model, cfg.resolution)
        try:
            compress(model, out, _compress_options(opts, cfg))
        except CheckFailed as exc:  # accuracy-aware INT8 missed its budget, or KD stopped early: the artifact is written, keep the point
            result["note"] = exc.message
            stopped = _stopped_early(out)
            if stopped:
                result["stopped_early"] = stopped
    except Exception as exc:  # noqa: BLE001 - a trial's failure is data, not a crash
        log.debug("compress %s failed:\n%s", cfg.label(), traceback.format_exc())
        result["error"] = f"compress: {one_line(exc)}"
    result["wall_s"] = time.perf_counter() - t0
    return result


def _stopped_early(artifact: Path) -> dict[str, Any] | None:
    import json

    report = artifact / "report.json"
    return json.loads(report.read_text(encoding="utf-8")).get("stopped_early") if report.is_file() else None


def deploy_bundle(opts: TuneOptions, cfg: TrialConfig, artifact: dict[str, Any], target: str) -> dict[str, Any]:
    """Deploy the trial's artifact for ``target`` at the trial's precision."""
    if artifact.get("error"):
        return {"error": artifact["error"]}
    from edgefg.deploy import deploy

    out = Path(opts.out) / "trials" / cfg.trial_id / target
    precision = "int8" if cfg.precision.startswith("int8") else cfg.precision
    t0 = time.perf_counter()
    try:
        from edgefg.targets import load_target

        tgt = load_target(target).with_engine(cfg.engine) if cfg.engine else target
        deploy(artifact["artifact"], tgt, out, precision=precision, force=True, data=opts.data, calib_size=cfg.calib_size)
    except Exception as exc:  # noqa: BLE001
        log.debug("deploy %s → %s failed:\n%s", cfg.label(), target, traceback.format_exc())
        return {"error": f"deploy: {one_line(exc)}"}
    return {"bundle": str(out), "error": None, "deploy_s": time.perf_counter() - t0}


def stand_in_backend(bundle: str | Path) -> str | None:
    """The host runtime for a bundle whose engine only runs on the device (None: its own runs here)."""
    from edgefg.manifest import load_manifest

    return stand_in(load_manifest(bundle, verify=False).backend)


def measure_bundle(
    bundle: str | Path,
    samples: Sequence,
    reference,  # edgefg.validate.evaluate.Scored of the FP32 reference on the same samples
    opts: TuneOptions,
    on_target: bool = False,
    node: str | None = None,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Per-class accuracy vs the reference (validate's paired test) and latency/size (bench).
    Off the target's own node a device-only engine runs in its host stand-in; ``latency_source`` says
    where the latency comes from and ``stand_in`` whether it is a stand-in's (:mod:`edgefg.tune.latency_source`)."""
    from edgefg.manifest import load_manifest
    from edgefg.runtime.bench import BenchOptions, run_bench
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.validate.api import reference_metrics
    from edgefg.validate.evaluate import score_samples
    from edgefg.validate.metrics import classes_tested, classification, significant_drop_count, wilson_interval, worst_class_drop

    t0 = time.perf_counter()
    try:
        manifest = load_manifest(bundle, verify=False)
        backend = None if on_target else stand_in(manifest.backend)
        engine_s = None
        if on_target and manifest.backend == "tensorrt":  # the device's own engine: `edgefg build-engine`, on the device
            from edgefg.tensorrt.builder import build_engine

            engine_s = build_engine(bundle).seconds
        with LoadedBundle(bundle, backend=backend, num_threads=num_threads) as b:
            scored_all = score_samples(b, samples, opts.batch_size, f"validating {manifest.target}")
            labels, activation = b.labels, b.manifest.output_activation
        # labelled validation images and unlabelled agreement frames (label -1) travel in one list
        scored, frames = _split(scored_all)
        ref_labelled, ref_frames = _split(reference)
        acc = classification(scored.scores, scored.labels, labels)
        ref = reference_metrics(scored, ref_labelled, labels, activation, labelled=True)
        bench = run_bench([Path(bundle)], BenchOptions(rounds=opts.bench_rounds, iters=opts.bench_iters, warmup=5, backend=backend, num_threads=num_threads))
        r = bench["results"][0]
        drops = ref["class_drops"]
        images = sorted(d["images"] for d in drops) or [0]
        frame_agreement = None
        if len(frames.labels):
            if frames.paths != ref_frames.paths:
                raise CheckFailed("the bundle and the FP32 reference read different agreement frames")
            k, n = int((frames.scores.argmax(1) == ref_frames.scores.argmax(1)).sum()), int(len(frames.labels))
            low, high = wilson_interval(k, n)
            frame_agreement = {"agreement": k / n, "images": n, "agree": k, "ci95": [low, high]}
        return {
            "error": None,
            "top1": acc["top1"],
            "top5": acc["top5"],
            "reference_top1": ref["reference_top1"],
            "top1_drop": ref["top1_drop"],
            "worst_class_drop": ref["worst_class_drop"],
            "worst_class": worst_class_drop(drops)[1],
            "significant_class_drops": significant_drop_count(drops, 0.05),
            # the losing classes with their paired test: budgets (any threshold, either gate) are judged from these
            "class_losses": [{k: d.get(k) for k in ("class", "images", "drop_pts", "drop_images", "lost", "gained", "p_value", "p_adjusted")}
                             for d in drops if d["drop_pts"] > 0],
            "classes": len(drops),
            "classes_tested": classes_tested(drops),
            "images_per_class": {"min": images[0], "median": images[len(images) // 2]},
            "frame_agreement": frame_agreement,
            "agreement": ref["agreement"],
            "images": int(len(scored.labels)),
            "latency_ms_p50": r["latency_ms"]["p50"],
            "latency_ms_p90": r["latency_ms"]["p90"],
            "latency_ms_iqr": r["latency_ms"].get("iqr"),  # spread of the timed runs (p75 − p25)
            "size_mb": r["size_mb"],
            "runtime": r["backend"] + (f" (stand-in for {manifest.backend})" if backend else ""),
            "threads": r["threads"],
            "precision": manifest.precision,
            "node": node or f"local:{platform.node()}",
            # stand_in, latency_source, latency_kind, latency_ranks_speed: where this latency comes from
            **classify(measured_of(manifest, backend, bench["machine"].get("cpu", "")), on_target, node or "").fields(),
            "measure_s": time.perf_counter() - t0,
            **({"engine_build_s": engine_s} if engine_s is not None else {}),
        }
    except Exception as exc:  # noqa: BLE001
        log.debug("measuring %s failed:\n%s", bundle, traceback.format_exc())
        return {"error": f"measure: {one_line(exc)}", "node": node or f"local:{platform.node()}"}


def _split(scored):
    """(labelled rows, unlabelled rows) of a Scored: validation images and agreement frames."""
    import dataclasses

    mask = scored.labels >= 0

    def part(m):
        return dataclasses.replace(scored, scores=scored.scores[m], labels=scored.labels[m], paths=[p for p, k in zip(scored.paths, m) if k])

    return part(mask), part(~mask)


def reference_scores(artifact: str | Path, samples: Sequence, batch_size: int):
    """The FP32 reference artifact's scores on the validation samples (computed once per sweep)."""
    from edgefg.runtime.engine.bundle import LoadedBundle
    from edgefg.validate.evaluate import score_samples

    with LoadedBundle(artifact) as ref:
        return score_samples(ref, samples, batch_size, "scoring the FP32 reference")


def finish_trial(cfg: TrialConfig, artifact: dict[str, Any], targets: dict[str, dict[str, Any]], started: float) -> dict[str, Any]:
    """One trial's record: ok (every target measured), partial, or failed (none), with one error line."""
    errors = [f"{t}: {r['error']}" for t, r in targets.items() if r.get("error")]
    status = "ok" if not errors else "failed" if len(errors) == len(targets) else "partial"
    error = None
    if errors:
        error = artifact["error"] if artifact.get("error") else "; ".join(errors)
    return {
        "id": cfg.trial_id,
        "label": cfg.label(),
        "config": cfg.to_dict(),
        "compress_key": cfg.compress_key,
        "artifact": artifact.get("artifact"),
        "artifact_reused": artifact.get("reused", False),
        "compress_note": artifact.get("note"),
        "stopped_early": artifact.get("stopped_early"),
        "status": status,
        "error": error,
        "targets": targets,
        "wall_s": time.time() - started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
