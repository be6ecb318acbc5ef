"""``edgefg compare A B ...``: run bundles side by side on the same images (Polygraphy-style).

The first bundle is the reference. For every other bundle: numeric parity of the output (cosine,
max absolute/relative error, elements outside ``atol + rtol·|ref|``), top-1 agreement, and — on
labelled data — accuracy next to the reference's with the worst class drop. Metrics come from
:mod:`edgefg.validate.metrics`; this module only orchestrates and applies tolerances.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgefg.calibration.dataset import scan
from edgefg.errors import ClassMismatchError, DataError, UnsupportedError
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.validate.evaluate import score_samples
from edgefg.validate.metrics import class_drops, classification, near_zero_note, parity, significant_drop_count, strip_arrays, worst_class_drop
from edgefg.validate.report import fmt, markdown_table
from edgefg.validate.stand_in import StandIn, open_bundle

CLASS_ALPHA = 0.05  # a class drop counts as real when its Holm-adjusted paired sign-test p is below this


@dataclass
class Tolerances:
    atol: float | None = None
    rtol: float | None = None
    min_cosine: float | None = None
    min_agreement: float | None = None

    @property
    def elementwise(self) -> bool:
        return self.atol is not None or self.rtol is not None


def _open(path: Path, stand_in: bool) -> tuple[LoadedBundle, str, StandIn | None]:
    return open_bundle(path, stand_in, "compare")


def tolerance_check(cand: np.ndarray, ref: np.ndarray, tol: Tolerances) -> dict[str, Any]:
    """Elements outside ``atol + rtol·|ref|`` (numpy.isclose semantics; an unset one counts as 0)."""
    atol, rtol = tol.atol or 0.0, tol.rtol or 0.0
    bad = np.abs(cand.astype(np.float64) - ref.astype(np.float64)) > atol + rtol * np.abs(ref.astype(np.float64))
    return {"mismatched": int(bad.sum()), "mismatched_fraction": float(bad.mean()) if bad.size else 0.0}


def compare(
    bundles: list[str | Path],
    data: str | Path,
    tol: Tolerances | None = None,
    max_images: int | None = None,
    batch_size: int = 8,
    stand_in: bool = False,
) -> dict[str, Any]:
    """Score every bundle on ``data``; compare each with the first. ``passed`` is False when a
    tolerance fails. ``stand_in`` runs device-only bundles (TensorRT) in their host stand-in."""
    if len(bundles) < 2:
        raise UnsupportedError("compare needs at least two bundles (the first is the reference)")
    tol = tol or Tolerances()
    paths = [Path(b) for b in bundles]
    ref_bundle, ref_runtime, ref_sub = _open(paths[0], stand_in)
    rows: list[dict[str, Any]] = []
    with ref_bundle:
        images = scan(data, ref_bundle.labels)
        samples = images.samples[:max_images] if max_images else images.samples
        if not samples:
            raise DataError(f"no images in '{data}'")
        ref_scored = score_samples(ref_bundle, samples, batch_size, f"scoring {paths[0].name}")
        ref_acc = classification(ref_scored.scores, ref_scored.labels, ref_bundle.labels) if images.labelled else None
        activation = ref_bundle.manifest.output_activation
        rows.append(_row(paths[0], ref_bundle, ref_runtime, ref_sub, ref_acc, None, None, [], True))
        output_name = ref_bundle.manifest.outputs[0].name
        labels = ref_bundle.labels
    for path in paths[1:]:
        bundle, runtime, sub = _open(path, stand_in)
        with bundle:
            if bundle.labels != labels:
                raise ClassMismatchError(
                    f"'{path}' has different labels from the reference '{paths[0]}' ({len(bundle.labels)} vs {len(labels)})",
                    "compare bundles made from the same model",
                )
            scored = score_samples(bundle, samples, batch_size, f"scoring {path.name}")
            if scored.paths != ref_scored.paths:
                raise DataError(f"'{path}' and the reference read different images (corrupt files?)")
            par = parity(scored.scores, ref_scored.scores, activation)
            par.update(tolerance_check(scored.scores, ref_scored.scores, tol) if tol.elementwise else {})
            acc = classification(scored.scores, scored.labels, labels) if images.labelled else None
            drops = class_drops(acc, ref_acc) if acc and ref_acc else []
            checks = []
            if tol.elementwise:
                checks.append({"name": f"|{output_name}| within atol {tol.atol or 0:g} + rtol {tol.rtol or 0:g}", "value": par["mismatched"], "limit": 0, "passed": par["mismatched"] == 0})
            if tol.min_cosine is not None:
                checks.append({"name": "min cosine", "value": par["cosine_min"], "limit": tol.min_cosine, "passed": par["cosine_min"] >= tol.min_cosine})
            if tol.min_agreement is not None:
                checks.append({"name": "top-1 agreement", "value": par["top1_agreement"], "limit": tol.min_agreement, "passed": par["top1_agreement"] >= tol.min_agreement})
            rows.append(_row(path, bundle, runtime, sub, acc, par, drops, checks, all(c["passed"] for c in checks)))
    return {
        "reference": str(paths[0]),
        "data": str(data),
        "images": int(len(ref_scored.labels)),
        "labelled": images.labelled,
        "output": output_name,
        "tolerances": asdict(tol),
        "bundles": rows,
        "passed": all(r["passed"] for r in rows),
    }


def _row(path, bundle: LoadedBundle, runtime: str, sub: StandIn | None, acc, par, drops, checks, passed) -> dict[str, Any]:
    m = bundle.manifest
    row: dict[str, Any] = {"bundle": str(path), "target": m.target, "format": m.format, "precision": m.precision, "runtime": runtime,
                           "stand_in": sub.to_dict() if sub else None}
    if acc is not None:
        row["accuracy"] = {k: v for k, v in strip_arrays(acc).items() if k != "per_class"}
    if drops:
        row["worst_class_drop"], row["worst_class"] = worst_class_drop(drops)
        row["classes_significantly_worse"] = significant_drop_count(drops, CLASS_ALPHA)
    row["parity"] = par
    row["checks"] = checks
    row["passed"] = passed
    return row


def compare_markdown(result: dict[str, Any]) -> str:
    lines = [f"Compared on {result['images']} images from {result['data']} (reference: {result['reference']}, output '{result['output']}')", ""]
    cols = ["bundle", "target", "precision", "runtime", "top-1", "top-5", "worst-class drop", "cosine min", "max abs", "max rel", "agreement", "result"]
    rows = []
    for r in result["bundles"]:
        acc, par = r.get("accuracy") or {}, r.get("parity") or {}
        result_text = "reference" if r["parity"] is None else ("pass" if r["passed"] else "FAIL") if r["checks"] else "–"
        rows.append([Path(r["bundle"]).name, fmt(r["target"]), r["precision"], r["runtime"], fmt(acc.get("top1")), fmt(acc.get("top5")),
                     fmt(r.get("worst_class_drop")), fmt(par.get("cosine_min")), fmt(par.get("max_abs")), fmt(par.get("max_rel")),
                     fmt(par.get("top1_agreement")), result_text])
    lines += markdown_table(cols, rows)
    failed = [f"{Path(r['bundle']).name}: {c['name']} = {fmt(c['value'])} (limit {fmt(c['limit'])})" for r in result["bundles"] for c in r["checks"] if not c["passed"]]
    notes = [f"{Path(r['bundle']).name}: {n}" for r in result["bundles"] if (n := near_zero_note(r.get("parity") or {}))]
    stand = [f"**Stand-in** — {Path(r['bundle']).name}: {r['stand_in']['text']}." for r in result["bundles"] if r.get("stand_in")]
    if stand:
        lines += [""] + stand
    if notes:
        lines += [""] + [f"Note — {n}" for n in notes]
    if failed:
        lines += ["", "Failed:"] + [f"- {f}" for f in failed]
    return "\n".join(lines) + "\n"
