"""A real two-node Ray cluster on this machine: a head (1 CPU) and an `edgefg worker` node (1 CPU)
advertising the onnxruntime-cpu target. One cluster for the module (2 CPUs in all)."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

if os.environ.get("CI"):
    import ray  # noqa: F401  - in CI the distributed extra is installed: a missing Ray must fail
else:
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'edgefg[distributed]')")
# Every Ray driver runs in a subprocess (the `edgefg` CLI itself), so this test process never holds
# Ray state and the cluster's token never leaks into other tests.
NODES = "import json, ray; ray.init(address='{}', log_to_driver=False); print(json.dumps({{n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}}))"

WORKER_TARGET = "onnxruntime-cpu"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End a process group this module started (ray start runs its daemons in it)."""
    for sig, wait in ((signal.SIGTERM, 3), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            time.sleep(0.5)
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # daemons left in the group once the leader exited
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ray")
    # a token only this cluster knows (recent Ray enables token authentication by default)
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), "RAY_USAGE_STATS_ENABLED": "0"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--disable-usage-stats", "--object-store-memory=200000000", "--block"],
                            env=env, start_new_session=True, stdout=open(logs / "head.log", "w"), stderr=subprocess.STDOUT)
    procs = [head]
    try:
        time.sleep(3)
        worker = subprocess.Popen([sys.executable, "-m", "edgefg", "worker", "--address", address, "--target", WORKER_TARGET, "--num-cpus", "1",
                                   "--object-store-mb", "200"],
                                  env=env, start_new_session=True, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT)
        procs.append(worker)
        deadline = time.time() + 120
        while True:
            r = subprocess.run([sys.executable, "-c", NODES.format(address)], env=env, capture_output=True, text=True, timeout=120)
            nodes = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else {}
            if len(nodes) == 2:
                break
            assert time.time() < deadline and worker.poll() is None, (logs / "worker.log").read_text()[-2000:] + r.stderr[-2000:]
            time.sleep(1)
        device = next(n for n, res in nodes.items() if res.get(f"edgefg-target:{WORKER_TARGET}"))
        host = next(n for n in nodes if n != device)
        yield {"address": address, "device_node": device, "head_node": host, "nodes": nodes, "env": env}
    finally:
        for p in reversed(procs):
            _stop(p)


def _edgefg(cluster, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "edgefg", *map(str, args)], env=cluster["env"], capture_output=True, text=True, timeout=timeout)


def test_worker_advertises_target_and_timing(cluster):
    res = cluster["nodes"][cluster["device_node"]]
    assert res[f"edgefg-target:{WORKER_TARGET}"] == 1 and res["edgefg-timing"] == 1 and res["CPU"] == 1


def test_sweep_on_ray_runs_the_targets_tasks_on_its_node(cluster, sweep_inputs, inprocess_sweep, tmp_path):
    out = tmp_path / "ray"
    r = _edgefg(cluster, "tune", sweep_inputs["model"], "--data", sweep_inputs["train"], "--val-data", sweep_inputs["val"], "--target", "intel-cpu",
                "--target", WORKER_TARGET, "--space", sweep_inputs["space"], "--trials", 2, "--bench-iters", 3, "--ray", cluster["address"], "-o", out,
                "--agreement-data", sweep_inputs["frames"], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "tune.json").read_text())
    assert res["engine"].startswith(f"ray {cluster['address']} (2 node(s); device nodes for {WORKER_TARGET}")
    ref = {t["id"]: t for t in inprocess_sweep["result"]["trials"]}
    assert len(res["trials"]) == 2 and {t["id"] for t in res["trials"]} <= set(ref)  # baseline + one seeded pick
    for t in res["trials"]:
        assert t["status"] == "ok", t["error"]
        dev, host = t["targets"][WORKER_TARGET], t["targets"]["intel-cpu"]
        # the device's tasks ran on the worker node, with the worker's thread settings; intel-cpu on the (x86) head is this host's own
        assert dev["node"] == cluster["device_node"] and dev["stand_in"] is False and dev["threads"] == 1 and dev["latency_kind"] == "device"
        assert host["node"] == cluster["head_node"] and host["stand_in"] is False and host["latency_kind"] == "host"
        for target in ("intel-cpu", WORKER_TARGET):  # same accuracy (and frames shipped to the device node) as in-process
            for key in ("top1", "top1_drop", "worst_class_drop", "images", "agreement", "precision", "frame_agreement", "class_losses"):
                assert t["targets"][target][key] == ref[t["id"]]["targets"][target][key], (t["label"], target, key)
    assert res["best"][WORKER_TARGET]["trial"] is not None


def test_validate_sharded_over_actors_equals_in_process(cluster, inprocess_sweep, sweep_inputs, tmp_path):
    bundle = inprocess_sweep["dir"] / "best" / WORKER_TARGET
    args = ["validate", bundle, "--data", sweep_inputs["val"], "--reference", inprocess_sweep["result"]["reference"]["artifact"], "--max-top1-drop", 5]
    local = _edgefg(cluster, *args, "--json", tmp_path / "local.json")
    # 15 images in chunks of 8: two chunks over two actors, one per 1-CPU node
    dist = _edgefg(cluster, "-v", *args, "--json", tmp_path / "ray.json", "--ray", cluster["address"], "--workers", 2, "--chunk-images", 8)
    assert local.returncode == 0 and dist.returncode == 0, dist.stderr[-3000:]
    assert "validating: 15 images in 2 chunk(s) over 2 actor(s) on 2 node(s)" in " ".join((dist.stdout + dist.stderr).split())
    local_json, ray_json = json.loads((tmp_path / "local.json").read_text()), json.loads((tmp_path / "ray.json").read_text())
    assert ray_json == local_json and local_json["images"] == 15 and local_json["per_class"]


def test_validate_ray_local_starts_its_own_ray(inprocess_sweep, sweep_inputs, tmp_path):
    """`--ray local`: a Ray started for this command (not the module's cluster), same JSON."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    args = [sys.executable, "-m", "edgefg", "validate", inprocess_sweep["dir"] / "best" / "intel-cpu", "--data", sweep_inputs["val"]]
    local = subprocess.run([*map(str, args), "--json", str(tmp_path / "a.json")], env=env, capture_output=True, text=True, timeout=300)
    dist = subprocess.run([*map(str, args), "--json", str(tmp_path / "b.json"), "--ray", "local", "--workers", "2", "--chunk-images", "8"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert local.returncode == 0 and dist.returncode == 0, dist.stderr[-3000:]
    assert json.loads((tmp_path / "a.json").read_text()) == json.loads((tmp_path / "b.json").read_text())


def test_worker_rejects_unknown_target():
    r = subprocess.run([sys.executable, "-m", "edgefg", "worker", "--address", "127.0.0.1:1", "--target", "no-such-board"],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown target 'no-such-board'")
