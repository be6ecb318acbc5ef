"""Trial results on disk: one JSON file per finished trial, written atomically (temp file +
``os.replace``), so a ``kill -9`` loses only the trials that were running; ``--resume`` reads them back."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgefg.errors import DataError, OutputExistsError
from edgefg.outputs import write_json

PLAN_NAME = "sweep.json"


def atomic_write_json(path: Path, data: Any) -> None:
    """On disk before the rename (a trial result must survive a power cut), mode from the umask."""
    write_json(path, data, fsync=True)


class TrialStore:
    """``TUNE_DIR/results/<trial id>.json`` per finished trial, and the sweep's plan in ``sweep.json``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.results = self.root / "results"

    def start(self, plan: dict[str, Any], resume: bool) -> None:
        """Record the plan; on resume it must be the same sweep (same model, data, targets, trials)."""
        plan_file = self.root / PLAN_NAME
        if resume:
            if not plan_file.is_file():
                raise DataError(f"nothing to resume in '{self.root}' (no {PLAN_NAME})", "run without --resume to start the sweep")
            old = json.loads(plan_file.read_text(encoding="utf-8"))
            if old.get("key") != plan["key"]:
                raise DataError(f"'{self.root}' holds a different sweep (model, data, targets or trials changed)", "resume with the same options, or use a new -o")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise OutputExistsError(f"'{self.root}' already exists and is not empty", "pass --resume to continue that sweep, or a new -o")
        atomic_write_json(plan_file, plan)

    def save(self, result: dict[str, Any]) -> None:
        atomic_write_json(self.results / f"{result['id']}.json", result)

    def load(self) -> dict[str, dict[str, Any]]:
        out = {}
        for p in sorted(self.results.glob("*.json")):
            try:
                data = json.loads(p.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue  # cannot happen with atomic writes; a hand-edited file is simply re-run
            out[data["id"]] = data
        return out
