"""Drift on the device without labels (edgefg.runtime.outputs.drift, drift_profile) and shadow agreement.

The reference profile is written by deploy (inside the checksums and the signature) and by validate
--drift-reference; a run's PSI scores stay under their alert level on the reference's distribution and
cross it when the stream is darkened or its class mix changes, once per crossing; gauges on /metrics,
retained MQTT state + Home Assistant discovery on a real broker; fp32-vs-int8 shadow agreement."""

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgefg.errors import ChecksumError, ClassMismatchError, DataError, EdgefgError
from edgefg.manifest import load_manifest
from edgefg.runtime.capture.sources import ArraySource
from edgefg.runtime.engine.bundle import LoadedBundle
from edgefg.runtime.engine.preprocess import read_image
from edgefg.runtime.outputs.drift import DriftOptions, noise_levels, options_from_cli, psi
from edgefg.runtime.outputs.drift_profile import PROFILE_NAME, bundle_profile, load_profile
from edgefg.runtime.serve import RunOptions, run_pipeline
from tests.conftest import REPO, write_image_folder

WINDOW = 200


def frames_of(folder: Path, seed: int = 0) -> list[np.ndarray]:
    paths = sorted(p for p in folder.rglob("*.jpg"))
    rng = np.random.default_rng(seed)
    return [read_image(paths[i]) for i in rng.permutation(len(paths))]  # shuffled: no class runs in the window


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bundles):
    """A profile of the fp32 bundle on 240 generated images (validate --drift-reference)."""
    from edgefg.validate.api import validate

    root = tmp_path_factory.mktemp("drift")
    data = write_image_folder(root / "ref", per_class=80, seed=11)
    path = root / "drift.json"
    result = validate(tiny_bundles["fp32-onnxruntime-cpu"], data, drift_reference=path)
    assert result["drift_reference"]["images"] == 240
    return path


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """Frames: in-distribution (the same generator, another seed) and a darkened copy."""
    root = tmp_path_factory.mktemp("streams")
    same = frames_of(write_image_folder(root / "same", per_class=80, seed=12), seed=1)
    return {"same": same, "dark": [(f * 0.35).astype(np.uint8) for f in same]}


def drift_run(bundle, frames, reference=None, events=None, **kw):
    opts = DriftOptions(reference=reference, window=kw.pop("window", WINDOW), every=kw.pop("every", 10), warmup=kw.pop("warmup", 100), **kw)
    seen = [] if events is None else events
    summary = run_pipeline(bundle, ArraySource(frames), RunOptions(outputs={"drift": opts}, on_event=seen.append), handle_signals=False)
    return summary, seen


# -- the profile ---------------------------------------------------------------------------------
def test_deploy_writes_the_profile_inside_the_checksums_and_signature(tiny_bundles, tmp_path):
    from edgefg.trust.bundle_signing import sign_bundle
    from edgefg.trust.signing import generate_keypair

    bundle = tiny_bundles["fp32-intel-cpu"]
    m = load_manifest(bundle)
    assert PROFILE_NAME in m.files
    with LoadedBundle(bundle) as b:
        prof = bundle_profile(b)
    assert prof.images == m.parity["samples"] and prof.labels == m.labels  # the artifact's parity images
    assert prof.data["model"]["precision"] == "fp32" and prof.data["model"]["backend"] == m.backend
    assert set(prof.data["histograms"]) == {"confidence", "margin", "luminance", "sharpness"}

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    priv, pub = generate_keypair(tmp_path / "keys")
    sign_bundle(copy, priv)
    LoadedBundle(copy, trust=[pub]).close()
    data = json.loads((copy / PROFILE_NAME).read_text())
    data["histograms"]["luminance"]["counts"][0] += 1  # a tampered reference would hide drift
    data["images"] += 1
    (copy / PROFILE_NAME).write_text(json.dumps(data))
    with pytest.raises(ChecksumError, match=PROFILE_NAME):
        LoadedBundle(copy, trust=[pub])
    with pytest.raises(ChecksumError, match=PROFILE_NAME):
        load_manifest(copy)
    with LoadedBundle(copy, verify=False) as b:  # changed after the bundle was loaded: checked again when read
        with pytest.raises(ChecksumError, match="checksum mismatch"):
            bundle_profile(b)


