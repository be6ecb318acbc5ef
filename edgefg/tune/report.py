"""``tune.json``, ``tune.md``, one Pareto PNG per target and the ``best/<target>/`` bundles."""
from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

from edgefg.tune.latency_source import source_of_row
from edgefg.tune.options import Budget
from edgefg.tune.pareto import best_within, budget_violations, is_stand_in, measured, pareto_front, speed_rankable
from edgefg.tune.store import atomic_write_json
from edgefg.validate.metrics import min_detectable_drop, significant_drop_count
from edgefg.validate.report import fmt, markdown_table

log = logging.getLogger(__name__)


def summarize(trials: list[dict[str, Any]], targets: list[str], budgets: dict[str, Budget], objective: str = "latency") -> dict[str, Any]:
    pareto, best = {}, {}
    for t in targets:
        points = measured(trials, t)
        for _tid, r in points:
            if "latency_kind" not in r:  # a result recorded before latency sources were
                r.update(source_of_row(r, t).fields())
        pareto[t] = pareto_front(points, "latency_ms_p50" if speed_rankable(points) else "size_mb")
        for _tid, r in points:
            r["violations"] = budget_violations(r, budgets[t])
            r["within_budget"] = not r["violations"]
        best[t] = best_within(points, budgets[t], len(trials), objective)
        best[t]["verdict"] = verdict(trials, t, best[t], budgets[t])
    return {"pareto": pareto, "best": best}


