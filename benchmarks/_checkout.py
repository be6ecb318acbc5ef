"""The one sys.path shim of the benchmarks: run as ``python benchmarks/X.py``, a script's folder is on
sys.path but the checkout is not, so each script starts with

    if not __package__:  # python benchmarks/X.py (not python -m benchmarks.X, not an import)
        import _checkout  # noqa: F401  (benchmarks/_checkout.py)
    from benchmarks.common import ...

and this module puts the checkout first on sys.path: ``benchmarks`` imports as a package, and
``edgefg`` is this checkout's even where another edgefg is installed.
"""
import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[1])
if sys.path[:1] != [_REPO]:
    sys.path.insert(0, _REPO)