def test_validate_cli_writes_a_profile_from_an_unlabelled_folder(tiny_bundles, image_folder, tmp_path):
    from click.testing import CliRunner

    from edgefg.cli import cli

    flat = tmp_path / "frames"
    flat.mkdir()
    for i, p in enumerate(sorted(image_folder.rglob("*.jpg"))):
        shutil.copy(p, flat / f"{i:03d}.jpg")
    out = tmp_path / "prof" / "drift.json"
    r = CliRunner().invoke(cli, ["validate", str(tiny_bundles["int8-onnxruntime-cpu"]), "--data", str(flat), "--drift-reference", str(out)])
    assert r.exit_code == 0, r.output
    assert "Drift reference profile" in r.output
    prof = load_profile(out, load_manifest(tiny_bundles["int8-onnxruntime-cpu"]).labels)
    assert prof.images == 18 and prof.data["model"]["precision"] == "int8" and sum(prof.data["classes"]) == 18


def test_bad_profiles_are_clear_errors(tiny_bundles, reference, tmp_path):
    labels = load_manifest(tiny_bundles["fp32-onnxruntime-cpu"]).labels
    good = json.loads(reference.read_text())
    cases = {
        "other_labels": ({**good, "labels": [*good["labels"][:-1], "Vermilion_Flycatcher"]}, ClassMismatchError, "another model.*label 2"),
        "fewer_classes": ({**good, "labels": good["labels"][:2], "classes": good["classes"][:2]}, ClassMismatchError, "2 classes, the bundle has 3"),
        "counts": ({**good, "classes": [*good["classes"][:2], 5, 1]}, DataError, "class counts"),
        "not_ours": ({"hello": 1}, DataError, "not an edgefg drift reference"),
        "inconsistent": ({**good, "images": good["images"] + 7}, DataError, "inconsistent"),
    }
    for name, (data, err, match) in cases.items():
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        with pytest.raises(err, match=match) as info:
            load_profile(path, labels)
        assert "edgefg validate BUNDLE --data DIR --drift-reference" in info.value.hint
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_profile(tmp_path / "garbage.json", labels)
    with pytest.raises(EdgefgError, match="does not exist"):
        load_profile(tmp_path / "missing.json", labels)
    # through edgefg run: exit 2 with the message, before any frame
    from click.testing import CliRunner

    from edgefg.cli import cli

    r = CliRunner().invoke(cli, ["run", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--source", str(reference.parent), "--max-frames", "3", "--drift-reference", str(tmp_path / "other_labels.json")])
    assert r.exit_code == 2 and "another model" in r.output


# -- the statistics -------------------------------------------------------------------------------
def test_psi_noise_floor_holds_without_drift():
    """Without drift, PSI of a window vs a reference stays under the alert floor (1/n+1/m)·χ²₀.₉₉₉₉(k−1)."""
    rng = np.random.default_rng(0)
    for k, n, m in ((100, 500, 500), (10, 200, 240), (3, 200, 240)):
        q = rng.dirichlet(np.ones(k) * 5)
        floor, mean = noise_levels(k, n, m)
        vals = np.array([psi(rng.multinomial(n, q), rng.multinomial(m, q)) for _ in range(2000)])
        assert (vals < floor).all() and 0.7 * mean < vals.mean() < 1.1 * mean
    assert psi([0, 0, 100], [100, 0, 0]) > 5  # an empty bin is no log(0)


def test_options_from_the_command_line():
    base = {"drift": None, "drift_reference": None, "drift_window": 500, "drift_every": 25, "drift_warmup": None, "drift_threshold": 0.25, "drift_clear": 0.1, "shadow": None, "shadow_every": 10, "shadow_threads": 1}
    o = options_from_cli(base)
    assert o.drift is None and o.window == 500 and o.warmup == 100  # on when the bundle has a profile
    assert options_from_cli({**base, "drift": False}) is None
    assert options_from_cli({**base, "drift": False, "shadow": Path("b")}).drift is False
    with pytest.raises(EdgefgError, match="below --drift-threshold"):
        options_from_cli({**base, "drift_clear": 0.3})
    # the CLI imports this module at start-up: no numpy there
    code = "import sys, edgefg.runtime.outputs.drift; assert 'numpy' not in sys.modules, 'numpy imported'"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True).returncode == 0


# -- the runtime ---------------------------------------------------------------------------------
def test_scores_stay_low_on_the_reference_distribution_and_rise_on_drift(tiny_bundles, reference, streams):
    bundle = tiny_bundles["fp32-onnxruntime-cpu"]
    summary, events = drift_run(bundle, streams["same"][: WINDOW + 40], reference)
    cam = summary["drift"]["cameras"]["default"]
    assert cam["window"] == WINDOW and cam["alerts"] == 0 and not [e for e in events if e["event"] == "drift"]
    assert all(cam["scores"][s] < cam["thresholds"][s] for s in cam["scores"]), cam
    assert set(cam["scores"]) == {"class", "confidence", "margin", "luminance", "sharpness"}
    assert summary["drift"]["ms_per_frame"] < 5
    (mon,) = [e for e in events if e["event"] == "drift_monitoring"]
    assert mon["images"] == 240 and mon["reference"] == str(reference)

    summary, events = drift_run(bundle, streams["dark"][:WINDOW], reference)
    cam = summary["drift"]["cameras"]["default"]
    assert "luminance" in cam["alerting"] and cam["scores"]["luminance"] > 1.0
    lum = [e for e in events if e["event"] == "drift" and e["signal"] == "luminance"]
    assert len(lum) == 1 and lum[0]["window_mean"] < 0.5 * lum[0]["reference_mean"]


def test_a_changed_class_mix_alerts(tiny_bundles, reference, streams, tmp_path):
    """The tiny random model calls nearly every image one class; against a reference where it spread
    its calls over the three classes, that stream is a changed class mix (and only that)."""
    bundle = tiny_bundles["fp32-onnxruntime-cpu"]
    prof = json.loads(reference.read_text())
    top = int(np.argmax(prof["classes"]))
    assert prof["classes"][top] > 0.9 * prof["images"]
    prof["classes"] = [prof["images"] // 3 + (i < prof["images"] % 3) for i in range(3)]
    spread = tmp_path / "spread.json"
    spread.write_text(json.dumps(prof))
    summary, events = drift_run(bundle, streams["same"][:WINDOW], spread)
    cam = summary["drift"]["cameras"]["default"]
    assert cam["alerting"] == ["class"] and cam["scores"]["class"] > 1.0
    (ev,) = [e for e in events if e["event"] == "drift"]
    assert list(ev["window_top_classes"])[0] == load_manifest(bundle).labels[top]


def test_open_set_rate_is_a_signal_at_the_runs_thresholds(tiny_bundles, reference, streams):
    bundle = tiny_bundles["fp32-onnxruntime-cpu"]
    events = []
    opts = RunOptions(min_confidence=0.6, outputs={"drift": DriftOptions(reference=reference, window=WINDOW, every=10, warmup=100)}, on_event=events.append)
    summary = run_pipeline(bundle, ArraySource(streams["same"][:WINDOW]), opts, handle_signals=False)
    (mon,) = [e for e in events if e["event"] == "drift_monitoring"]
    assert "unknown" in mon["signals"] and 0 <= mon["reference_unknown_rate"] <= 1
    cam = summary["drift"]["cameras"]["default"]
    assert cam["scores"]["unknown"] < cam["thresholds"]["unknown"]


def test_drift_event_fires_once_per_crossing_then_clears(tiny_bundles, reference, streams):
    same, dark = streams["same"], streams["dark"]
    frames = same[:WINDOW] + dark[:WINDOW] + same[WINDOW:] + same[: 2 * WINDOW - (len(same) - WINDOW)]
    _, events = drift_run(tiny_bundles["fp32-onnxruntime-cpu"], frames, reference)
    lum = [(e["event"], e["frames"]) for e in events if e["event"] in ("drift", "drift_cleared") and e["signal"] == "luminance"]
    assert [k for k, _ in lum] == ["drift", "drift_cleared"], lum
    (_, up), (_, down) = lum
    assert WINDOW < up <= WINDOW + 40  # within 40 frames of the switch
    assert 2 * WINDOW < down <= 3 * WINDOW + 10  # once the dark frames have left the window


def test_gauges_on_metrics_and_state_on_the_page(tiny_bundles, reference, streams):
    addr, box, go = {}, {}, threading.Event()

    def frames():
        for i, f in enumerate(streams["dark"] * 2):
            if i == WINDOW:
                go.wait(120)  # hold the run while the test reads /metrics
            yield f

    def on_event(e):
        if e["event"] == "http_listening":
            addr["url"] = "http://" + e["address"]

    opts = RunOptions(http="127.0.0.1:0", on_event=on_event, outputs={"drift": DriftOptions(reference=reference, window=WINDOW, every=10, warmup=100)})

    def run():
        try:
            box["s"] = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], ArraySource(frames()), opts, handle_signals=False)
        except BaseException as exc:  # shown by the assertion below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    deadline = time.monotonic() + 60
    text = ""
    while time.monotonic() < deadline and 'edgefg_drift_alert{camera="default"} 1' not in text and "error" not in box:
        time.sleep(0.1)
        if "url" in addr:
            text = urllib.request.urlopen(addr["url"] + "/metrics", timeout=10).read().decode()
    state = json.loads(urllib.request.urlopen(addr["url"] + "/api/state", timeout=10).read())
    go.set()
    t.join(60)
    assert "error" not in box, box.get("error")
    assert "# TYPE edgefg_drift_score gauge" in text and 'edgefg_drift_score{camera="default",signal="luminance"}' in text
    assert 'edgefg_drift_alert{camera="default"} 1' in text and 'edgefg_drift_alerts_total{camera="default"}' in text
    page = state["outputs"]["drift"]
    assert page["cameras"]["default"]["drift_alert"] is True and page["cameras"]["default"]["drift"].startswith("ALERT")
    assert page["summary"]["drift_reference_images"] == 240
    assert box["s"]["frames"] == 2 * len(streams["dark"])


