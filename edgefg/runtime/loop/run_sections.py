"""``edgefg run``'s options in sections (as Polygraphy's argument groups), each option declared once.

Each option's parameter name is the field it fills (of ``RunOptions``; of ``MqttOptions`` for mqtt; of the
camera list for cameras), so ``run`` takes a section's values as they are. A section also says which of
its fields a camera may set for itself (``per_camera``): a cameras file (:mod:`edgefg.runtime.capture.cameras`) is
then a name + a source + overrides of those fields, under the option's own name (``stall_timeout`` for
``--stall-timeout``) and checked by the option's own type — nothing is declared twice. Click and the
standard library only (the CLI imports it at start-up).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

POSITIVE = click.FloatRange(min=0, min_open=True)
FRACTION = click.FloatRange(0, 1)
THREADS = click.IntRange(1, 1024)


class RunSection:
    """Some ``edgefg run`` options; ``per_camera``: the fields among them a camera may override."""

    def __init__(self, name: str, *options: Any, per_camera: tuple[str, ...] = ()) -> None:
        self.name = name
        self.options = options

        def probe() -> None:
            pass

        for option in options:
            option(probe)
        self.params: tuple[click.Parameter, ...] = tuple(probe.__click_params__)  # type: ignore[attr-defined]
        self.fields = tuple(p.name for p in self.params if p.name)
        unknown = set(per_camera) - set(self.fields)
        if unknown:
            raise ValueError(f"section {name}: per_camera names no option: {sorted(unknown)}")
        self.per_camera = per_camera

    def __call__(self, f):
        for option in reversed(self.options):
            f = option(f)
        return f

    def take(self, values: dict) -> dict:
        """This section's values, removed from ``values``."""
        return {name: values.pop(name) for name in self.fields}


