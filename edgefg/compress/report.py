"""The compress report: report.json for machines, report.md for people."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefg.validate.report import fmt, markdown_table


def write_compress_report(directory: Path, report: dict[str, Any]) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    lines = [f"# edgefg compress report — recipe `{report['recipe']}`", ""]
    lines.append(f"Model: `{report['model'].get('path')}`  ")
    cal = report["calibration"]
    lines.append(f"Calibration: {cal['images']} images from `{cal['data']}` (stratified over classes)  ")
    lines.append(f"Latency: {report['latency_backend']}")
    lines.append("")
    cols = ["step", "size_mb", "params", "macs", "latency_ms_p50", "top1", "top5", "worst_class_accuracy"]
    lines += markdown_table(cols, [[fmt(r.get(c)) for c in cols] for r in report["steps"]])
    if "top1_drop" in report:
        lines += [
            "",
            f"Top-1 drop: **{report['top1_drop']:.2f} pts**; worst-class drop: **{report['worst_class_drop']:.1f} pts**; "
            f"prediction agreement with the reference: {report['agreement']:.4f}",
            "",
            "## Classes that lost the most (fine-grained classes can collapse while the mean barely moves)",
            "",
        ]
        cols = ["class", "images", "reference_accuracy", "accuracy", "drop_pts", "drop_images"]
        lines += markdown_table(cols, [[fmt(r[c]) for c in cols] for r in report["class_drops"][:10]])
    (directory / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
