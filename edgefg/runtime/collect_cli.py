"""``edgefg collect``: what ``edgefg run --collect DIR`` kept — a labelling queue (``export``) and counts (``stats``).
The logic is in :mod:`edgefg.runtime.outputs.collect`; no torch, no compression code (it runs on the device too)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgefg.cli_support import handle_errors


@click.group("collect")
def collect_group() -> None:
    """Frames kept by `edgefg run --collect DIR`.

    \b
    edgefg collect stats DIR                                counts per policy, camera and suggested class
    edgefg collect export DIR --to labelling/ [--by suggestion]   crops + queue.csv for a human to sort
    edgefg compress MODEL --data train/ --agreement-data DIR ...  DIR as it is (only the crops are read)
    """


def _policies(ctx: click.Context, param: click.Parameter, value: str | None):
    if not value:
        return None
    from edgefg.runtime.outputs.collect import policies_callback

    return policies_callback(ctx, param, value)


@collect_group.command("export")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--to", "out", required=True, type=click.Path(path_type=Path), help="Labelling folder to write (new or empty).")
@click.option("--by", type=click.Choice(["none", "suggestion"]), default="none", show_default=True,
              help="suggestion: put each crop in a folder named by the model's top-1 suggestion (a human moves the wrong ones).")
@click.option("--since", type=float, help="Only frames collected at or after this UNIX time.")
@click.option("--camera", "cameras", multiple=True, help="Only this camera (repeatable).")
@click.option("--policy", callback=_policies, help="Only frames one of these policies chose (comma-separated).")
@click.option("--with-frames", is_flag=True, help="Copy the downscaled full frames too (into TO/.frames/, which image loaders skip).")
@handle_errors
def export_cmd(directory, out, by, since, cameras, policy, with_frames) -> None:
    """Write a labelling queue from the collect folder DIRECTORY: the crops and TO/queue.csv
    (file, camera, time, policy, decided label, margin, suggested top-5 with scores, frame, source).

    Sort the crops into one folder per class, named exactly as the model's labels (with --by suggestion
    they already are: fix the mistakes, delete what is none of the classes); TO is then an ImageFolder
    for --val-data / --data (queue.csv is ignored, with a one-line notice).
    """
    from edgefg.runtime.outputs.collect import export_queue

    r = export_queue(directory, out, by=by, since=since, cameras=cameras or None, policies=policy, with_frames=with_frames)
    where = f" in {len(r['folders'])} suggestion folders" if r["folders"] else ""
    click.echo(f"exported {r['exported']} crops{where} to {out} (list: {r['csv']})" + (f"; {r['unreadable']} unreadable sidecar(s) skipped" if r["unreadable"] else ""))
    if r["exported"]:
        click.echo(f"next: sort {out} into one folder per class (the model's label names), then e.g. edgefg validate BUNDLE --data {out}")


@collect_group.command("stats")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.option("--top", default=10, show_default=True, type=click.IntRange(1), help="Suggested classes listed.")
@handle_errors
def stats_cmd(directory, as_json, top) -> None:
    """Counts of the collect folder DIRECTORY: frames per policy, per camera and per suggested class, size on disk."""
    from edgefg.runtime.outputs.collect import collect_stats

    s = collect_stats(directory)
    if as_json:
        click.echo(json.dumps(s, indent=2))
        return
    click.echo(f"{directory}: {s['frames']} frames, {s['files']} files, {s['bytes'] / 1e6:.1f} MB"
               + (f", {s['first']} → {s['last']}" if s["frames"] else "") + (f" ({s['unreadable']} unreadable)" if s["unreadable"] else ""))
    for title, key, limit in (("policy", "by_policy", None), ("camera", "by_camera", None), ("suggested class (top-1)", "by_suggestion", top)):
        items = list(s[key].items())
        if not items:
            continue
        click.echo(f"by {title}:")
        for name, n in items[:limit]:
            click.echo(f"  {n:7d}  {name}")
        if limit is not None and len(items) > limit:
            click.echo(f"  … {len(items) - limit} more")