def test_a_bundle_without_a_profile_says_how_to_get_one(tiny_artifacts, image_folder, tmp_path):
    from edgefg.deploy import deploy

    bundle = deploy(tiny_artifacts["fp32"], "onnxruntime-cpu", tmp_path / "noprof", drift_samples=0).directory
    assert PROFILE_NAME not in load_manifest(bundle).files
    events = []
    summary = run_pipeline(bundle, str(image_folder), RunOptions(max_frames=5, outputs={"drift": DriftOptions()}, on_event=events.append), handle_signals=False)
    (off,) = [e for e in events if e["event"].startswith("drift")]
    assert off["event"] == "drift_off" and "--drift-reference" in off["hint"] and summary["drift"]["drift"].startswith("off")
    with pytest.raises(EdgefgError, match="no drift reference"):
        run_pipeline(bundle, str(image_folder), RunOptions(max_frames=5, outputs={"drift": DriftOptions(drift=True)}), handle_signals=False)


# -- MQTT -----------------------------------------------------------------------------------------
def test_retained_drift_state_and_discovery_on_a_real_broker(broker, tiny_bundles, reference, streams, tmp_path):
    from edgefg.runtime.outputs.mqtt import MqttOptions
    from tests.runtime.test_mqtt import Subscriber, wait_for

    opts = RunOptions(mqtt=MqttOptions(broker.url, spool_path=tmp_path / "spool.sqlite", node_id="testnode"), outputs={"drift": DriftOptions(reference=reference, window=WINDOW, every=10, warmup=100)})
    run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], ArraySource(streams["dark"][:WINDOW]), opts, handle_signals=False)
    late = Subscriber(broker.port, "#", client_id="late-drift")  # after the run: only retained messages reach it
    try:
        wait_for(lambda: {"edgefg/default/drift", "homeassistant/binary_sensor/testnode_default/drift/config"} <= {t for t, _, r in late.messages if r}, what="retained drift state and discovery")
        msgs = {t: json.loads(p) for t, p, r in list(late.messages) if r and (t.endswith("/drift") or "drift" in t)}
    finally:
        late.close()
    state = msgs["edgefg/default/drift"]
    assert state["alert"] is True and "luminance" in state["alerting"] and state["window"] == WINDOW
    assert state["scores"]["luminance"] > state["thresholds"]["luminance"]
    binary = msgs["homeassistant/binary_sensor/testnode_default/drift/config"]
    assert binary["state_topic"] == "edgefg/default/drift" and binary["device_class"] == "problem"
    assert binary["availability_topic"] == "edgefg/available" and binary["device"]["identifiers"] == ["edgefg_testnode_default"]
    assert msgs["homeassistant/sensor/testnode_default/drift_score/config"]["unique_id"] == "edgefg_testnode_default_drift_score"


