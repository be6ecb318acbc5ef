"""One way to print a measured value, a limit and whether it held, for every gate edgefg reports.

validate's Markdown and JUnit, the example pytest gate and compress's report all use these, so
a minimum is never reported as "exceeded" and points never show as ``1.0000`` next to ``10.0``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Quantity:
    """How a metric is printed: its unit and the number of decimals that mean something."""

    unit: str  # "" for fractions 0-1
    decimals: int

    def format(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "–"
        text = f"{value:.{self.decimals}f}"
        return f"{text} {self.unit}" if self.unit else text


FRACTION = Quantity("", 4)
POINTS = Quantity("pt", 2)

# metric name -> quantity; a name not listed prints as a fraction
QUANTITIES: dict[str, Quantity] = {
    "top1": FRACTION, "top5": FRACTION, "reference_top1": FRACTION, "reference_top5": FRACTION, "agreement": FRACTION,
    "top1_drop": POINTS, "worst_class_drop": POINTS, "class_drop": POINTS, "max_drop": POINTS, "max_class_drop": POINTS,
    "mean_kl": Quantity("nats", 4),
    "preprocess_parity": Quantity("grey levels", 3),
}

# the direction of each gate: "max" = the value must not be above the limit, "min" = not below it
DIRECTIONS: dict[str, str] = {"top1_drop": "max", "worst_class_drop": "max", "class_drop": "max", "preprocess_parity": "max",
                              "top1": "min", "agreement": "min"}


def quantity(name: str) -> Quantity:
    return QUANTITIES.get(name, FRACTION)


def format_value(name: str, value: float | None) -> str:
    return quantity(name).format(value)


def format_limit(name: str, limit: float | None) -> str:
    """``≤ 1.00 pt`` for a maximum, ``≥ 0.9500`` for a minimum."""
    return f"{'≥' if DIRECTIONS.get(name) == 'min' else '≤'} {format_value(name, limit)}"


def holds(name: str, value: float, limit: float) -> bool:
    return value >= limit if DIRECTIONS.get(name) == "min" else value <= limit


def check_message(name: str, value: float | None, limit: float, passed: bool | None = None) -> str:
    """``top1 = 0.9502 is below the minimum 0.9900`` / ``top1_drop = 0.40 pt meets the maximum 1.00 pt``.

    The wording follows the numbers; ``passed`` matters only when there is no value."""
    within = holds(name, value, limit) if value is not None else bool(passed)
    kind = "minimum" if DIRECTIONS.get(name) == "min" else "maximum"
    if within:
        verb = "meets the"
    else:
        verb = "is below the" if kind == "minimum" else "is above the"
    return f"{name} = {format_value(name, value)} {verb} {kind} {format_value(name, limit)}"