def _row_of(trials: list[dict[str, Any]], tid: str | None, target: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    t = next((t for t in trials if t["id"] == tid), None)
    return t, (t["targets"].get(target) if t else None)


def fp32_row(trials: list[dict[str, Any]], target: str) -> dict[str, Any] | None:
    """The uncompressed FP32 trial's measurement for ``target`` (the baseline a choice is judged against)."""
    for t in trials:
        r = t["targets"].get(target) or {}
        if t["label"] == "fp32" and not r.get("error") and r.get("latency_ms_p50"):
            return r
    return None


def signed_pts(delta: float) -> str:
    """+0.12 / −0.29 / ±0.00 pt, with a real minus sign."""
    text = f"{delta:+.2f}"
    return ("±" + text[1:] if text[1:] == "0.00" else text.replace("-", "−")) + " pt"


def _versus(r: dict[str, Any], base: dict[str, Any] | None, budget: Budget, brief: bool = False) -> str:
    """'2.04× faster, 3.30× smaller than FP32, −0.29 pt top-1, no class significantly worse (…)'."""
    parts = []
    if base is not None and base is not r:
        speed, size = base["latency_ms_p50"] / r["latency_ms_p50"], base["size_mb"] / r["size_mb"]
        # a stand-in's speed ratio says whose it is: not the device's
        parts.append((f"{speed:.2f}× faster" if speed >= 1 else f"{1 / speed:.2f}× slower") + (" on the stand-in" if is_stand_in(r) else ""))
        parts.append("the same size as FP32" if abs(size - 1) < 0.02 else f"{size:.2f}× smaller than FP32" if size > 1 else f"{1 / size:.2f}× larger than FP32")
    parts.append(f"{signed_pts(-r['top1_drop'])} top-1")
    losses = r.get("class_losses")
    if losses is not None and not brief:
        worse = significant_drop_count(losses, budget.class_alpha)
        detect = min_detectable_drop(r["images_per_class"]["median"], r["classes_tested"], budget.class_alpha)
        seen = (f"{r['images_per_class']['median']} images a class can only show drops ≥ {detect:.0f} pt" if detect is not None else
                f"{r['images_per_class']['median']} images a class cannot show any drop")
        parts.append(("no class significantly worse" if not worse else f"{worse} class(es) significantly worse") + f" ({seen})")
    a = r.get("frame_agreement")
    if a and not brief:
        parts.append(f"agreement with FP32 {a['agreement']:.4f} [{a['ci95'][0]:.4f}, {a['ci95'][1]:.4f}] on {a['images']} frames")
    return ", ".join(parts)


def verdict(trials: list[dict[str, Any]], target: str, best: dict[str, Any], budget: Budget) -> str | None:
    """One sentence: what the choice costs and buys against FP32, and the runner-up."""
    if not best.get("trial"):
        return None
    base = fp32_row(trials, target)
    t, r = _row_of(trials, best["trial"], target)
    text = f"{t['label']}: " + ("the FP32 model itself is the " + ("fastest" if best["objective"] == "latency" else "smallest" if best["objective"] == "size" else "most accurate")
                                + " trial within the budget; " if r is base else "") + _versus(r, base, budget) + "."
    if best.get("runner_up"):
        ru, rr = _row_of(trials, best["runner_up"]["trial"], target)
        text += f" Runner-up: {ru['label']} ({_versus(rr, base, budget, brief=True)})."
    if r is not None and is_stand_in(r):
        text += f" Latency is a stand-in's, not {target}'s: {str(r['latency_source']).removeprefix('stand-in: ')}."
    if best.get("objective_note"):
        text += f" Ranked by size, not latency: the stand-in's speed order says nothing of {target}'s."
    return text


def copy_best(out: Path, trials: list[dict[str, Any]], best: dict[str, Any]) -> None:
    root = out / "best"
    shutil.rmtree(root, ignore_errors=True)
    for target, b in best.items():
        if b.get("trial"):
            src = out / "trials" / b["trial"] / target
            shutil.copytree(src, root / target)
            b["bundle"] = str(root / target)


def plot_title(target: str, stand_in_sources: list[str], cost: str) -> str:
    """The plot's title: a stand-in says so there, not only on an axis."""
    import textwrap

    title = f"edgefg tune — {target}"
    if stand_in_sources:
        more = f" (+{len(stand_in_sources) - 1} more)" if len(stand_in_sources) > 1 else ""
        title += "\n" + textwrap.fill("STAND-IN latency, not the device's: " + stand_in_sources[0].removeprefix("stand-in: ") + more, 95)
        if cost == "size_mb":
            title += "\nits speed order says nothing of the device: front and choice by size"
    return title


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
    # the x axis is what the front was built on: latency, or size where a stand-in's latency cannot rank speed
    cost = "latency_ms_p50" if speed_rankable(list(points.items())) else "size_mb"
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r[cost] for r in points.values()]
    ys = [100 * r["top1"] for r in points.values()]
    inside = [r.get("within_budget", True) for r in points.values()]
    # on a latency axis the marker's area shows the bundle's size (a size axis already does)
    sizes = [marker_area(r["size_mb"], max(p["size_mb"] for p in points.values())) if cost == "latency_ms_p50" else 36.0 for r in points.values()]
    if cost == "latency_ms_p50":  # the timed runs' spread: latencies inside each other's bars are not told apart
        iqr = [r.get("latency_ms_iqr") or 0.0 for r in points.values()]
        ax.errorbar(xs, ys, xerr=[[q / 2 for q in iqr], [q / 2 for q in iqr]], fmt="none", ecolor="0.7", lw=1, zorder=1)
    ax.scatter([x for x, k in zip(xs, inside) if k], [y for y, k in zip(ys, inside) if k], s=[a for a, k in zip(sizes, inside) if k],
               color="0.45", label="trial within budget" + (" (area ∝ size)" if cost == "latency_ms_p50" else ""), zorder=2)
    if not all(inside):
        ax.scatter([x for x, k in zip(xs, inside) if not k], [y for y, k in zip(ys, inside) if not k], s=[a for a, k in zip(sizes, inside) if not k],
                   color="tab:red", alpha=0.6, marker="x", label="over budget", zorder=2)
    fx = [points[i][cost] for i in front]
    fy = [100 * points[i]["top1"] for i in front]
    ax.plot(fx, fy, "-", color="tab:blue", label="Pareto front", zorder=1.5)
    images = max((int(r.get("images") or 0) for r in points.values()), default=0)
    ax.set_ylim(*y_limits(ys, images))  # one image is not stretched to the plot's full height
    if xs:
        lo, hi = min(xs), max(xs)
        pad = max(0.08 * (hi - lo), 0.05 * hi, 1e-3)
        ax.set_xlim(lo - pad, hi + pad)
    fig.canvas.draw()  # the axes' final scale, so labels can be kept apart in pixels
    px_per_pt = fig.dpi / 72.0
    at = [(float(a), float(b)) for a, b in (ax.transData.transform((x, y)) for x, y in zip(xs, ys))]
    for i, (dx, dy) in zip(points, label_offsets(at, [labels[i] for i in points], font_px=7 * px_per_pt)):
        ax.annotate(labels[i], (points[i][cost], 100 * points[i]["top1"]), fontsize=7, xytext=(dx / px_per_pt, dy / px_per_pt),
                    textcoords="offset points", arrowprops={"arrowstyle": "-", "color": "0.7", "lw": 0.5} if dy > 8 * px_per_pt else None)
    if best.get("trial"):
        r = points[best["trial"]]
        ax.scatter([r[cost]], [100 * r["top1"]], s=160, facecolors="none", edgecolors="tab:red", linewidths=2, label=f"chosen ({best.get('objective', 'latency')})")
    stand_in = sorted({r["latency_source"] for r in points.values() if is_stand_in(r)})
    limit = budget.max_latency_ms if cost == "latency_ms_p50" else budget.max_size_mb
    if limit is not None and not (stand_in and cost == "latency_ms_p50"):  # a device's latency budget is no line on a stand-in's axis
        ax.axvline(limit, color="tab:red", ls="--", lw=1, label=f"max {'latency' if cost == 'latency_ms_p50' else 'size'} {limit:g} {'ms' if cost == 'latency_ms_p50' else 'MB'}")
    ax.set_xlabel("p50 latency, batch 1 (ms)" + (" — STAND-IN, not the device" if stand_in else "") if cost == "latency_ms_p50" else "bundle size (MB)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(plot_title(target, stand_in, cost), fontsize=8 if stand_in else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"pareto-{target}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def marker_area(size_mb: float, largest_mb: float) -> float:
    """Scatter marker area (pt²) for a bundle of ``size_mb``: 16-160, proportional to size."""
    return 16.0 + 144.0 * (size_mb / largest_mb if largest_mb > 0 else 1.0)


def y_limits(ys: list[float], images: int, min_span_pt: float = 2.0, min_span_images: int = 5) -> tuple[float, float]:
    """Top-1 axis limits (percent) at least ``min_span_pt`` and ``min_span_images`` images wide, so a
    one-image difference does not fill the plot's height; never above 100."""
    if not ys:
        return 0.0, 100.0
    lo, hi = min(ys), max(ys)
    span = max(hi - lo, min_span_pt, 100.0 * min_span_images / images if images else 0.0) * 1.15
    mid = (lo + hi) / 2
    top = min(100.0 + 0.02 * span, mid + span / 2)
    return top - span, top


def label_offsets(points_px: list[tuple[float, float]], texts: list[str], font_px: float = 7.0) -> list[tuple[float, float]]:
    """Offsets (pixels) for labels at ``points_px`` (display pixels) so that no two overlap: each label
    starts up-right of its point and moves up a line at a time past the labels already placed."""
    height, gap = font_px * 1.3, 0.4 * font_px
    placed: list[tuple[float, float, float]] = []  # left, baseline, width of the labels placed so far
    offsets: dict[int, tuple[float, float]] = {}
    for k in sorted(range(len(points_px)), key=lambda k: (points_px[k][1], points_px[k][0])):
        left, y = points_px[k][0] + gap, points_px[k][1]
        width = 0.6 * font_px * len(texts[k])
        dy = gap
        while any(left < pl + pw and pl < left + width and abs(y + dy - py) < height for pl, py, pw in placed):
            dy += height
        placed.append((left, y + dy, width))
        offsets[k] = (gap, dy)
    return [offsets[k] for k in range(len(points_px))]


OBJECTIVE_TEXT = {"latency": "the fastest trial within every budget (ties: smaller, then more accurate)",
                  "size": "the smallest trial within every budget (ties: faster, then more accurate)",
                  "accuracy": "the most accurate trial within every budget (ties: faster, then smaller)"}


def _gate_text(budget: dict[str, Any]) -> str:
    if budget.get("max_class_drop") is None:
        return "no per-class budget"
    if budget.get("class_gate") == "points":
        return f"a class fails when it drops more than {budget['max_class_drop']:g} pt (raw points, --class-gate points)"
    return (f"a class fails when it drops more than {budget['max_class_drop']:g} pt **and** the drop is significant "
            f"(one-sided paired sign test, Holm-corrected over the classes, p < {budget.get('class_alpha', 0.05):g})")


LATENCY_KIND_TEXT = {"device": "device", "host": "this host", "stand-in": "STAND-IN"}


def _latency_lines(trials: list[dict[str, Any]], target: str, best: dict[str, Any]) -> list[str]:
    """Where the target's latencies come from: loud when they are a stand-in's, with what that changed."""
    rows = [r for t in trials if not (r := t["targets"].get(target) or {}).get("error") and r.get("latency_source")]
    sources = sorted({r["latency_source"] for r in rows})
    stand = sorted({r["latency_source"] for r in rows if is_stand_in(r)})
    if not stand:
        return [f"Latency: {'; '.join(sources)}.  "] if sources else []
    out = [f"**Latency is a stand-in's, not {target}'s**: {'; '.join(s.removeprefix('stand-in: ') for s in stand)}. "
           "Top-1 and class drops are that engine's on the same model file; the milliseconds are this host's, not the device's.  "]
    out += [f"**{note[0].upper()}{note[1:]}.**  " for note in (best.get("objective_note"), best.get("unjudged")) if note]
    return out


def fmt_iqr(r: dict[str, Any]) -> str:
    """The timed runs' spread (p75 − p25), "–" for a row recorded before it was kept."""
    iqr = r.get("latency_ms_iqr")
    return "–" if iqr is None else f"{iqr:.2f}"


def markdown(result: dict[str, Any]) -> str:
    objective = result.get("objective", "latency")
    lines = [f"# edgefg tune — {result['model']}", ""]
    lines.append(f"{len(result['trials'])} trial(s) on {result['val_images']} validation images from `{result['val_data']}`; "
                 f"engine: {result['engine']}; wall time {result['wall_s']:.0f} s.  ")
    lines.append(f"Objective: **{objective}** — {OBJECTIVE_TEXT.get(objective, objective)}.  ")
    lines.append("Drops are percentage points vs the FP32 reference on the same images; `classes worse` counts the classes whose "
                 "drop is significant (Holm-corrected paired sign test); the worst class drop is the largest raw per-class drop. "
                 "`p50 ms` is the median of the timed runs and `IQR ms` their spread (p75 − p25): two trials whose p50s differ "
                 "by less than their IQRs are not told apart by this machine.")
    frames = result.get("agreement_data")
    if frames:
        lines.append(f"Agreement: top-1 agreement with FP32 on {frames['used']} unlabelled frames from `{frames['data']}` (95 % Wilson interval). "
                     "Frames the model was trained on say little (the model fits them, so compression rarely flips them)"
                     + (f"; **{frames['also_in_training_data']} of these frames are also training images**." if frames.get("also_in_training_data") else "."))
    es = result.get("early_stopping") or {}
    if es.get("enabled"):
        lines.append(f"Early stopping: a pruning trial's distillation stops when its top-1 drop cannot come within {es['max_drop']:g} pt "
                     f"(the loosest target's budget) even at its last epoch's rate; "
                     + (f"{len(es['stopped'])} trial(s) stopped, {es['epochs_skipped']} epoch(s) not run, ≈ {es['saved_s_estimate']:.0f} s of training saved."
                        if es["stopped"] else "no trial stopped."))
    lines.append("")
    trials = {t["id"]: t for t in result["trials"]}
    for target in result["targets"]:
        b, budget = result["best"][target], result["budgets"][target]
        lines += [f"## {target}", ""]
        shown = {k: v for k, v in budget.items() if v is not None and k not in ("class_alpha", "class_gate")}
        limits = ", ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in shown.items()) or "none"
        lines.append(f"Budget: {limits}; {_gate_text(budget)}.  ")
        lines += _latency_lines(result["trials"], target, b)
        if b.get("trial"):
            lines.append(f"**Chosen: `{b['trial']}` — {b.get('verdict') or trials[b['trial']]['label']}** → `best/{target}/`")
        else:
            lines.append(f"**No trial within budget**: {b['reason']}")
        lines.append("")
        with_frames = any((t["targets"].get(target) or {}).get("frame_agreement") for t in result["trials"])
        rows_here = [r for t in result["trials"] if not (r := t["targets"].get(target) or {}).get("error") and r.get("latency_ms_p50") is not None]
        all_stand_in = bool(rows_here) and all(is_stand_in(r) for r in rows_here)
        cols = ["trial", "config", "top-1", "drop pt", "classes worse", "worst class pt"] + (["agreement [95 %]"] if with_frames else []) + \
               ["p50 ms (STAND-IN)" if all_stand_in else "p50 ms", "IQR ms", "size MB", "node", "latency from", "Pareto", "budget"]
        rows = []
        for t in result["trials"]:
            r = t["targets"].get(target) or {}
            mark = f" (stopped at epoch {t['stopped_early']['epoch']})" if t.get("stopped_early") else ""
            mark += " ◀ chosen" if t["id"] == b.get("trial") else " (runner-up)" if t["id"] == (b.get("runner_up") or {}).get("trial") else ""
            if r.get("error"):
                rows.append([t["id"], t["label"]] + ["–"] * (len(cols) - 6) + [fmt(r.get("node")), "–", "", f"error: {r['error']}"])
                continue
            worse = significant_drop_count(r["class_losses"], budget.get("class_alpha", 0.05)) if r.get("class_losses") is not None else None
            a = r.get("frame_agreement")
            agree = [f"{a['agreement']:.4f} [{a['ci95'][0]:.3f}, {a['ci95'][1]:.3f}]" if a else "–"] if with_frames else []
            status = "ok" if r.get("within_budget") else "over: " + "; ".join(r.get("violations") or [])
            rows.append([t["id"], t["label"] + mark, fmt(r["top1"]), f"{r['top1_drop']:.2f}", fmt(worse), f"{r['worst_class_drop']:.1f}", *agree,
                         f"{r['latency_ms_p50']:.2f}", fmt_iqr(r), f"{r['size_mb']:.2f}", str(r["node"])[:16], LATENCY_KIND_TEXT.get(r.get("latency_kind", ""), "?"),
                         "★" if t["id"] in result["pareto"][target] else "", status])
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
