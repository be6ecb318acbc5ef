"""`edgefg run`'s options in sections (edgefg/cli.py RunSection): each option is declared once, under the
name of the field it fills, and reaches RunOptions / MqttOptions with its value."""
from dataclasses import fields

from click.testing import CliRunner

from edgefg import cli as cli_module
from edgefg.cli import cli
from edgefg.runtime.loop.camera_loop import RunOptions
from edgefg.runtime.outputs.mqtt import MqttOptions


def test_every_section_fills_fields_that_exist_and_no_field_twice():
    names = [n for s in cli_module.RUN_SECTIONS for n in s.fields]
    assert len(names) == len(set(names))
    run_fields = {f.name for f in fields(RunOptions)}
    for section in cli_module.RUN_OPTIONS_SECTIONS:
        assert set(section.fields) <= run_fields, section.name
    assert set(cli_module.RUN_MQTT.fields) <= {f.name for f in fields(MqttOptions)}
    assert set(cli_module.RUN_CAMERAS.fields) == {"sources", "source_file", "config"}


def test_flags_reach_the_run_options(tiny_bundles, monkeypatch, tmp_path):
    seen = {}

    def fake_run(bundle, source, opts):
        seen["source"], seen["opts"] = source, opts
        return {"frames": 0}

    monkeypatch.setattr("edgefg.runtime.serve.run_pipeline", fake_run)
    monkeypatch.setattr("edgefg.runtime.serve.format_summary", lambda s: "")
    args = ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", "clip.mkv", "--threads", "2", "--stall-timeout", "3", "--http", "127.0.0.1:0",
            "--http-timeout", "4", "--stats-every", "5", "--batch", "2", "--batch-wait-ms", "6", "--events", "--roi", "1,2,30,40",
            "--smooth", "ema:0.5", "--min-margin", "0.2", "--output", str(tmp_path / "o.jsonl"), "--rotate-mb", "7", "--max-retries", "-1",
            "--mqtt", "mqtt://broker:1884", "--mqtt-prefix", "farm/edgefg", "--mqtt-drain", "1.5", "--mqtt-discovery-prefix", "none", "--no-drift"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    o = seen["opts"]
    assert seen["source"] == "clip.mkv"
    assert (o.num_threads, o.stall_timeout_s, o.http, o.http_timeout_s, o.stats_every_s, o.batch, o.batch_wait_ms, o.events) == (2, 3.0, "127.0.0.1:0", 4.0, 5.0, 2, 6.0, True)
    assert (o.roi, o.smooth, o.min_margin, o.min_confidence, o.output, o.rotate_mb, o.rotate_keep, o.max_retries) == \
        ("1,2,30,40", "ema:0.5", 0.2, 0.0, tmp_path / "o.jsonl", 7.0, 5, None)
    m = o.mqtt
    assert (m.url, m.port, m.prefix, m.drain_s, m.discovery_prefix, m.inflight, m.spool_max) == ("mqtt://broker:1884", 1884, "farm/edgefg", 1.5, None, 256, 100_000)
    assert o.outputs == {} and o.trust is None