RUN_CAMERAS = RunSection(
    "cameras",
    click.option("--source", "sources", multiple=True,
                 help="Camera index, /dev/videoN, RTSP/HTTP URL, video file, image file/folder/glob, or gst:PIPELINE; "
                      "env:VAR or file:PATH reads it from there (keeps a password off the command line). "
                      "Several cameras on one model: --source NAME=URI, repeated."),
    click.option("--source-file", type=click.Path(path_type=Path), help="Read the source (e.g. an RTSP URL with credentials) from the first line of this file."),
    click.option("--config", "config", type=click.Path(path_type=Path), help="Cameras TOML ([cameras.NAME] source, roi, smooth, min_confidence, fps, ...)."),
)
RUN_SOURCE = RunSection(
    "source",
    click.option("--max-frames", type=click.IntRange(1), help="Stop after N frames (all cameras together)."),
    click.option("--roi", help="Fixed crop x,y,w,h in pixels (or fractions 0-1) before preprocessing."),
    click.option("--stall-timeout", "stall_timeout_s", default=10.0, show_default=True, type=click.FloatRange(0, 86400, min_open=True),
                 help="Seconds without a frame before a live source is reopened."),
    click.option("--max-retries", type=click.IntRange(-1), help="Give up (exit 2) after N failed reopen attempts in a row; -1 = retry forever "
                 "(the default, except for a camera on an interactive terminal: 3)."),
    click.option("--loop", is_flag=True, help="Restart a video file/image folder at its end."),
    per_camera=("roi", "stall_timeout_s", "loop"),
)
RUN_BATCH = RunSection(
    "batch",
    click.option("--threads", "num_threads", type=THREADS, help="Inference threads (default: all cores, or $EDGEFG_NUM_THREADS)."),
    click.option("--batch", default=1, show_default=True, type=click.IntRange(1, 1024), help="Micro-batch size (several cameras: default = the number of cameras)."),
    click.option("--batch-wait-ms", type=click.FloatRange(0, 60000), help="Wait this long to fill a micro-batch [default: 0; 5 across cameras]."),
    click.option("--preprocess-in", type=click.Choice(["auto", "capture", "main"]), default="auto", show_default=True,
                 help="Thread that preprocesses: capture (pipelined; auto for files when a core is spare) or main."),
)
RUN_DECISION = RunSection(
    "decision",
    click.option("--topk", default=3, show_default=True, type=click.IntRange(1, 1000)),
    click.option("--smooth", default="none", show_default=True, help="Temporal smoothing: ema:A (A = weight of the newest frame) | majority:N | none."),
    click.option("--min-confidence", default=0.0, show_default=True, type=FRACTION, help="Report 'unknown' when the top-1 probability is below this."),
    click.option("--min-margin", default=0.0, show_default=True, type=FRACTION, help="Report 'unknown' when top-1 minus top-2 probability is below this."),
    per_camera=("smooth", "min_confidence", "min_margin"),
)
RUN_JSONL = RunSection(
    "jsonl",
    click.option("--output", type=click.Path(path_type=Path), help="JSON lines file (default: stdout)."),
    click.option("--rotate-mb", type=POSITIVE, help="Rotate --output when it passes this size (keeps --rotate-keep old files)."),
    click.option("--rotate-keep", default=5, show_default=True, type=click.IntRange(0, 10000)),
    click.option("--events", is_flag=True, help="Write a line only when the (smoothed) label changes."),
)
RUN_VIDEO = RunSection(
    "video",
    click.option("--save-video", type=click.Path(path_type=Path), help="Annotated video (.mkv FFV1, .avi MJPG, .mp4 mp4v; no H.264 here); one per camera (NAME added)."),
)
RUN_HTTP = RunSection(
    "http",
    click.option("--http", "http", help="Serve the live page, /stream.mjpg, /healthz, /latest, /metrics on HOST:PORT (e.g. 127.0.0.1:8080)."),
    click.option("--http-token-file", type=click.Path(path_type=Path), help="File holding a bearer token required for every HTTP path but /healthz."),
    click.option("--http-max-connections", default=32, show_default=True, type=click.IntRange(1, 10000), help="HTTP connections served at once (more get 503)."),
    click.option("--http-timeout", "http_timeout_s", default=10.0, show_default=True, type=POSITIVE, help="Seconds an HTTP connection may sit idle before it is dropped."),
)
RUN_MQTT = RunSection(  # MqttOptions fields
    "mqtt",
    click.option("--mqtt", "url", help="Publish events/state to mqtt://HOST:PORT (mqtts:// for TLS). Needs edgefg[mqtt]."),
    click.option("--mqtt-prefix", "prefix", default="edgefg", show_default=True, help="Topic prefix."),
    click.option("--mqtt-auth", "auth_file", type=click.Path(path_type=Path),
                 help="TOML file: username, password, ca_file, cert_file, key_file (or EDGEFG_MQTT_USERNAME/EDGEFG_MQTT_PASSWORD)."),
    click.option("--mqtt-spool", "spool_path", type=click.Path(path_type=Path), help="SQLite spool for events while the broker is away [default: ~/.cache/edgefg/mqtt-HOST.sqlite]."),
    click.option("--mqtt-spool-max", "spool_max", default=100_000, show_default=True, type=click.IntRange(1), help="Events the spool keeps; beyond, the oldest are dropped and counted."),
    click.option("--mqtt-inflight", "inflight", default=256, show_default=True, type=click.IntRange(1), help="Events sent to the broker and not yet acknowledged, at most (1 = one at a time)."),
    click.option("--mqtt-drain", "drain_s", default=5.0, show_default=True, type=click.FloatRange(0), help="At exit, keep sending spooled events this many seconds at most while connected."),
    click.option("--mqtt-discovery-prefix", "discovery_prefix", default="homeassistant", show_default=True, help="Home Assistant discovery prefix ('none' to disable)."),
)
RUN_LOG = RunSection(
    "log",
    click.option("--stats-every", "stats_every_s", type=POSITIVE, help="Log throughput/latency/drops as a JSON line every N seconds."),
)
RUN_OPTIONS_SECTIONS = (RUN_SOURCE, RUN_BATCH, RUN_DECISION, RUN_JSONL, RUN_VIDEO, RUN_HTTP, RUN_LOG)  # their values are RunOptions fields
RUN_SECTIONS = (RUN_CAMERAS, *RUN_OPTIONS_SECTIONS, RUN_MQTT)




def camera_overridable() -> dict[str, tuple[str, click.Parameter]]:
    """The keys a cameras file may set per camera: ``{key: (RunOptions field, its click option)}``, the key
    being the option's long name without dashes (``--stall-timeout`` → ``stall_timeout``)."""
    out: dict[str, tuple[str, click.Parameter]] = {}
    for section in RUN_OPTIONS_SECTIONS:
        for param in section.params:
            if param.name in section.per_camera:
                flag = next(o for o in param.opts if o.startswith("--"))
                out[flag[2:].replace("-", "_")] = (param.name, param)
    return out
