"""Options that several commands share: --trust, --max-pixels, --source-file (click only at import)."""
from __future__ import annotations

from pathlib import Path

import click


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        from edgefg.runtime.engine.image_limits import set_max_pixels

        set_max_pixels(value)


trust_option = click.option(
    "--trust", multiple=True, type=click.Path(path_type=Path),
    help="Public key (.pub from edgefg keygen); the bundle must be signed by it. Repeatable (key rotation): any one suffices.",
)
max_pixels_option = click.option(
    "--max-pixels", type=click.IntRange(0, 1 << 34), callback=_set_max_pixels, expose_value=False,
    help="Skip (and count) image files whose header declares more pixels than this; 0 = no limit "
         "(default: $EDGEFG_MAX_PIXELS or 40000000).",
)


def trust_paths(trust: tuple[Path, ...]) -> tuple[str, ...] | None:
    """The --trust values as strings (None when none given), checked to load before any work starts."""
    if not trust:
        return None
    from edgefg.trust.signing import load_trusted

    load_trusted(trust)
    return tuple(str(t) for t in trust)