def test_extra_retained_topics_are_published_again_after_a_reconnect(broker, tmp_path):
    """MqttPublisher.publish_retained / add_discovery: remembered, and sent again on every (re)connect."""
    from edgefg.runtime.loop.events import EventLog
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher
    from tests.runtime.test_mqtt import Subscriber, wait_for

    pub = MqttPublisher(MqttOptions(broker.url, spool_path=tmp_path / "s.sqlite", node_id="n1"), ["cam"], EventLog())
    pub.publish_retained("cam", "drift", {"alert": False})  # before the connection: sent once it is up
    pub.add_discovery("binary_sensor", "cam", "drift", {"name": "Drift", "state_topic": pub.topic("cam", "drift")})
    pub.start()
    try:
        wait_for(lambda: pub.connected, what="connection")
        pub.publish_retained("cam", "drift", {"alert": True})  # the latest value replaces the remembered one
        sub = Subscriber(broker.port, "#", client_id="watch")
        wait_for(lambda: any(t == "edgefg/cam/drift" and json.loads(p) == {"alert": True} for t, p, _ in list(sub.messages)), what="drift state")
        sub.close()
        cleaner = Subscriber(broker.port, "nothing/#", client_id="cleaner")
        for topic in ("edgefg/cam/drift", "homeassistant/binary_sensor/n1_cam/drift/config"):  # delete the retained copies
            cleaner.c.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        cleaner.close()
        broker.kill(signal.SIGTERM)  # a clean stop saves the broker's store: it restarts with no retained copy
        broker.start()  # edgefg reconnects and publishes both again
        wait_for(lambda: pub.connects >= 2 and pub.connected, timeout=30, what="the reconnect")
        # a fresh subscriber reads what the broker retains now: only edgefg's re-publish can have put it there
        # (after a SIGKILL mosquitto may restore an older copy from its last autosave, which proves nothing)
        late = Subscriber(broker.port, "#", client_id="late-retained")
        try:

            def retained() -> dict[str, bytes]:
                # retained on subscribe, or live when edgefg's re-publish lands after this subscribe (then the
                # broker sends it with retain=0): either way only edgefg can have sent it since the clean restart
                return {t: p for t, p, _ in list(late.messages) if p}

            wait_for(
                lambda: retained().get("edgefg/cam/drift") == b'{"alert":true}' and "homeassistant/binary_sensor/n1_cam/drift/config" in retained(),
                timeout=30,
                what="the latest value and the discovery retained after the reconnect",
            )
            disc = json.loads(retained()["homeassistant/binary_sensor/n1_cam/drift/config"])
            assert disc["unique_id"] == "edgefg_n1_cam_drift" and disc["availability_topic"] == "edgefg/available"
        finally:
            late.close()
    finally:
        pub.close(drain_s=0.5)


