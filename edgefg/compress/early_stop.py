"""Early stopping of a training step that cannot reach its accuracy budget.

After every epoch the student is scored on the run's labelled validation images (the ones the
compress report uses). A step is stopped when even an optimistic continuation cannot bring its
top-1 drop within ``max_drop``: the last epoch's improvement, repeated for every remaining epoch
(distillation gains shrink from epoch to epoch, so this over-estimates what is left). A trial that
is still improving fast is never stopped; one that has stalled far from the budget is.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Predict = Callable[[np.ndarray], np.ndarray]  # preprocessed N×C×H×W → logits


@dataclass
class EarlyStop:
    max_drop: float  # points vs the reference: the budget the step must be able to reach
    reference_top1: float  # the input model's top-1 on the same images
    x: np.ndarray  # preprocessed validation images
    y: np.ndarray  # their labels
    min_epochs: int = 1  # never stop before this many epochs
    batch_size: int = 64
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped: dict[str, Any] | None = None

    def drop(self, predict: Predict) -> float:
        pred = np.concatenate([predict(self.x[i : i + self.batch_size]).argmax(1) for i in range(0, len(self.x), self.batch_size)])
        return 100.0 * (self.reference_top1 - float((pred == self.y).mean()))

    def __call__(self, epoch: int, epochs: int, predict: Predict) -> bool:
        """Record the drop after ``epoch`` (0 = before training); True = stop now."""
        d = self.drop(predict)
        self.history.append({"epoch": epoch, "top1_drop": d, "t": time.perf_counter()})
        remaining = epochs - epoch
        if epoch < self.min_epochs or remaining <= 0 or len(self.history) < 2:
            return False
        gain = max(self.history[-2]["top1_drop"] - d, 0.0)
        best_case = d - gain * remaining
        if best_case <= self.max_drop + 1e-9:
            return False
        per_epoch = (self.history[-1]["t"] - self.history[0]["t"]) / epoch  # training + this scoring, per epoch so far
        self.stopped = {"epoch": epoch, "of_epochs": epochs, "top1_drop": d, "best_case_drop": best_case, "max_drop": self.max_drop,
                        "seconds_per_epoch": per_epoch, "saved_s_estimate": per_epoch * remaining,
                        "reason": f"after epoch {epoch} of {epochs} the drop is {d:.2f} pt and improved {gain:.2f} pt in the last epoch: "
                                  f"even at that rate for the {remaining} remaining epoch(s) it would end at {best_case:.2f} pt > {self.max_drop:g} pt"}
        return True

    def describe(self) -> dict[str, Any]:
        return {"max_drop": self.max_drop, "rule": "stop when the drop minus (last epoch's gain × remaining epochs) stays over max_drop",
                "history": self.history, "stopped": self.stopped}
