"""The fastest bundle within an accuracy tolerance of the first (what ``yolo benchmark`` answers).

``edgefg bench A B C --data test/`` times the bundles side by side (:mod:`edgefg.runtime.bench`) and
scores them on the same images (:func:`edgefg.validate.compare.compare`, A the reference); this module
joins the two by bundle and names the fastest bundle whose top-1 is within ``max_drop`` points of A's and no class significantly worse (Holm-adjusted paired sign test, as tune's
class gate: a fine-grained class can collapse while the mean barely moves).
Pure functions over the two result dicts, so the choice is tested without timing anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def join_accuracy(bench: dict[str, Any], compared: dict[str, Any], max_drop: float) -> dict[str, Any]:
    """``bench`` with each row's accuracy, drop vs the first bundle and ``within`` (top-1 drop ≤
    ``max_drop`` points and no class significantly worse), and ``fastest_within``: the bundle with the lowest p50 among those within."""
    by_bundle = {r["bundle"]: r for r in compared["bundles"]}
    ref = compared["bundles"][0].get("accuracy") or {}
    rows = []
    for row in bench["results"]:
        c = by_bundle[row["bundle"]]
        acc = c.get("accuracy") or {}
        drop = None if acc.get("top1") is None or ref.get("top1") is None else 100.0 * (ref["top1"] - acc["top1"])
        par = c.get("parity") or {}
        rows.append({**row, "top1": acc.get("top1"), "top5": acc.get("top5"), "top1_drop_pts": drop,
                     "worst_class_drop": c.get("worst_class_drop"), "worst_class": c.get("worst_class"),
                     "classes_significantly_worse": c.get("classes_significantly_worse", 0),
                     "top1_agreement": par.get("top1_agreement"), "stand_in": c.get("stand_in"),
                     "within": drop is not None and drop <= max_drop + 1e-9 and not c.get("classes_significantly_worse")})
    within = [r for r in rows if r["within"]]
    best = min(within, key=lambda r: r["latency_ms"]["p50"]) if within else None
    first = rows[0] if rows else None
    summary = None
    if best is not None and first is not None:
        summary = {"bundle": best["bundle"], "speedup": first["latency_ms"]["p50"] / best["latency_ms"]["p50"],
                   "size_ratio": first["size_mb"] / best["size_mb"] if best["size_mb"] else None, "top1_drop_pts": best["top1_drop_pts"]}
    return {**bench, "results": rows, "accuracy": {"data": compared["data"], "images": compared["images"], "labelled": compared["labelled"],
                                                    "reference": compared["reference"], "max_drop_pts": max_drop},
            "fastest_within": summary}


def fastest_line(result: dict[str, Any]) -> str:
    """One sentence naming the choice (or saying there is none)."""
    acc = result.get("accuracy")
    if not acc:
        return ""
    ref = Path(acc["reference"]).name
    best = result.get("fastest_within")
    if not acc["labelled"]:
        return f"No labels in {acc['data']}: accuracy (and the fastest within tolerance) needs a labelled ImageFolder."
    if best is None:
        return f"No bundle is within {acc['max_drop_pts']:g} pt of {ref} with no class significantly worse on {acc['images']} images."
    name = Path(best["bundle"]).name
    if name == ref:
        return f"Fastest within {acc['max_drop_pts']:g} pt top-1 of {ref}, no class significantly worse ({acc['images']} images): {ref} itself — no other bundle is both faster and within."
    size = f", {best['size_ratio']:.2f}× smaller" if best.get("size_ratio") else ""
    return (f"Fastest within {acc['max_drop_pts']:g} pt top-1 of {ref}, no class significantly worse ({acc['images']} images): {name} — {best['speedup']:.2f}× faster{size}, "
            f"top-1 {0.0 - best['top1_drop_pts']:+.2f} pt.")