@pytest.fixture
def broker(tmp_path):
    from tests.runtime.real_parts import Mosquitto, require

    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:  # pragma: no cover
        require(False, "paho-mqtt (pip install 'edgefg[mqtt]')")
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.kill()


# -- shadow ---------------------------------------------------------------------------------------
def test_shadow_agreement_fp32_vs_int8(tiny_bundles, streams):
    frames = streams["same"][:120]
    opts = DriftOptions(drift=False, shadow=tiny_bundles["fp32-onnxruntime-cpu"], shadow_every=3)
    summary = run_pipeline(tiny_bundles["int8-onnxruntime-cpu"], ArraySource(frames), RunOptions(outputs={"drift": opts}), handle_signals=False)
    s = summary["drift"]["shadow"]
    assert s["shadow_compared"] + s["shadow_dropped"] == 40 and s["shadow_compared"] > 0 and s["shadow_errors"] == 0
    assert 0 <= s["shadow_ci_low"] <= s["shadow_agreement"] <= s["shadow_ci_high"] <= 1
    assert s["shadow_agreement"] == s["shadow_agreed"] / s["shadow_compared"]
    # against itself: every compared frame agrees
    opts = DriftOptions(drift=False, shadow=tiny_bundles["fp32-onnxruntime-cpu"], shadow_every=4)
    summary = run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], ArraySource(frames), RunOptions(outputs={"drift": opts}), handle_signals=False)
    assert summary["drift"]["shadow"]["shadow_agreement"] == 1.0


def test_shadow_with_other_labels_is_refused_at_start(tiny_bundles, image_folder, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_bundles["fp32-onnxruntime-cpu"], other)
    m = load_manifest(other)
    m.labels = list(reversed(m.labels))
    m.record_files(other)
    m.save(other)
    opts = DriftOptions(drift=False, shadow=other)
    with pytest.raises(ClassMismatchError, match="same classes in another order"):
        run_pipeline(tiny_bundles["fp32-onnxruntime-cpu"], str(image_folder), RunOptions(max_frames=2, outputs={"drift": opts}), handle_signals=False)
