"""Validation reports: JSON (machines), Markdown (people), JUnit XML (CI)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from edgefg import outputs
from edgefg.validate.limits import check_message, format_limit, format_value
from edgefg.validate.metrics import losing_classes


def fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def md_text(value: Any) -> str:
    """Text read from data (class names, paths, messages) made inert for one Markdown line: line
    breaks become spaces, ``<``/``>`` entities (no raw HTML)."""
    text = " ".join(str(value).splitlines())
    return text.replace("<", "&lt;").replace(">", "&gt;")


def md_cell(value: Any) -> str:
    """:func:`md_text` for a table cell: ``|`` escaped as ``\\|`` too (a class named ``a|b`` stays one cell)."""
    return md_text(value).replace("|", "\\|")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table; every cell goes through :func:`md_cell` (all report tables are built here)."""
    out = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return out


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    outputs.write_json(path, data)


def validation_markdown(result: dict[str, Any]) -> str:
    sub = result.get("stand_in")
    where = f" on a stand-in ({sub['engine']} for {sub['for_backend']})" if sub else ""
    lines = [f"# edgefg validate — {'PASSED' if result['passed'] else 'FAILED'}{where}", ""]
    if sub:
        lines += [f"**Stand-in**: {md_text(sub['text'])}.", ""]
    lines.append(f"Bundle: `{result['bundle']}` ({result.get('backend')}, {result.get('precision')})  ")
    lines.append(f"Data: `{result['data']}` — {result['images']} images, {result.get('skipped_corrupt', 0)} corrupt skipped  ")
    if result.get("reference"):
        lines.append(f"Reference: `{result['reference']}`")
    if result.get("drift_reference"):
        d = result["drift_reference"]
        lines.append(f"Drift reference profile: `{d['path']}` ({d['images']} images; use it with edgefg run --drift-reference)  ")
    lines.append("")
    keys = ["top1", "top5", "reference_top1", "top1_drop", "worst_class_drop", "agreement", "mean_kl"]
    lines += markdown_table(["metric", "value"], [[k, format_value(k, result.get(k))] for k in keys if k in result])
    checks = result.get("checks", [])
    if checks:
        lines += ["", "## Checks", ""]
        lines += markdown_table(["check", "value", "limit", "passed"],
                                [[c["name"], format_value(c["name"], c["value"]), format_limit(c["name"], c["limit"]), fmt(c["passed"])] for c in checks])
        failed = [c for c in checks if not c["passed"]]
        if failed:
            lines += [""] + [f"- **failed**: {md_text(c.get('message') or check_message(c['name'], c['value'], c['limit'], False))}" for c in failed]
    if result.get("preprocess_check"):
        from edgefg.validate.preprocess_check import PreprocessCheck

        pc = dict(result["preprocess_check"])
        pc.pop("exact", None), pc.pop("passed", None)
        lines += ["", f"Preprocessing: {PreprocessCheck(**pc).summary()}"]
    drops = result.get("class_drops")
    if drops is not None:
        losers = losing_classes(drops)
        lines += ["", "## Classes that lost accuracy, worst first", ""]
        gate = result.get("class_gate")
        if gate:
            lines += [f"Per-class test: {gate['test']}; {gate['sentence']}.", ""]
        if losers:
            cols = ["class", "images", "reference_accuracy", "accuracy", "drop_pts", "drop_images", "lost", "gained", "p_value", "p_adjusted"]
            lines += markdown_table(cols, [[format_value("class_drop", r[c]) if c == "drop_pts" else fmt(r.get(c)) for c in cols] for r in losers[:10]])
            lines += [f"({len(losers) - 10} more: see the JSON report)"] if len(losers) > 10 else []
        else:
            lines += [f"None of the {len(drops)} classes lost accuracy against the reference."]
    return "\n".join(lines) + "\n"


def write_junit(path: str | Path, result: dict[str, Any]) -> None:
    checks = result.get("checks", [])
    failures = sum(not c["passed"] for c in checks)
    suite = ET.Element("testsuite", name="edgefg.validate", tests=str(len(checks)), failures=str(failures), errors="0")
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="bundle", value=str(result["bundle"]))
    if result.get("stand_in"):
        ET.SubElement(props, "property", name="stand_in", value=result["stand_in"]["text"])
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname="edgefg.validate", name=c["name"])
        if not c["passed"]:
            ET.SubElement(case, "failure", message=c.get("message") or check_message(c["name"], c["value"], c["limit"], False))
    root = ET.Element("testsuites", tests=str(len(checks)), failures=str(failures))
    root.append(suite)
    outputs.write_bytes(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))
