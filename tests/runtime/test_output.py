"""The field-output contract (edgefg.runtime.outputs.contract): serve() drives a registered output for every frame,
on one source and on several cameras, serves its routes behind the token and its metrics, survives its
OSErrors, and puts its close() dict into the summary. A recording output stands in for collect/drift."""
import json
import sys
import threading
import time
import types
import urllib.error
import urllib.request

import click
import pytest

from edgefg.errors import EdgefgError
from edgefg.runtime.capture.cameras import CameraConfig
from edgefg.runtime.outputs import contract as output_mod
from edgefg.runtime.serve import RunOptions, run_cameras, run_pipeline


class Recorder:
    name = "recorder"

    def __init__(self, ctx, options):
        self.ctx, self.options = ctx, options
        self.results, self.ended, self.closed = [], [], 0
        self.fail_every = options.get("fail_every", 0)

    def on_result(self, camera, result, frame):
        assert frame.probabilities is not None and frame.probabilities.shape == (len(self.ctx.model.labels),)
        assert self.ctx.crop(camera, frame.image).ndim == 3
        self.results.append((camera, result["frame"]))
        if self.fail_every and len(self.results) % self.fail_every == 0:
            raise OSError(28, "No space left on device")

    def camera_ended(self, camera):
        self.ended.append(camera)

    def close(self):
        self.closed += 1
        if self.options.get("on_close"):
            self.options["on_close"]()
        return {"seen": len(self.results)}

    def stats(self):
        return {"summary": {"seen": len(self.results)}, "cameras": {c: {"seen": sum(1 for x, _ in self.results if x == c)} for c in self.ctx.cameras}}

    def metrics(self):
        return [("recorder_frames_total", "counter", "Frames the recorder saw.", [({}, len(self.results))])]

    def routes(self):
        return {"/recorder.bin": lambda params: (200, iter([b"abc", b"def" * int(params.get("n", "1"))]), "application/octet-stream")}


@pytest.fixture
def recorder(monkeypatch):
    made = []
    mod = types.ModuleType("edgefg_test_recorder")
    mod.OPTIONS = [click.option("--record", is_flag=True)]
    mod.options_from_cli = lambda values: {} if values.get("record") else None

    def open_output(ctx, options):
        made.append(Recorder(ctx, options))
        return made[-1]

    mod.open_output = open_output
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(output_mod, "OUTPUT_MODULES", {**output_mod.OUTPUT_MODULES, "recorder": mod.__name__})
    return made


def test_one_source_every_frame_reaches_the_output_and_its_close_goes_into_the_summary(tiny_bundles, image_folder, recorder):
    events = []
    opts = RunOptions(max_frames=12, outputs={"recorder": {"fail_every": 3}}, on_event=events.append)
    summary = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), opts, handle_signals=False)
    (rec,) = recorder
    assert [f for _, f in rec.results] == list(range(12)) and rec.closed == 1
    assert summary["recorder"] == {"seen": 12} and summary["frames"] == 12
    errors = [e for e in events if e["event"] == "sink_error" and e["sink"] == "recorder"]
    assert len(errors) == 1 and "No space" in errors[0]["error"]  # four failures, one event a minute


def test_cameras_end_and_http_routes_metrics_state_behind_the_token(tiny_bundles, image_folder, recorder, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-value\n")
    token.chmod(0o600)
    addr, box = {}, {}

    def on_event(e):
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]
            addr["paths"] = e["paths"]

    cams = [CameraConfig("a", str(image_folder), overrides={"loop": True}), CameraConfig("b", str(image_folder), overrides={"loop": True})]
    opts = RunOptions(max_frames=400, http="127.0.0.1:0", http_token_file=token, outputs={"recorder": {}}, on_event=on_event)
    t = threading.Thread(target=lambda: box.setdefault("s", run_cameras(tiny_bundles["fp32-onnxruntime-cpu"], cams, opts, handle_signals=False)), daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while "url" not in addr and time.monotonic() < deadline:
        time.sleep(0.02)
    base = addr["url"]
    assert "/recorder.bin" in addr["paths"]

    def get(path, auth=True):
        req = urllib.request.Request(base + path, headers={"Authorization": "Bearer s3cret-token-value"} if auth else {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert get("/recorder.bin", auth=False)[0] == 401
    assert get("/recorder.bin?n=3") == (200, b"abcdefdefdef")
    code, metrics = get("/metrics")
    assert code == 200 and b"# TYPE edgefg_recorder_frames_total counter" in metrics
    state = json.loads(get("/api/state")[1])
    assert set(state["outputs"]["recorder"]["cameras"]) == {"a", "b"}
    t.join(60)
    assert not t.is_alive()
    (rec,) = recorder
    assert box["s"]["recorder"]["seen"] == 400 and {c for c, _ in rec.results} == {"a", "b"}


def test_outputs_close_after_the_live_state_and_before_the_http_server(tiny_bundles, image_folder, recorder):
    addr, seen = {}, {}

    def on_event(e):
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]

    def probe():  # while the recorder closes: the server still answers, and every sighting has ended
        with urllib.request.urlopen(addr["url"] + "/api/state", timeout=5) as r:
            seen["state"] = json.loads(r.read())

    opts = RunOptions(max_frames=12, http="127.0.0.1:0", outputs={"recorder": {"on_close": probe}}, on_event=on_event)
    summary = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), opts, handle_signals=False)
    sightings = seen["state"]["sightings"]
    assert sightings and all(s["end_time"] is not None for s in sightings)
    assert summary["recorder"] == {"seen": 12}


def test_cameras_that_end_are_told(tiny_bundles, image_folder, recorder):
    cams = [CameraConfig("a", str(image_folder)), CameraConfig("b", str(image_folder))]
    run_cameras(tiny_bundles["fp32-onnxruntime-cpu"], cams, RunOptions(outputs={"recorder": {}}), handle_signals=False)
    (rec,) = recorder
    assert sorted(rec.ended) == ["a", "b"] and rec.closed == 1


def test_outputs_see_each_cameras_own_options(tiny_bundles, image_folder, recorder):
    """A camera's overrides (its open-set thresholds, ROI…) reach the outputs (drift counts 'unknown' with them)."""
    cams = [CameraConfig("strict", str(image_folder), overrides={"min_confidence": 0.9}), CameraConfig("plain", str(image_folder))]
    run_cameras(tiny_bundles["fp32-onnxruntime-cpu"], cams, RunOptions(min_confidence=0.1, outputs={"recorder": {}}), handle_signals=False)
    (rec,) = recorder
    assert rec.ctx.options("strict").min_confidence == 0.9
    assert rec.ctx.options("plain").min_confidence == 0.1 and rec.ctx.opts.min_confidence == 0.1


def test_cli_options_of_registered_outputs(recorder):
    @click.command()
    @output_mod.click_options
    def cmd(**values):
        click.echo(json.dumps(sorted(output_mod.options_from_cli(values))))

    from click.testing import CliRunner

    assert CliRunner().invoke(cmd, ["--record", "--no-drift"]).output.strip() == '["recorder"]'
    assert CliRunner().invoke(cmd, ["--no-drift"]).output.strip() == "[]"
    assert CliRunner().invoke(cmd, []).output.strip() == '["drift"]'  # on by default (off when the bundle has no profile)


def test_an_unknown_output_is_a_clear_error(tiny_bundles, image_folder):
    with pytest.raises(EdgefgError, match="unknown run outputs"):
        run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), RunOptions(max_frames=1, outputs={"nope": {}}), handle_signals=False)
