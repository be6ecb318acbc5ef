"""mypy on the package against a baseline: CI fails on a NEW finding, and on a baseline entry that is gone
(so the baseline only shrinks: delete the line, or run with --update after fixing).

    python .ci/typecheck.py [--update]

Findings are compared as ``path: [code] message`` without line numbers (they move with every edit), as
a multiset (the same message twice in a file is two findings). Configuration: [tool.mypy] in pyproject.toml.
"""
from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASELINE = REPO / ".ci" / "mypy-baseline.txt"
LINE = re.compile(r"^(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<msg>.*?)\s+\[(?P<code>[a-z-]+)\]$")


def findings() -> tuple[collections.Counter, str]:
    proc = subprocess.run([sys.executable, "-m", "mypy", "edgefg"], cwd=REPO, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        sys.exit(f"mypy did not run: {proc.stderr.strip() or proc.stdout.strip()}")
    found = collections.Counter()
    for line in proc.stdout.splitlines():
        m = LINE.match(line)
        if m:
            found[f"{m['path']}: [{m['code']}] {m['msg']}"] += 1
    return found, proc.stdout


def main() -> int:
    found, output = findings()
    if "--update" in sys.argv:
        BASELINE.write_text("".join(f"{k}\n" * n for k, n in sorted(found.items())), encoding="utf-8")
        print(f"wrote {sum(found.values())} findings to {BASELINE.relative_to(REPO)}")
        return 0
    base = collections.Counter(BASELINE.read_text(encoding="utf-8").splitlines()) if BASELINE.is_file() else collections.Counter()
    new, gone = found - base, base - found
    for k in sorted(new):
        print(f"new: {k}" + "".join(f"\n    {line}" for line in output.splitlines() if line.startswith(k.split(':')[0] + ":") and k.split('] ', 1)[1] in line))
    for k in sorted(gone):
        print(f"fixed (delete it from {BASELINE.relative_to(REPO)}): {k}")
    print(f"mypy: {sum(found.values())} findings, baseline {sum(base.values())}: {sum(new.values())} new, {sum(gone.values())} fixed")
    return 1 if new or gone else 0


if __name__ == "__main__":
    sys.exit(main())
