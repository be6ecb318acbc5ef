"""Class names (and other text from data) cannot break a Markdown report (issue 26, class 7):
every table cell goes through one helper (edgefg.validate.report.md_cell), used by the validate,
compare and tune reports."""
import re

from edgefg.validate.report import markdown_table, md_cell, validation_markdown

EVIL = "a|b\n<script>alert(1)</script>"


def cells(line):
    """The cells of one table row, splitting only on unescaped pipes."""
    assert line.startswith("| ") and line.endswith(" |"), line
    return re.split(r"(?<!\\)\|", line[1:-1])


def test_a_cell_stays_one_cell_on_one_line_without_html():
    assert md_cell(EVIL) == "a\\|b &lt;script&gt;alert(1)&lt;/script&gt;"
    header, rule, row = markdown_table(["class", "n"], [[EVIL, "3"]])
    assert len(cells(row)) == len(cells(header)) == 2
    assert "<" not in row and "\n" not in row


def test_validation_report_with_a_hostile_class_name():
    drop = {"class": EVIL, "images": 4, "reference_accuracy": 1.0, "accuracy": 0.5, "drop_pts": 50.0, "drop_images": 2,
            "lost": 2, "gained": 0, "p_value": 0.1, "p_adjusted": 0.2}
    result = {"passed": False, "bundle": "b", "data": "d", "images": 4, "top1": 0.5,
              "checks": [{"name": "worst_class_drop", "value": 50.0, "limit": 5.0, "passed": False, "message": f"class {EVIL} lost 50 pt"}],
              "class_drops": [drop]}
    text = validation_markdown(result)
    assert "<script" not in text
    lines = text.splitlines()
    assert any(line.startswith("- **failed**: class a|b &lt;script&gt;") for line in lines)  # one list item, one line
    table = [line for line in lines if line.startswith("| ")]
    header = next(line for line in table if line.startswith("| class "))
    row = next(line for line in table if "a\\|b" in line)
    assert len(cells(row)) == len(cells(header)) == 10
