"""``tune()``: plan the sweep, run the pending trials on an engine, write the report."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edgefg.calibration.dataset import scan, stratified_subset
from edgefg.errors import CheckFailed, DataError, InputPathError
from edgefg.targets import load_target
from edgefg.tune.engine import Sweep, make_engine
from edgefg.tune.options import Budget, TuneOptions
from edgefg.tune.report import summarize, write_report
from edgefg.tune.space import SearchSpace, TrialConfig, builtin_space, load_space
from edgefg.tune.store import TrialStore
from edgefg.tune.work import build_artifact, reference_scores

log = logging.getLogger(__name__)


def model_family(opts: TuneOptions) -> str:
    """cnn | vit, from the architecture name (config.json) or, for ONNX, the graph."""
    from edgefg.compress.api import TRANSFORMER_ARCH, has_attention
    from edgefg.models.loader import load_model

    model = load_model(opts.model, arch=opts.arch, num_classes=opts.num_classes, labels=opts.labels, checkpoint=opts.checkpoint)
    if model.arch:
        return "vit" if TRANSFORMER_ARCH.search(model.arch) else "cnn"
    return "vit" if model.onnx_path is not None and has_attention(model.onnx_path) else "cnn"


def resolve_space(opts: TuneOptions) -> SearchSpace:
    if opts.space == "builtin":
        return builtin_space(model_family(opts))
    return load_space(opts.space)


def target_budgets(opts: TuneOptions) -> dict[str, Budget]:
    """The command line's budget; limits not given there come from each target profile's [budget]."""
    out = {}
    for name in opts.targets:
        prof = load_target(name).budget
        b = opts.budget
        out[name] = Budget(
            b.max_latency_ms if b.max_latency_ms is not None else prof.get("max_latency_ms"),
            b.max_size_mb if b.max_size_mb is not None else prof.get("max_size_mb"),
            b.max_drop if b.max_drop is not None else prof.get("max_top1_drop"),
            b.max_class_drop if b.max_class_drop is not None else prof.get("max_class_drop"),
            b.min_agreement,
            b.class_alpha,
            b.class_gate,
        )
    return out


def agreement_samples(opts: TuneOptions) -> tuple[list, dict[str, Any]]:
    """The ``--agreement-data`` frames as unlabelled samples (a seeded subset of ``agreement_size``),
    and what the report says of them, including how many are also training images (``--data``): the
    model has seen those, compression rarely flips them, so they say little."""
    from edgefg.calibration.dataset import Sample
    from edgefg.compress.agreement import pick_unlabelled, scan_unlabelled

    paths, other = scan_unlabelled(opts.agreement_data)
    found = len(paths)
    paths = pick_unlabelled(paths, opts.agreement_size, opts.seed)
    trained = _same_files(paths, Path(opts.data))
    if trained:
        log.warning("%d of the %d agreement frames are also training images (--data): they say little about INT8 or pruning "
                    "(the model fits them); use frames the model has not seen", trained, len(paths))
    info = {"data": str(opts.agreement_data), "found": found, "used": len(paths), "ignored_files": other, "also_in_training_data": trained}
    return [Sample(p, None) for p in paths], info


def _same_files(paths: list[Path], folder: Path) -> int:
    """How many of ``paths`` are files under ``folder`` (the same inode: copies under another name are not found)."""
    seen = {(st.st_dev, st.st_ino) for st in (p.stat() for p in folder.rglob("*") if p.is_file())} if folder.is_dir() else set()
    return sum((st.st_dev, st.st_ino) in seen for st in (p.stat() for p in paths))


def _plan(opts: TuneOptions, configs: list[TrialConfig]) -> dict[str, Any]:
    ident = {"model": str(Path(opts.model).resolve()), "data": str(Path(opts.data).resolve()), "val_data": str(Path(opts.val_data).resolve()),
             "targets": list(opts.targets), "trials": [c.trial_id for c in configs], "val_size": opts.val_size, "seed": opts.seed}
    if opts.agreement_data is not None:  # the frames are scored inside each trial: part of the sweep's identity
        ident.update(agreement_data=str(Path(opts.agreement_data).resolve()), agreement_size=opts.agreement_size)
    if opts.checkpoint is not None and opts.checkpoint.given():  # a bare checkpoint's settings make the model: a resume must not mix two
        ident["checkpoint"] = "; ".join(f"{k}={getattr(opts.checkpoint, k)}" for k in opts.checkpoint.given())
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    return {"key": key, **ident, "configs": [c.to_dict() for c in configs]}


def _check_inputs(opts: TuneOptions) -> None:
    for flag, p in (("MODEL", opts.model), ("--data", opts.data), ("--val-data", opts.val_data), ("--agreement-data", opts.agreement_data)):
        if p is not None and not Path(p).exists():
            raise InputPathError(f"{flag} '{p}' does not exist")
    from edgefg.tune.options import OBJECTIVES

    if opts.objective not in OBJECTIVES:
        raise DataError(f"unknown objective '{opts.objective}'", f"use one of {', '.join(OBJECTIVES)}")
    if opts.budget.min_agreement is not None and opts.agreement_data is None:
        raise DataError("--min-agreement needs --agreement-data DIR (unlabelled frames the model was not trained on)")
    if not opts.targets:
        raise DataError("tune needs at least one --target")
    for t in opts.targets:
        load_target(t).require_available()  # unknown or planned target: one-line error before any work


def tune(opts: TuneOptions) -> dict[str, Any]:
    """Run (or resume) the sweep and write ``tune.json``/``tune.md``/PNGs/``best/``. Raises
    :class:`CheckFailed` (after writing the report) when some target has no trial within its budget."""
    t0 = time.perf_counter()
    _check_inputs(opts)
    out = Path(opts.out)
    space = resolve_space(opts)
    configs = space.sample(opts.trials, opts.seed)
    store = TrialStore(out)
    store.start(_plan(opts, configs), opts.resume)
    done = store.load()
    pending = [c for c in configs if c.trial_id not in done]
    log.info("%d trial(s): %d done, %d to run", len(configs), len(configs) - len(pending), len(pending))

    budgets = target_budgets(opts)
    drops = [b.max_drop for b in budgets.values()]
    if opts.early_stop and drops and all(d is not None for d in drops):  # hopeless for every target = hopeless
        opts = dataclasses.replace(opts, early_stop_drop=max(drops))
    engine = make_engine(opts.ray)  # before any heavy work: a bad --ray address fails fast
    from edgefg.manifest import load_manifest

    ref_art = build_artifact(opts, TrialConfig(precision="fp32"))  # the FP32 reference = the native float artifact
    if ref_art["error"]:
        raise DataError(f"cannot build the FP32 reference: {ref_art['error']}")
    labels = load_manifest(ref_art["artifact"]).labels
    val = scan(opts.val_data, labels)
    if not val.labelled:
        raise DataError(f"--val-data '{opts.val_data}' needs one sub-folder per class", "tune validates per class against the FP32 reference")
    samples = stratified_subset(val.samples, opts.val_size, opts.seed, warn=False) if opts.val_size else val.samples
    frames_info = None
    if opts.agreement_data is not None:
        frames, frames_info = agreement_samples(opts)
        samples = list(samples) + frames
    reference = reference_scores(ref_art["artifact"], samples, opts.batch_size)
    sweep = Sweep(opts, samples, reference, ref_art)

    def on_result(result: dict[str, Any]) -> None:
        store.save(result)
        done[result["id"]] = result
        log.info("trial %s %s: %s%s", result["id"], result["label"], result["status"], f" ({result['error']})" if result["error"] else "")

    try:
        if pending:
            engine.run(sweep, pending, on_result)
    finally:
        close = getattr(engine, "close", None)
        if close:
            close()
    trials = [done[c.trial_id] for c in configs if c.trial_id in done]
    interleaved_latency(out, trials, opts)
    result: dict[str, Any] = {
        "model": str(opts.model),
        "data": str(opts.data),
        "val_data": str(opts.val_data),
        "val_images": int((reference.labels >= 0).sum()),
        "objective": opts.objective,
        "agreement_data": frames_info,
        "reference": {"artifact": ref_art["artifact"], "top1": _top1(reference, labels)},
        "targets": list(opts.targets),
        "space": asdict(space),
        "engine": engine.describe(),
        "wall_s": time.perf_counter() - t0,
        "early_stopping": early_stopping_summary(trials, opts),
        "trials": trials,
        **summarize(trials, opts.targets, budgets, opts.objective),
    }
    write_report(out, result, budgets)
    missing = [t for t, b in result["best"].items() if not b.get("trial")]
    if missing:
        raise CheckFailed(
            f"no trial meets the budget for {', '.join(missing)}: " + "; ".join(f"{t}: {result['best'][t]['reason']}" for t in missing),
            f"see {out / 'tune.md'}; relax the budget or widen the search space",
        )
    return result


def early_stopping_summary(trials: list[dict[str, Any]], opts: TuneOptions) -> dict[str, Any]:
    """Which trials' distillation stopped early and the training time that saved (epochs not run ×
    the trial's own seconds per epoch)."""
    stopped = {t["id"]: t["stopped_early"] for t in trials if t.get("stopped_early")}
    return {"enabled": bool(opts.early_stop and opts.early_stop_drop is not None), "max_drop": opts.early_stop_drop,
            "stopped": stopped, "saved_s_estimate": sum(s["saved_s_estimate"] for s in stopped.values()),
            "epochs_skipped": sum(s["of_epochs"] - s["epoch"] for s in stopped.values())}


