"""``edgefg validate``: accuracy-regression check of a bundle on labelled (or unlabelled) images.

Reports top-1/top-5, per-class accuracy, worst-class drop, agreement and mean KL against a
reference, and evaluates the thresholds a CI gate sets. Needs no torch unless the reference is
a PyTorch model.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import scan
from edgefg.errors import ClassMismatchError, DataError, InputPathError, UnsupportedError
from edgefg.manifest import MANIFEST_NAME
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.validate.evaluate import Scored, score_samples
from edgefg.validate.limits import DIRECTIONS, check_message, holds
from edgefg.validate.metrics import class_drops, class_failures, class_gate_summary, classification, gate_p, parity, significant_worst_drop, strip_arrays, worst_class_drop
from edgefg.validate.stand_in import open_bundle


@dataclass
class Thresholds:
    max_top1_drop: float | None = None  # percentage points vs the reference
    max_class_drop: float | None = None  # points; a class fails only if its drop is also significant (as in compress)
    min_top1: float | None = None  # fraction 0-1
    min_agreement: float | None = None  # fraction 0-1
    class_alpha: float = 0.05  # Holm-corrected paired sign-test level for a class drop to count
    class_gate: str = "evidence"  # evidence: over the limit AND significant; points: every drop over the limit

    def needs_reference(self) -> list[str]:
        return [n for n in ("max_top1_drop", "max_class_drop", "min_agreement") if getattr(self, n) is not None]


def class_drop_check(drops: list[dict], max_class_drop: float, alpha: float, gate: str = "evidence") -> dict[str, Any]:
    """The ``--max-class-drop`` gate, with compress's and tune's meaning: a class fails when it lost
    more than ``max_class_drop`` points and (``gate="evidence"``) its paired sign test, Holm-corrected
    over the tested classes, gives p < ``alpha``. The value is the worst drop that counts, so
    value ≤ limit exactly when no class fails."""
    over = class_failures(drops, max_class_drop, alpha, gate)
    value = significant_worst_drop(drops, alpha, gate)
    summary = class_gate_summary(drops, alpha, gate)
    detail = ("worst class drop in raw points" if gate == "points" else
              f"worst class whose drop is significant, Holm-corrected sign test p < {alpha:g}; {summary['sentence']}")
    if over:
        shown = ", ".join(f"{r['class']} −{r['drop_pts']:.1f} pt ({r['drop_images']} img" + ("" if gate_p(r) is None else f", p = {gate_p(r):.2g}") + ")"
                          for r in over[:3])
        detail += f"; over: {shown}" + (f" (+{len(over) - 3} more)" if len(over) > 3 else "")
    return {"name": "class_drop", "value": value, "limit": max_class_drop, "direction": DIRECTIONS["class_drop"], "passed": not over,
            "message": f"{check_message('class_drop', value, max_class_drop, not over)} ({detail})", "class_alpha": alpha,
            "class_gate": summary, "classes_over": [r["class"] for r in over]}


# How a bundle's images are scored: in this process (default) or sharded over workers (edgefg.distributed).
Scorer = Callable[[LoadedBundle, Sequence, int, str], Scored]


def reference_metrics(scored: Scored, ref_scored: Scored, labels: Sequence[str], activation: str, labelled: bool) -> dict[str, Any]:
    """Agreement and parity with the reference on the same images and, on labelled data, the
    top-1 drop and the per-class drops with their paired sign test (:func:`class_drops`)."""
    if ref_scored.paths != scored.paths:
        keep = set(ref_scored.paths) & set(scored.paths)
        raise DataError(f"reference and bundle read different images ({len(keep)} in common)")
    par = parity(scored.scores, ref_scored.scores, activation)
    out: dict[str, Any] = {"agreement": par["top1_agreement"], "mean_kl": par["mean_kl"], "parity": par}
    if labelled:
        cand = classification(scored.scores, scored.labels, labels)
        ref = classification(ref_scored.scores, ref_scored.labels, labels)
        drops = class_drops(cand, ref)
        out["reference_top1"] = ref["top1"]
        out["reference_top5"] = ref["top5"]
        out["top1_drop"] = 100.0 * (ref["top1"] - cand["top1"])
        out["worst_class_drop"] = worst_class_drop(drops)[0]
        out["class_drops"] = drops
    return out


def _reference_scores(reference: Path, bundle: LoadedBundle, samples, batch_size: int, score: Scorer = score_samples) -> tuple[Scored, str]:
    """Score the same images with the reference: an edgefg artifact/bundle, an ONNX file, or a torch model."""
    if (reference / MANIFEST_NAME).is_file():
        with LoadedBundle(reference) as ref:
            if ref.labels != bundle.labels:
                raise ClassMismatchError(
                    f"reference '{reference}' has different labels from the bundle ({len(ref.labels)} vs {len(bundle.labels)})",
                    "compare bundles made from the same model",
                )
            return score(ref, samples, batch_size, "scoring reference"), f"{ref.manifest.precision} {ref.manifest.backend}"
    if reference.suffix.lower() == ".onnx":
        manifest = bundle.manifest.with_backend("onnxruntime", model_file=reference.name)
        manifest.outputs[0].quant_scale = None
        with LoadedBundle(reference.parent, verify=False, manifest=manifest) as ref:
            return score(ref, samples, batch_size, "scoring reference"), "onnx onnxruntime"
    return _torch_reference(reference, bundle, samples, batch_size), "pytorch"


def _torch_reference(reference: Path, bundle: LoadedBundle, samples, batch_size: int) -> Scored:
    import torch

    from edgefg.calibration.dataset import iter_batches
    from edgefg.models.loader import CHECKPOINT_SUFFIXES, load_model

    if reference.is_file() and reference.suffix.lower() in CHECKPOINT_SUFFIXES:  # load_model's hint would name --arch, which validate has not
        raise UnsupportedError(
            f"--reference '{reference.name}' is a bare checkpoint: validate cannot tell its architecture or preprocessing",
            f"make it an artifact first (edgefg compress {reference} --config config.json --recipe fp32 -o REF, or --arch ARCH --num-classes N "
            "with its --mean/--std/--crop-pct/--interpolation/--model-input-size instead of --config) and pass REF, "
            "or pass a timm hub folder with its config.json")
    model = load_model(reference)
    if model.labels != bundle.labels:
        raise ClassMismatchError(f"reference model '{reference}' has different labels from the bundle")
    outs, labels, paths, skipped = [], [], [], []
    with torch.no_grad():
        for b in iter_batches(samples, model.preprocess, batch_size, skipped):
            outs.append(model.module(torch.from_numpy(b.x)).numpy())
            labels.append(b.labels)
            paths += b.paths
    return Scored(np.concatenate(outs), np.concatenate(labels), paths, skipped)


def _check_preprocess(bundle: LoadedBundle, samples, count: int):
    from edgefg.calibration.dataset import stratified_subset
    from edgefg.validate.preprocess_check import check_preprocess

    picked = stratified_subset(samples, count, warn=False)
    return check_preprocess(bundle.manifest.preprocess, [s.path for s in picked],
                            model_config=bundle.manifest.source.get("data_config"), predict=bundle.scores)


def validate(
    bundle_dir: str | Path,
    data: str | Path,
    reference: str | Path | None = None,
    thresholds: Thresholds | None = None,
    batch_size: int = 8,
    max_images: int | None = None,
    backend: str | None = None,
    check_preprocess: int = 0,
    trust: Sequence[Any] | None = None,
    scorer: Scorer | None = None,
    drift_reference: str | Path | None = None,
    stand_in: bool = False,
) -> dict[str, Any]:
    """Score ``bundle_dir`` on ``data`` (and ``reference`` on the same images); evaluate ``thresholds``.
    ``backend`` overrides the bundle's runtime backend (a host stand-in for a device engine);
    ``check_preprocess`` > 0 compares the bundle's preprocessing with timm's own transform on that
    many images (stratified) and adds it to the checks (needs timm); ``trust``: public keys, one of
    which must have signed the bundle (the reference is not checked); ``scorer`` replaces in-process
    scoring (e.g. sharded over Ray actors) with the same results. ``drift_reference``: also write the
    drift reference profile of the bundle on these images there (:mod:`edgefg.runtime.outputs.drift_profile`;
    an unlabelled folder needs no ``reference`` then). ``stand_in``: a bundle whose engine exists only on the
    device (TensorRT) is scored in its host stand-in (:mod:`edgefg.validate.stand_in`) and the result says so."""
    score = scorer or score_samples
    thresholds = thresholds or Thresholds()
    missing = thresholds.needs_reference()
    if missing and reference is None:
        raise UnsupportedError(f"{', '.join('--' + m.replace('_', '-') for m in missing)} need(s) --reference", "pass the FP32 artifact or model as --reference")
    if reference is not None and not Path(reference).exists():  # before minutes of scoring, not after
        raise InputPathError(f"reference '{reference}' does not exist", "pass the FP32 artifact/bundle directory, an .onnx, or a PyTorch model")
    opened, runtime, sub = open_bundle(bundle_dir, stand_in, "validate", trust=trust, backend=backend)
    with opened as bundle:
        images = scan(data, bundle.labels)
        if not images.labelled and reference is None and drift_reference is None:
            raise DataError(f"'{data}' has no class folders, so only agreement can be checked", "pass --reference ARTIFACT|MODEL")
        samples = images.samples[:max_images] if max_images else images.samples
        pre_check = _check_preprocess(bundle, samples, check_preprocess) if check_preprocess else None
        scored = score(bundle, samples, batch_size, "validating")
        if len(scored.labels) == 0:
            raise DataError(f"no readable images in '{data}'")
        result: dict[str, Any] = {
            "bundle": str(bundle_dir),
            "backend": runtime,
            "stand_in": sub.to_dict() if sub else None,
            "precision": bundle.manifest.precision,
            "target": bundle.manifest.target,
            "data": str(data),
            "images": int(len(scored.labels)),
            "skipped_corrupt": len(scored.skipped),
            "labelled": images.labelled,
            "reference": str(reference) if reference else None,
        }
        if pre_check is not None:
            result["preprocess_check"] = pre_check.to_dict()
        if drift_reference is not None:  # the scores just computed; the images are decoded again for the input signals only
            from edgefg.runtime.outputs.drift_profile import build_profile, write_profile

            profile = build_profile(bundle, scored.paths, str(data), scores=scored.scores)
            write_profile(drift_reference, profile)
            result["drift_reference"] = {"path": str(drift_reference), "images": profile["images"]}
        activation = bundle.manifest.output_activation
        if images.labelled:
            cand = classification(scored.scores, scored.labels, bundle.labels)
            result.update({k: v for k, v in strip_arrays(cand).items() if k != "per_class"})
            result["per_class"] = cand["per_class"]
        if reference is not None:
            ref_scored, ref_kind = _reference_scores(Path(reference), bundle, samples, batch_size, score)
            result["reference_kind"] = ref_kind
            result.update(reference_metrics(scored, ref_scored, bundle.labels, activation, images.labelled))
    for key in ("top1", "top5", "reference_top1", "top1_drop", "worst_class_drop", "agreement", "mean_kl"):
        result.setdefault(key, None)
    checks = []

    def check(name: str, value: float | None, limit: float | None, passed: bool | None = None, detail: str = "") -> None:
        if limit is not None and value is not None:
            ok = holds(name, value, limit) if passed is None else passed
            message = check_message(name, value, limit, ok) + (f" ({detail})" if detail else "")
            checks.append({"name": name, "value": value, "limit": limit, "direction": DIRECTIONS[name], "passed": bool(ok), "message": message})

    check("top1_drop", result.get("top1_drop"), thresholds.max_top1_drop)
    if thresholds.max_class_drop is not None and result.get("class_drops") is not None:
        checks.append(class_drop_check(result["class_drops"], thresholds.max_class_drop, thresholds.class_alpha, thresholds.class_gate))
    if result.get("class_drops") is not None:
        result["class_gate"] = class_gate_summary(result["class_drops"], thresholds.class_alpha, thresholds.class_gate)
    check("top1", result.get("top1"), thresholds.min_top1)
    check("agreement", result.get("agreement"), thresholds.min_agreement)
    if pre_check is not None:
        check("preprocess_parity", pre_check.max_abs, pre_check.tolerance, pre_check.passed, pre_check.summary())
    for name, limit in (("top1_drop", thresholds.max_top1_drop), ("worst_class_drop", thresholds.max_class_drop), ("top1", thresholds.min_top1)):
        if limit is not None and result.get(name) is None:
            raise DataError(f"the {name} threshold needs labelled data (class sub-folders) in '{data}'")
    result["checks"] = checks
    result["passed"] = all(c["passed"] for c in checks)
    return result
