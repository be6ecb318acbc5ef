"""Accuracy/latency Pareto fronts and the best trial per target under its budget."""
from __future__ import annotations

from typing import Any

from edgefg.tune.options import OBJECTIVES, Budget
from edgefg.validate.metrics import class_failures, gate_p


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


def class_failures_of(r: dict[str, Any], budget: Budget) -> list[dict[str, Any]] | None:
    """The classes over ``budget.max_class_drop`` by the budget's gate (None: a result recorded before
    per-class losses were kept, judged by its worst drop in points)."""
    losses = r.get("class_losses")
    if losses is None or budget.max_class_drop is None:
        return None
    return class_failures(losses, budget.max_class_drop, budget.class_alpha, budget.class_gate)


def budget_violations(r: dict[str, Any], budget: Budget) -> list[str]:
    out = []
    if budget.max_latency_ms is not None and r["latency_ms_p50"] > budget.max_latency_ms:
        out.append(f"p50 {r['latency_ms_p50']:.2f} ms > {budget.max_latency_ms:g} ms")
    if budget.max_size_mb is not None and r["size_mb"] > budget.max_size_mb:
        out.append(f"size {r['size_mb']:.2f} MB > {budget.max_size_mb:g} MB")
    if budget.max_drop is not None and r["top1_drop"] > budget.max_drop + 1e-9:
        out.append(f"top-1 drop {r['top1_drop']:.2f} pt > {budget.max_drop:g} pt")
    if budget.max_class_drop is not None:
        fails = class_failures_of(r, budget)
        if fails is None and r["worst_class_drop"] > budget.max_class_drop + 1e-9:
            out.append(f"worst class drop {r['worst_class_drop']:.1f} pt > {budget.max_class_drop:g} pt")
        elif fails:
            worst = fails[0]
            why = "" if budget.class_gate == "points" else f", p = {gate_p(worst):.2g}"
            out.append(f"{len(fails)} class(es) " + ("" if budget.class_gate == "points" else "significantly ") +
                       f"worse than −{budget.max_class_drop:g} pt: {worst['class']} −{worst['drop_pts']:.1f} pt ({worst['drop_images']} of {worst['images']} img{why})")
    if budget.min_agreement is not None:
        a = r.get("frame_agreement")
        if a is None:
            out.append("no agreement frames scored (pass --agreement-data)")
        elif a["agreement"] < budget.min_agreement - 1e-12:
            out.append(f"agreement {a['agreement']:.4f} < {budget.min_agreement:g} on {a['images']} frames")
    return out


def objective_key(r: dict[str, Any], objective: str) -> tuple:
    """Sort key, best first: latency = fastest (ties: smaller, more accurate); size = smallest (ties:
    faster, more accurate); accuracy = most accurate (ties: faster, smaller)."""
    lat, size, top1 = r["latency_ms_p50"], r["size_mb"], r["top1"]
    if objective == "latency":
        return (lat, size, -top1)
    if objective == "size":
        return (size, lat, -top1)
    if objective == "accuracy":
        return (-top1, lat, size)
    raise ValueError(f"objective '{objective}' is not one of {OBJECTIVES}")


def _pick(tid: str, r: dict[str, Any]) -> dict[str, Any]:
    return {"trial": tid, "top1": r["top1"], "latency_ms_p50": r["latency_ms_p50"], "size_mb": r["size_mb"]}


def best_within(points: list[tuple[str, dict[str, Any]]], budget: Budget, n_trials: int, objective: str = "latency") -> dict[str, Any]:
    """The best trial within ``budget`` by ``objective`` and the runner-up, or ``trial: None`` with the reason."""
    ok = sorted(((tid, r) for tid, r in points if not budget_violations(r, budget)), key=lambda p: objective_key(p[1], objective))
    if ok:
        runner = _pick(*ok[1]) if len(ok) > 1 else None
        return {**_pick(*ok[0]), "objective": objective, "within_budget": len(ok), "runner_up": runner, "reason": None}
    if not points:
        return {"trial": None, "objective": objective, "reason": f"none of the {n_trials} trial(s) produced a measured bundle for this target"}
    # closest: fewest limits broken; among those, the best by the objective
    closest = min(points, key=lambda p: (len(budget_violations(p[1], budget)), objective_key(p[1], objective)))
    return {"trial": None, "objective": objective,
            "reason": f"no trial within the budget ({len(points)} measured); closest {closest[0]}: " + "; ".join(budget_violations(closest[1], budget))}