def interleaved_latency(out: Path, trials: list[dict[str, Any]], opts: TuneOptions) -> None:
    """Re-time every bundle of a target measured on this host in ONE interleaved bench (A, B, C, A, B, C …),
    so the machine's drift between trials hits all of them alike and the Pareto front compares
    like with like. Each trial's own measurement stays as ``latency_ms_p50_alone``. Device-node
    measurements are left as the device measured them."""
    from edgefg.runtime.bench import BenchOptions, run_bench
    from edgefg.tune.latency_source import source_of_row
    from edgefg.tune.work import stand_in_backend

    for target in opts.targets:
        timed = [t for t in trials if not (t["targets"].get(target) or {}).get("error", True)
                 and source_of_row(t["targets"][target], target).kind != "device"]  # timed on this host
        if len(timed) < 2:
            continue
        rows = [t["targets"][target] for t in timed]
        bundles = [out / "trials" / t["id"] / target for t in timed]
        log.info("re-timing %d %s bundles in one interleaved bench", len(bundles), target)
        bench = run_bench(bundles, BenchOptions(rounds=opts.bench_rounds + 2, iters=opts.bench_iters, warmup=5, backend=stand_in_backend(bundles[0])))
        for r, b in zip(rows, bench["results"]):
            r.setdefault("latency_ms_p50_alone", r["latency_ms_p50"])
            r["latency_ms_p50"], r["latency_ms_p90"], r["latency_ms_iqr"] = b["latency_ms"]["p50"], b["latency_ms"]["p90"], b["latency_ms"].get("iqr")
            r["latency"] = f"interleaved with the other {len(bundles) - 1} {target} bundles"


def _top1(scored, labels) -> float:
    from edgefg.validate.metrics import classification

    return classification(scored.scores, scored.labels, labels)["top1"]
