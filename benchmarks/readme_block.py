"""Write a measured table into the README between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``."""
from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def write_block(name: str, markdown: str, readme: Path = README) -> bool:
    """Replace the README block ``name`` with ``markdown``; False when the README has no such block."""
    text = readme.read_text(encoding="utf-8")
    pattern = rf"<!-- {name}:start -->.*?<!-- {name}:end -->"
    if not re.search(pattern, text, flags=re.S):
        return False
    block = f"<!-- {name}:start -->\n{markdown}<!-- {name}:end -->"
    readme.write_text(re.sub(pattern, lambda _: block, text, flags=re.S), encoding="utf-8")
    return True
