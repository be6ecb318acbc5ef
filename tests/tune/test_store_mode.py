"""tune's JSON files get the mode the umask gives a new file (as the docs promise), not mkstemp's 0600."""
from __future__ import annotations

import os
import stat

from edgefg.tune.store import TrialStore


def test_trial_and_plan_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        store = TrialStore(tmp_path / "tune")
        store.start({"key": "k"}, resume=False)
        store.save({"id": "t1"})
    finally:
        os.umask(old)
    for p in (tmp_path / "tune" / "sweep.json", tmp_path / "tune" / "results" / "t1.json"):
        assert stat.S_IMODE(p.stat().st_mode) == 0o640, p
