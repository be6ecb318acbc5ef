"""``edgefg compare``: bundles side by side on the same images; exit 1 when a tolerance fails."""
from __future__ import annotations

import sys
from pathlib import Path

import click

from edgefg.cli_support import handle_errors


@click.command("compare")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--data", required=True, type=click.Path(path_type=Path), help="Images: labelled ImageFolder (accuracy too) or a flat folder.")
@click.option("--atol", type=float, help="Absolute tolerance on every output element (with --rtol: |a-b| <= atol + rtol*|ref|).")
@click.option("--rtol", type=float, help="Relative tolerance on every output element.")
@click.option("--min-cosine", type=float, help="Fail if any image's output cosine similarity to the reference is below this.")
@click.option("--min-agreement", type=float, help="Fail if top-1 agreement with the reference (fraction) is below this.")
@click.option("--max-images", type=int, help="Use only the first N images.")
@click.option("--stand-in", is_flag=True, help="Run device-only bundles (TensorRT) in their host stand-in (ONNX Runtime on the same ONNX), labelled as such.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the full result as JSON.")
@handle_errors
def compare_cmd(bundles, data, atol, rtol, min_cosine, min_agreement, max_images, stand_in, json_out) -> None:
    """Compare BUNDLES on DATA; the first is the reference (exit 1 when a tolerance fails)."""
    from edgefg.outputs import prepare_parent
    from edgefg.validate.compare import Tolerances, compare, compare_markdown
    from edgefg.validate.report import write_json

    if json_out:
        prepare_parent(json_out)
    result = compare(list(bundles), data, Tolerances(atol, rtol, min_cosine, min_agreement), max_images=max_images, stand_in=stand_in)
    if json_out:
        write_json(json_out, result)
    click.echo(compare_markdown(result))
    sys.exit(0 if result["passed"] else 1)
