"""Accuracy/latency Pareto fronts and the best trial per target under its budget."""
from __future__ import annotations

from typing import Any

from edgefg.tune.options import Budget


def measured(trials: list[dict[str, Any]], target: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for t in trials:
        r = t["targets"].get(target) or {}
        if not r.get("error") and r.get("top1") is not None and r.get("latency_ms_p50") is not None:
            out.append((t["id"], r))
    return out


def pareto_front(points: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Ids not dominated in (higher top-1, lower p50 latency), fastest first."""
    front = []
    for tid, r in points:
        dominated = any(
            o["top1"] >= r["top1"] and o["latency_ms_p50"] <= r["latency_ms_p50"] and (o["top1"] > r["top1"] or o["latency_ms_p50"] < r["latency_ms_p50"])
            for oid, o in points if oid != tid
        )
        if not dominated:
            front.append((r["latency_ms_p50"], tid))
    return [tid for _, tid in sorted(front)]


def budget_violations(r: dict[str, Any], budget: Budget) -> list[str]:
    out = []
    if budget.max_latency_ms is not None and r["latency_ms_p50"] > budget.max_latency_ms:
        out.append(f"p50 {r['latency_ms_p50']:.2f} ms > {budget.max_latency_ms:g} ms")
    if budget.max_size_mb is not None and r["size_mb"] > budget.max_size_mb:
        out.append(f"size {r['size_mb']:.2f} MB > {budget.max_size_mb:g} MB")
    if budget.max_drop is not None and r["top1_drop"] > budget.max_drop + 1e-9:
        out.append(f"top-1 drop {r['top1_drop']:.2f} pt > {budget.max_drop:g} pt")
    if budget.max_class_drop is not None and r["worst_class_drop"] > budget.max_class_drop + 1e-9:
        out.append(f"worst class drop {r['worst_class_drop']:.1f} pt > {budget.max_class_drop:g} pt")
    return out


def best_within(points: list[tuple[str, dict[str, Any]]], budget: Budget, n_trials: int) -> dict[str, Any]:
    """The most accurate trial within ``budget`` (ties: the faster), or ``trial: None`` with the reason."""
    ok = [(tid, r) for tid, r in points if not budget_violations(r, budget)]
    if ok:
        tid, r = max(ok, key=lambda p: (p[1]["top1"], -p[1]["latency_ms_p50"]))
        return {"trial": tid, "top1": r["top1"], "latency_ms_p50": r["latency_ms_p50"], "size_mb": r["size_mb"], "reason": None}
    if not points:
        return {"trial": None, "reason": f"none of the {n_trials} trial(s) produced a measured bundle for this target"}
    closest = min(points, key=lambda p: len(budget_violations(p[1], budget)))
    return {"trial": None, "reason": f"no trial within the budget ({len(points)} measured); closest {closest[0]}: " + "; ".join(budget_violations(closest[1], budget))}
