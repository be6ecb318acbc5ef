"""``tune.json``, ``tune.md``, one Pareto PNG per target and the ``best/<target>/`` bundles."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from edgefg.tune.options import Budget
from edgefg.tune.pareto import best_within, budget_violations, measured, pareto_front
from edgefg.tune.store import atomic_write_json
from edgefg.validate.report import fmt, markdown_table

log = logging.getLogger(__name__)


def summarize(trials: list[dict[str, Any]], targets: list[str], budgets: dict[str, Budget]) -> dict[str, Any]:
    pareto, best = {}, {}
    for t in targets:
        points = measured(trials, t)
        pareto[t] = pareto_front(points)
        best[t] = best_within(points, budgets[t], len(trials))
        for tid, r in points:
            r["within_budget"] = not budget_violations(r, budgets[t])
    return {"pareto": pareto, "best": best}


def copy_best(out: Path, trials: list[dict[str, Any]], best: dict[str, Any]) -> None:
    root = out / "best"
    shutil.rmtree(root, ignore_errors=True)
    for target, b in best.items():
        if b.get("trial"):
            src = out / "trials" / b["trial"] / target
            shutil.copytree(src, root / target)
            b["bundle"] = str(root / target)


def plot_pareto(out: Path, trials: list[dict[str, Any]], target: str, front: list[str], best: dict[str, Any], budget: Budget) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        log.warning("matplotlib is not installed: no Pareto plot (pip install 'edgefg[compress]')")
        return None
    points = dict(measured(trials, target))
    labels = {t["id"]: t["label"] for t in trials}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["latency_ms_p50"] for r in points.values()]
    ys = [100 * r["top1"] for r in points.values()]
    ax.scatter(xs, ys, color="0.6", label="trial")
    fx = [points[i]["latency_ms_p50"] for i in front]
    fy = [100 * points[i]["top1"] for i in front]
    ax.plot(fx, fy, "o-", color="tab:blue", label="Pareto front")
    for i, r in points.items():
        ax.annotate(labels[i], (r["latency_ms_p50"], 100 * r["top1"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if best.get("trial"):
        r = points[best["trial"]]
        ax.scatter([r["latency_ms_p50"]], [100 * r["top1"]], s=160, facecolors="none", edgecolors="tab:red", linewidths=2, label="best within budget")
    if budget.max_latency_ms is not None:
        ax.axvline(budget.max_latency_ms, color="tab:red", ls="--", lw=1, label=f"max latency {budget.max_latency_ms:g} ms")
    stand_in = any(r.get("stand_in") for r in points.values())
    ax.set_xlabel("p50 latency, batch 1 (ms)" + (" — host stand-in" if stand_in else ""))
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"edgefg tune — {target}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"pareto-{target}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def markdown(result: dict[str, Any]) -> str:
    lines = [f"# edgefg tune — {result['model']}", ""]
    lines.append(f"{len(result['trials'])} trial(s) on {result['val_images']} validation images from `{result['val_data']}`; "
                 f"engine: {result['engine']}; wall time {result['wall_s']:.0f} s.  ")
    lines.append("Drops are percentage points vs the FP32 reference on the same images; the worst class drop is the largest per-class drop.")
    lines.append("")
    trials = {t["id"]: t for t in result["trials"]}
    for target in result["targets"]:
        b, budget = result["best"][target], result["budgets"][target]
        lines += [f"## {target}", ""]
        limits = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in budget.items() if v is not None) or "none"
        lines.append(f"Budget: {limits}.  ")
        if b.get("trial"):
            lines.append(f"**Best within budget: `{b['trial']}` — {trials[b['trial']]['label']}** (top-1 {b['top1']:.4f}, p50 {b['latency_ms_p50']:.2f} ms, {b['size_mb']:.2f} MB) → `best/{target}/`")
        else:
            lines.append(f"**No trial within budget**: {b['reason']}")
        lines.append("")
        cols = ["trial", "config", "top-1", "drop pt", "worst class pt", "p50 ms", "size MB", "node", "stand-in", "Pareto", "budget"]
        rows = []
        for t in result["trials"]:
            r = t["targets"].get(target) or {}
            if r.get("error"):
                rows.append([t["id"], t["label"], "–", "–", "–", "–", "–", fmt(r.get("node")), "–", "", f"error: {r['error']}"])
                continue
            rows.append([t["id"], t["label"], fmt(r["top1"]), f"{r['top1_drop']:.2f}", f"{r['worst_class_drop']:.1f}", f"{r['latency_ms_p50']:.2f}",
                         f"{r['size_mb']:.2f}", str(r["node"])[:16], fmt(r["stand_in"]), "★" if t["id"] in result["pareto"][target] else "",
                         "ok" if r.get("within_budget") else "over"])
        lines += markdown_table(cols, rows)
        lines += ["", f"![Pareto {target}](pareto-{target}.png)", ""]
    failed = [t for t in result["trials"] if t["status"] != "ok"]
    if failed:
        lines += ["## Failed trials", ""] + [f"- `{t['id']}` {t['label']} ({t['status']}): {t['error']}" for t in failed] + [""]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any], budgets: dict[str, Budget]) -> None:
    copy_best(out, result["trials"], result["best"])
    for target in result["targets"]:
        plot_pareto(out, result["trials"], target, result["pareto"][target], result["best"][target], budgets[target])
    result["budgets"] = {t: dataclasses.asdict(b) for t, b in budgets.items()}
    atomic_write_json(out / "tune.json", result)
    (out / "tune.md").write_text(markdown(result), encoding="utf-8")
