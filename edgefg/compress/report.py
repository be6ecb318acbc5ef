"""The compress report: report.json for machines, report.md for people, and an accuracy-vs-latency
plot of the steps (report.png) because a Pareto plot is read faster than a table."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgefg.outputs import write_json, write_text
from edgefg.validate.limits import POINTS, format_limit, format_value
from edgefg.validate.metrics import losing_classes
from edgefg.validate.report import fmt, markdown_table

log = logging.getLogger(__name__)
PLOT_NAME = "report.png"


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def _pts(v: Any) -> str:
    """Points in a column whose header says "pt"."""
    return "–" if v is None else f"{v:.{POINTS.decimals}f}"


def write_plot(path: Path, rows: list[dict[str, Any]], backend: str) -> bool:
    """Top-1 vs host latency, one labelled point per step (matplotlib, Agg backend)."""
    pts = [r for r in rows if r.get("top1") is not None and r.get("latency_ms_p50") is not None]
    if not pts:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        log.warning("matplotlib is not installed: no %s", path.name)
        return False
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    xs = [r["latency_ms_p50"] for r in pts]
    ys = [100 * r["top1"] for r in pts]
    ax.plot(xs, ys, "-", color="0.8", zorder=1)
    ax.scatter(xs, ys, c=[f"C{i}" for i in range(len(pts))], zorder=2)
    for r, x, y in zip(pts, xs, ys):
        ax.annotate(r["step"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    worst = [100 * r["worst_class_accuracy"] for r in pts if r.get("worst_class_accuracy") is not None]
    if len(worst) == len(pts):
        ax.scatter(xs, worst, marker="v", c=[f"C{i}" for i in range(len(pts))], alpha=0.5, label="worst class")
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.25, y=0.1)
    ax.set_xlabel(f"latency p50, ms ({backend})")
    ax.set_ylabel("top-1 accuracy, %")
    ax.set_title("edgefg compress: accuracy vs latency per step", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _preprocess_lines(pre: dict[str, Any]) -> list[str]:
    """The preprocessing the figures were measured with, and its parity check against timm."""
    if not pre.get("manifest"):
        return []
    from edgefg.manifest import Preprocess
    from edgefg.runtime.engine.preprocess import describe

    lines = [f"Preprocessing: {describe(Preprocess.from_dict(pre['manifest']))}  "]
    if pre.get("overrides"):
        lines.append(f"Preprocessing overridden on the command line: {', '.join(f'{k}={v}' for k, v in pre['overrides'].items())}  ")
    check = pre.get("check")
    if check:
        agree = "" if check.get("top1_agreement") is None else f", top-1 agreement {100 * check['top1_agreement']:.2f} %"
        lines.append(f"Preprocessing vs timm's own transform: {check['images']} images, max |Δ| {check['max_abs']:.3g} grey levels{agree} "
                     f"({'exact resizer' if check.get('exact') else 'opencv resizer, approximate'}) — {'ok' if check.get('passed') else 'MISMATCH'}  ")
    return lines


def _checkpoint_lines(source: dict[str, Any]) -> list[str]:
    """A bare checkpoint's settings and where each came from (its config, a flag, or timm's defaults)."""
    origin = source.get("settings") or {}
    if not origin:
        return []
    from edgefg.models.checkpoint import TIMM_DEFAULT

    where = ", ".join(f"{k}: {v}" for k, v in origin.items())
    config = f" (config `{source['config']}`)" if source.get("config") else ""
    lines = [f"Checkpoint settings — where each came from{config}: {where}  "]
    guessed = [k for k, v in origin.items() if v == TIMM_DEFAULT]
    if guessed:
        lines.append(f"**Taken from timm's defaults (--timm-defaults), not from the model**: {', '.join(guessed)} — "
                     "if the model was trained with other values, its accuracy here is lower than it should be  ")
    return lines


def write_compress_report(directory: Path, report: dict[str, Any], plot: bool = True) -> None:
    if plot and write_plot(directory / PLOT_NAME, report["steps"], report.get("latency_backend", "")):
        report["plot"] = PLOT_NAME
    write_json(directory / "report.json", report)
    val = report.get("validation", {})
    lines = [f"# edgefg compress report — recipe `{report['recipe']}`", ""]
    if val.get("data") and val.get("held_out") is False:
        lines += [f"> **Accuracy below is measured on training images** ({val.get('images')} of the `--data` images, which also calibrated"
                  " / trained the model), so it is optimistic. Pass `--val-data DIR` with held-out images for figures you can trust.", ""]
    lines.append(f"Model: `{report['model'].get('path')}`  ")
    lines += _checkpoint_lines(report["model"])
    cal = report["calibration"]
    lines.append(f"Calibration: {cal['images']} images from `{cal['data']}` (stratified over classes)  ")
    if val.get("data"):
        lines.append(f"Validation: {val.get('images')} images from `{val['data']}`"
                     f"{' (held out)' if val.get('held_out') else ' (the training/calibration data: optimistic)'}  ")
    lines.append(f"Latency: {report['latency_backend']}" + (f"; {report['latency_timing']}" if report.get("latency_timing") else "") + "  ")
    lines += _preprocess_lines(report.get("preprocess") or {})
    lines.append("")
    cols = ["step", "size_mb", "params", "macs", "latency_ms_p50", "top1 %", "top5 %", "worst class %", "Δtop1 pt", "worst class Δ pt"]
    table = [
        [r["step"], fmt(r.get("size_mb")), fmt(r.get("params")), fmt(r.get("macs")), fmt(r.get("latency_ms_p50")), _pct(r.get("top1")),
         _pct(r.get("top5")), _pct(r.get("worst_class_accuracy")), _pts(r.get("top1_drop")), _pts(r.get("worst_class_drop"))]
        for r in report["steps"]
    ]
    lines += markdown_table(cols, table)
    if report.get("plot"):
        lines += ["", f"![accuracy vs latency]({report['plot']})"]
    for desc in report.get("compression", []):
        lines += ["", f"## Step `{desc['step']}` — {desc.get('method', '')}", ""]
        lines += _step_details(desc)
    if "top1_drop" in report:
        alpha = report.get("class_alpha", 0.05)
        lines += [
            "",
            f"Overall vs the reference: top-1 drop **{POINTS.format(report['top1_drop'])}**; worst-class drop: **{POINTS.format(report['worst_class_drop'])}**; "
            f"prediction agreement: {report['agreement']:.4f}",
            "",
            "## Classes that lost accuracy, worst first (fine-grained classes can collapse while the mean barely moves)",
            "",
            f"`lost`/`gained`: images this class got wrong/right only after compression (the discordant pairs); `p`: one-sided paired sign test, "
            f"`p_adjusted`: Holm-corrected over the classes with discordant images (a drop counts as real when it is < {alpha})"
            + (f"; {report['class_gate']['sentence']}." if report.get("class_gate") else "."),
            "",
        ]
        cols = ["class", "images", "reference_accuracy", "accuracy", "drop_pts", "drop_images", "lost", "gained", "p_value", "p_adjusted"]
        losers = losing_classes(report["class_drops"])
        if losers:
            lines += markdown_table(cols, [[_pts(r[c]) if c == "drop_pts" else fmt(r.get(c)) for c in cols] for r in losers[:10]])
            lines += [f"({len(losers) - 10} more classes lost accuracy: report.json)"] if len(losers) > 10 else []
        else:
            lines += ["No class lost accuracy."]
    if report.get("passed") is False:
        lines += ["", "**Budget NOT met** — this artifact is the best result found (see the int8 step above)."]
    write_text(directory / "report.md", "\n".join(lines) + "\n")


def _step_details(desc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    skip = {"step", "method", "history", "attempts", "sensitivity", "float_layers", "float_layers_nncf", "float_layers_per_class", "reverted_by_nncf",
            "classes_over_budget", "graph", "runtimes", "worst_class", "budget", "float_layer_modules", "plain_int8_top1", "plain_int8_top1_drop"}
    simple = {k: v for k, v in desc.items() if k not in skip and not isinstance(v, (dict, list))}
    out += [", ".join(f"{k}: {fmt(v)}" for k, v in simple.items())]
    if "budget" in desc:
        b = desc["budget"]
        parts = [f"top-1 drop {format_limit('max_drop', b['max_drop'])}"] if b.get("max_drop") is not None else []
        if b.get("max_class_drop") is not None:
            parts.append(f"per class {format_limit('max_class_drop', b['max_class_drop'])} in raw points" if b.get("class_gate") == "points" else
                         f"per class {format_limit('max_class_drop', b['max_class_drop'])} when significant (Holm-corrected p < {b.get('class_alpha')})")
        if b.get("min_agreement") is not None:
            parts.insert(0, f"top-1 agreement with FP32 ≥ {b['min_agreement']:g} on {desc.get('agreement_images')} unlabelled images "
                            f"(now {fmt(desc.get('agreement_with_fp32'))}, mean KL {fmt(desc.get('mean_kl_vs_fp32'))}; plain INT8 had "
                            f"{fmt(desc.get('plain_int8_agreement_with_fp32'))})")
        out += ["", f"Budget: {'; '.join(parts) or 'none'}. **{'met' if desc.get('passed') else 'NOT met'}**."]
        wc = desc.get("worst_class")
        if wc:
            out += [f"Worst class: {wc['class']} −{wc['drop_pts']:.1f} pt = {wc['drop_images']} of {wc['images']} images (p = {fmt(wc['p_value'])})."]
        if desc.get("plain_int8_top1_drop") is not None:
            pw = desc.get("plain_int8_worst_class") or {}
            out += [f"Plain INT8 (NNCF's starting point, before accuracy control): top-1 {100 * desc['plain_int8_top1']:.2f} %, "
                    f"drop {_pts(desc['plain_int8_top1_drop'])} pt"
                    + (f"; worst class {pw['class']} −{pw['drop_pts']:.1f} pt = {pw['drop_images']} of {pw['images']} images (p = {fmt(pw['p_value'])})." if pw else ".")]
        if desc.get("classes_over_budget"):
            out += ["Classes over budget: " + "; ".join(f"{c['class']} −{c['drop_pts']:.1f} pt ({c['drop_images']} img, p = {fmt(c['p_value'])})" for c in desc["classes_over_budget"])]
        nncf_f, pc = desc.get("float_layers_nncf", []), desc.get("float_layers_per_class", [])
        mods = desc.get("float_layer_modules") or {}

        def named(layers: list[str]) -> str:
            return ", ".join(f"{n} ({mods[n]})" if n in mods else n for n in layers) or "none"

        out += [f"Layers kept in float by NNCF accuracy control ({len(nncf_f)}): {named(nncf_f)}"
                + (f" — reverted by it from plain INT8: {named(desc['reverted_by_nncf'])}" if "reverted_by_nncf" in desc else ""),
                f"Layers reverted to float for the per-class budget ({len(pc)}): {named(pc)}"]
        if desc.get("attempts") and len(desc["attempts"]) > 1:
            out += ["", *markdown_table(["reverted layers", "top1", "top1 drop pt", "classes over budget"],
                                        [[fmt(a["reverted"]), format_value("top1", a["top1"]), _pts(a["top1_drop"]), fmt(a["classes_over_budget"])] for a in desc["attempts"]])]
    elif "float_layers" in desc:
        out += [f"Layers in float: {', '.join(desc['float_layers']) or 'none'}"]
    if desc.get("history"):
        out += ["", *markdown_table(["epoch", "steps", "loss", "train top-1"], [[fmt(h["epoch"]), fmt(h["steps"]), fmt(h["loss"]), fmt(h["train_top1"])] for h in desc["history"]])]
    if desc.get("graph"):
        out += ["", f"Exported ops: {', '.join(desc['graph']['ops'])}", f"Indexing ops a target must support: {', '.join(desc['graph']['indexing_ops']) or 'none'}",
                "Runs on: " + ", ".join(f"{k}: {v}" for k, v in desc.get("runtimes", {}).items())]
    return out
