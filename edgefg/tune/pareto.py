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


def pareto_front(points: list[tuple[str, dict[str, Any]]], cost: str = "latency_ms_p50") -> list[str]:
    """Ids not dominated in (higher top-1, lower ``cost``: p50 latency, or ``size_mb`` where the latency
    is a stand-in's that cannot rank speed), cheapest first."""
    front = []
    for tid, r in points:
        dominated = any(
            o["top1"] >= r["top1"] and o[cost] <= r[cost] and (o["top1"] > r["top1"] or o[cost] < r[cost])
            for oid, o in points if oid != tid
        )
        if not dominated:
            front.append((r[cost], tid))
    return [tid for _, tid in sorted(front)]


def is_stand_in(r: dict[str, Any]) -> bool:
    """A stand-in's latency (another engine, device or CPU than the target's): never judged against a latency budget."""
    return r.get("latency_kind") == "stand-in"


def speed_rankable(points: list[tuple[str, dict[str, Any]]]) -> bool:
    """Whether every measured latency of a target may order its configurations by speed."""
    return all(r.get("latency_ranks_speed", True) for _, r in points)


def effective_objective(points: list[tuple[str, dict[str, Any]]], objective: str) -> tuple[str, str | None]:
    """The objective actually ranked on, and why it differs: ``latency`` on a stand-in whose speed order
    does not transfer (another engine or compute device) ranks by ``size`` instead, which the device keeps."""
    if objective != "latency" or speed_rankable(points):
        return objective, None
    engine = next(str(r.get("runtime") or "?").split(" ")[0] for _, r in points if not r.get("latency_ranks_speed", True))
    return "size", (f"objective latency ranked by size instead: these latencies are a stand-in's ({engine} on this host), whose speed "
                    "order says nothing of the device's; time the chosen bundle on the device (edgefg bench there, or tune with a device node)")


def unjudged_note(points: list[tuple[str, dict[str, Any]]], budget: Budget) -> str | None:
    """The limit no row could be judged on: a latency budget against a stand-in's milliseconds."""
    n = sum(is_stand_in(r) for _, r in points)
    if budget.max_latency_ms is None or not n:
        return None
    return (f"max latency {budget.max_latency_ms:g} ms not judged for {n} trial(s): their latency is a stand-in's, "
            "not the device's (measure on the device: a Ray device node, or edgefg bench there)")


def class_failures_of(r: dict[str, Any], budget: Budget) -> list[dict[str, Any]] | None:
    """The classes over ``budget.max_class_drop`` by the budget's gate (None: a result recorded before
    per-class losses were kept, judged by its worst drop in points)."""
    losses = r.get("class_losses")
    if losses is None or budget.max_class_drop is None:
        return None
    return class_failures(losses, budget.max_class_drop, budget.class_alpha, budget.class_gate)


def budget_violations(r: dict[str, Any], budget: Budget) -> list[str]:
    out = []
    if budget.max_latency_ms is not None and not is_stand_in(r) and r["latency_ms_p50"] > budget.max_latency_ms:
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


def budget_excess(r: dict[str, Any], budget: Budget) -> float:
    """How far ``r`` misses its budget: the sum over the limits it breaks of the overshoot relative to the
    limit (a 2 ms trial against 1 ms adds 1.0; a 3 pt drop against 1 pt adds 2.0; drops below 1 pt are
    measured against 1 pt so a 0.1 pt budget does not make any drop look huge). 0 within budget."""
    def over(value: float, limit: float, floor: float = 0.0) -> float:
        return max(0.0, value - limit) / max(limit, floor, 1e-9)

    total = 0.0
    if budget.max_latency_ms is not None and not is_stand_in(r):
        total += over(r["latency_ms_p50"], budget.max_latency_ms)
    if budget.max_size_mb is not None:
        total += over(r["size_mb"], budget.max_size_mb)
    if budget.max_drop is not None:
        total += over(r["top1_drop"], budget.max_drop, 1.0)
    if budget.max_class_drop is not None:
        fails = class_failures_of(r, budget)
        worst = r["worst_class_drop"] if fails is None else max((f["drop_pts"] for f in fails), default=0.0)
        total += over(worst, budget.max_class_drop, 1.0)
    if budget.min_agreement is not None:
        a = r.get("frame_agreement")
        total += 1.0 if a is None else max(0.0, budget.min_agreement - a["agreement"]) / max(1.0 - budget.min_agreement, 1e-3)
    return total


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
    return {"trial": tid, "top1": r["top1"], "latency_ms_p50": r["latency_ms_p50"], "size_mb": r["size_mb"],
            "stand_in": is_stand_in(r), "latency_source": r.get("latency_source")}


def best_within(points: list[tuple[str, dict[str, Any]]], budget: Budget, n_trials: int, objective: str = "latency") -> dict[str, Any]:
    """The best trial within ``budget`` by ``objective`` and the runner-up, or ``trial: None`` with the reason.
    ``objective`` is what was asked; ``objective_note`` says when a stand-in's latency made it rank by another."""
    asked = objective
    objective, note = effective_objective(points, asked)
    extra = {"objective_requested": asked, "objective_note": note, "unjudged": unjudged_note(points, budget)}
    ok = sorted(((tid, r) for tid, r in points if not budget_violations(r, budget)), key=lambda p: objective_key(p[1], objective))
    if ok:
        runner = _pick(*ok[1]) if len(ok) > 1 else None
        return {**_pick(*ok[0]), "objective": objective, **extra, "within_budget": len(ok), "runner_up": runner, "reason": None}
    if not points:
        return {"trial": None, "objective": objective, **extra, "reason": f"none of the {n_trials} trial(s) produced a measured bundle for this target"}
    # closest: the smallest overshoot of its limits (relative to each limit), then the fewest limits broken,
    # then the best by the objective — the trial a user would loosen the budget for
    closest = min(points, key=lambda p: (round(budget_excess(p[1], budget), 9), len(budget_violations(p[1], budget)), objective_key(p[1], objective)))
    return {"trial": None, "objective": objective, **extra, "closest": closest[0],
            "reason": f"no trial within the budget ({len(points)} measured); closest {closest[0]}: " + "; ".join(budget_violations(closest[1], budget))}
