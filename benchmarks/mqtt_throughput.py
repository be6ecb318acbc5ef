"""MQTT throughput of the store-and-forward publisher (edgefg.runtime.outputs.mqtt) against a local mosquitto.

    python benchmarks/mqtt_throughput.py [--events 20000] [--rates 2000,5000] [--seconds 60] [--inflight 256]
    python benchmarks/mqtt_throughput.py --seconds 600          # the 10-minute steady-load figure for the docs

drain   a spool pre-filled with --events sighting-like events (2 cameras) is sent to the broker, once with
        ``inflight=1`` (the old one-message-then-wait-for-PUBACK sender, capped at --old-cap-s seconds) and
        once with the window (``inflight=--inflight``), side by side in one run: events/s acknowledged.
steady  events are produced at a fixed rate (each of --rates, events/s) for --seconds through
        ``MqttPublisher.event`` while it sends; the spool depth is sampled every second (min/max/last),
        then ``close()`` drains and reports what is left in the spool.

A subscriber (QoS 1) counts what the broker delivers: distinct seqs, duplicates, seqs never received, and
whether each camera's events arrived in order. The broker is mosquitto from tests/runtime/real_parts.py,
started on a free port without on-disk persistence (the test fixture saves its database on every change,
which measures the disk, not edgefg) and with no per-client queue limit (a slow Python subscriber must
not make the broker drop messages, which would be counted as lost). ``--persist`` keeps the test
fixture's configuration instead.

Prints a table (with the CPU model) and writes JSON to benchmarks/out/mqtt_throughput.json.
Figures are measured, never typed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path

if not __package__:  # python benchmarks/mqtt_throughput.py: benchmarks/_checkout.py makes the checkout importable
    import _checkout  # noqa: F401
from benchmarks.common import OUT, cpu_model, write_block, write_json

CAMERAS = ("north", "south")
SEQ = re.compile(rb'"seq":(\d+)')


def sighting(i: int, cam: str) -> dict:
    """A payload shaped and sized like a real sighting event (~400 bytes of JSON)."""
    s = {"id": f"{1700000000 + i / 100:.3f}-{cam}-{i}", "camera": cam, "label": f"species_{i % 200:03d}", "start_time": 1700000000.0 + i / 100,
         "end_time": None, "score": 0.8123, "best_score": 0.9012, "frames": i % 500 + 1}
    return {"type": "update", "camera": cam, "n": i, "before": s, "after": s}


def _subscriber(port: int, conn) -> None:
    """Child process: a QoS 1 subscriber that records, per camera, the seqs it received in arrival order.
    In its own process so that its Python does not share the publisher's GIL (a real consumer would not)."""
    from array import array

    import paho.mqtt.client as paho

    lock = threading.Lock()
    seqs: dict[str, array] = {c: array("q") for c in CAMERAS}
    ready = threading.Event()

    def on_message(c, u, m) -> None:
        cam = m.topic.split("/")[1]
        seq = int(SEQ.search(m.payload).group(1))
        with lock:
            seqs.setdefault(cam, array("q")).append(seq)

    c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-sub-{os.getpid()}", clean_session=True)
    c.on_connect = lambda c, u, f, rc, p: c.subscribe("edgefg/+/events", qos=1)
    c.on_subscribe = lambda *a: ready.set()
    c.on_message = on_message
    c.connect("127.0.0.1", port, keepalive=30)
    c.loop_start()
    conn.send(ready.wait(10))
    while True:
        msg = conn.recv()
        if msg[0] == "stop":
            break
        expected, timeout = msg[1], msg[2]
        deadline = time.monotonic() + timeout
        last, last_t = -1, time.monotonic()
        while time.monotonic() < deadline:  # until all arrived, or nothing came for 1 s
            with lock:
                n = sum(len(v) for v in seqs.values())
            if n >= expected:
                break
            if n != last:
                last, last_t = n, time.monotonic()
            elif time.monotonic() - last_t > 1.0:
                break
            time.sleep(0.05)
        with lock:
            conn.send({k: v.tobytes() for k, v in seqs.items()})
            for v in seqs.values():
                del v[:]
    c.disconnect()
    c.loop_stop()


class Counter:
    """The parent's handle on the subscriber process."""

    def __init__(self, port: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_subscriber, args=(port, child), daemon=True)
        self.proc.start()
        if not self.conn.recv():
            raise RuntimeError("the subscriber did not subscribe")

    def report(self, produced: dict[str, list[int]], timeout: float = 60.0) -> dict:
        """Wait for what was produced (or 1 s of silence), then count and reset."""
        import numpy as np

        self.conn.send(("report", sum(len(v) for v in produced.values()), timeout))
        got = {c: np.frombuffer(raw, dtype=np.int64) for c, raw in self.conn.recv().items()}
        received = distinct = lost = 0
        in_order = True
        for c, want in produced.items():
            seqs = got.get(c, np.zeros(0, np.int64))
            uniq, first = np.unique(seqs, return_index=True)
            received += len(seqs)
            distinct += len(uniq)
            lost += len(np.setdiff1d(np.asarray(want, np.int64), uniq, assume_unique=True))
            in_order &= bool(np.all(np.diff(uniq[np.argsort(first)]) > 0))  # first arrivals in seq order
        return {"received": received, "distinct": distinct, "duplicates": received - distinct, "lost": lost, "in_order_per_camera": in_order}

    def close(self) -> None:
        self.conn.send(("stop",))
        self.proc.join(10)


def start_broker(work: Path, persist: bool):
    from tests.runtime.real_parts import Mosquitto

    b = Mosquitto(work)
    if not persist:
        lines = [ln for ln in b.conf.read_text().splitlines() if not ln.startswith(("persistence", "autosave"))]
        b.conf.write_text("\n".join([*lines, "persistence false", "max_queued_messages 0", "max_inflight_messages 0"]) + "\n")
    return b.start()


def publisher(broker, spool: Path, inflight: int, node: str, drain_s: float = 5.0, legacy: bool = False):
    from edgefg.runtime.outputs.mqtt import MqttOptions, MqttPublisher

    opts = MqttOptions(broker.url, spool_path=spool, node_id=node, spool_max=1_000_000, inflight=inflight, drain_s=drain_s, discovery_prefix=None)
    return (_legacy_class() if legacy else MqttPublisher)(opts, list(CAMERAS))


def _legacy_class():
    from edgefg.runtime.outputs.mqtt import MqttPublisher

    class Legacy(MqttPublisher):
        """The sender as it was before the in-flight window (for the "before" figure only): peek one row,
        publish it, poll ``is_published()`` every 5 ms, delete that one row, repeat."""

        def _send_loop(self) -> None:
            while not self._stop.is_set():
                with self._cond:
                    while not self._stop.is_set() and not self._connected:
                        self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                rows = self.spool.peek(1)
                if not rows:
                    with self._cond:
                        self._cond.wait(0.5)
                    continue
                seq, topic, payload, retain = rows[0]
                info = self.client.publish(topic, self._with_seq(payload, seq), qos=1, retain=retain)
                while not info.is_published():
                    if self._stop.is_set():
                        return
                    time.sleep(0.005)
                self.spool.ack(seq)
                self.published += 1
                with self._cond:
                    self._cond.notify_all()

    return Legacy


def wait_connected(pub, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pub.connected:
        if time.monotonic() > deadline:
            raise RuntimeError("the publisher did not connect")
        time.sleep(0.01)


def drain(broker, sub: Counter, work: Path, n: int, inflight: int, cap_s: float, legacy: bool = False) -> dict:
    from edgefg.runtime.outputs.spool import Spool

    name = "old sender (one event, then poll for its PUBACK)" if legacy else f"inflight={inflight}"
    path = work / f"drain-{inflight}-{int(legacy)}.sqlite"
    sp = Spool(path, max_messages=1_000_000)
    produced: dict[str, list[int]] = {c: [] for c in CAMERAS}
    items = []
    for i in range(n):
        cam = CAMERAS[i % 2]
        items.append((f"edgefg/{cam}/events", json.dumps(sighting(i, cam), separators=(",", ":")).encode()))
    for (topic, _), seq in zip(items, sp.put_many(items)):
        produced[topic.split("/")[1]].append(seq)
    sp.close()
    pub = publisher(broker, path, inflight, f"drain{inflight}{int(legacy)}", legacy=legacy)
    t0 = time.monotonic()
    pub.start()
    wait_connected(pub)
    t_conn = time.monotonic()
    deadline = t_conn + cap_s
    while pub.spool.depth and time.monotonic() < deadline:
        time.sleep(0.002)
    elapsed = time.monotonic() - t_conn
    acked = pub.published
    pub.close(drain_s=0)
    stats = pub.stats()
    if stats["left_in_spool"]:  # capped: only the oldest rows were sent (a few in flight at the stop may also arrive)
        acked_set = set(sorted(s for v in produced.values() for s in v)[:acked])
        produced = {c: [s for s in v if s in acked_set] for c, v in produced.items()}
    rep = sub.report(produced)
    return {"sender": name, "inflight": inflight, "events": n, "acknowledged": acked, "seconds": round(elapsed, 3), "connect_s": round(t_conn - t0, 3),
            "events_per_s": round(acked / elapsed, 1) if elapsed else None, "capped": bool(stats["left_in_spool"]),
            "left_in_spool": stats["left_in_spool"], "subscriber": rep}


def steady(broker, sub: Counter, work: Path, rate: float, seconds: float, inflight: int, drain_s: float) -> dict:
    path = work / f"steady-{int(rate)}.sqlite"
    pub = publisher(broker, path, inflight, f"steady{int(rate)}", drain_s=drain_s).start()
    wait_connected(pub)
    produced: dict[str, array] = {c: array("q") for c in CAMERAS}
    depth: list[int] = []
    stop = threading.Event()
    behind = [0.0]

    def produce() -> None:
        t0 = time.monotonic()
        i = 0
        while True:
            now = time.monotonic()
            if now - t0 >= seconds:
                return
            due = int((now - t0) * rate)
            behind[0] = max(behind[0], (due - i) / rate)
            while i < due:
                cam = CAMERAS[i % 2]
                produced[cam].append(pub.event(cam, sighting(i, cam)))
                i += 1
            time.sleep(0.001)

    def sample() -> None:
        while not stop.wait(1.0):
            depth.append(pub.spool.depth)

    producer = threading.Thread(target=produce)
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.monotonic()
    producer.start()
    sampler.start()
    producer.join()
    wall = time.monotonic() - t0
    stop.set()
    sampler.join()
    depth_at_end = pub.spool.depth
    pub.close()
    stats = pub.stats()
    n = sum(len(v) for v in produced.values())
    rep = sub.report(produced)
    return {"rate": rate, "seconds": seconds, "produced": n, "produced_per_s": round(n / wall, 1), "producer_max_behind_s": round(behind[0], 3),
            "depth_min": min(depth) if depth else None, "depth_max": max(depth) if depth else None, "depth_last": depth[-1] if depth else None,
            "depth_samples": depth, "depth_at_end": depth_at_end, "published": stats["published"], "drained": stats["drained"],
            "drain_s": stats["drain_s"], "drain_deadline_hit": stats["drain_deadline_hit"], "left_in_spool": stats["left_in_spool"],
            "subscriber": rep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20_000, help="pre-filled spool for the drain measurement")
    ap.add_argument("--inflight", type=int, default=256, help="the window measured against inflight=1")
    ap.add_argument("--old-cap-s", type=float, default=10.0, help="stop the inflight=1 drain after this long (it is slow)")
    ap.add_argument("--rates", default="2000,5000", help="steady produce rates, events/s, comma-separated ('' to skip)")
    ap.add_argument("--seconds", type=float, default=60.0, help="steady-load duration per rate (600 for the docs figure)")
    ap.add_argument("--drain-s", type=float, default=5.0, help="close() drain limit after the steady load")
    ap.add_argument("--persist", action="store_true", help="use the test fixture's broker config (persistence saved on every change)")
    ap.add_argument("--json", type=Path, default=OUT / "mqtt_throughput.json")
    ap.add_argument("--no-docs", action="store_true", help="do not write the table into docs/field-loop.md")
    args = ap.parse_args()

    import importlib.util

    if importlib.util.find_spec("paho") is None:
        sys.exit("paho-mqtt is not installed: pip install 'edgefg[mqtt]'")

    out: dict = {"created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": cpu_model(), "cores": os.cpu_count(),
                 "python": platform.python_version(), "command": " ".join(["python", "benchmarks/mqtt_throughput.py", *sys.argv[1:]]),
                 "broker": "mosquitto (tests/runtime/real_parts.py)" + (", test-fixture persistence" if args.persist else ", no persistence, unlimited queues")}
    with tempfile.TemporaryDirectory(prefix="edgefg-mqtt-bench-") as tmp:
        work = Path(tmp)
        broker = start_broker(work / "broker", args.persist)
        sub = Counter(broker.port)
        try:
            out["drain"] = [drain(broker, sub, work, args.events, 1, args.old_cap_s, legacy=True),
                            drain(broker, sub, work, args.events, 1, args.old_cap_s),
                            drain(broker, sub, work, args.events, args.inflight, 600.0)]
            rates = [float(r) for r in args.rates.split(",") if r.strip()]
            out["steady"] = [steady(broker, sub, work, r, args.seconds, args.inflight, args.drain_s) for r in rates]
        finally:
            sub.close()
            broker.kill()

    print(f"CPU: {out['cpu']} ({out['cores']} cores), Python {out['python']}, {out['broker']}")
    print(f"\n{'drain':<36}{'events':>8}{'acked':>8}{'seconds':>9}{'events/s':>10}{'lost':>6}{'dups':>6}{'in order':>10}")
    for d in out["drain"]:
        s = d["subscriber"]
        name = d["sender"] + (" (capped)" if d["capped"] else "")
        print(f"{name:<36}{d['events']:>8}{d['acknowledged']:>8}{d['seconds']:>9.2f}{d['events_per_s']:>10.0f}{s['lost']:>6}{s['duplicates']:>6}{str(s['in_order_per_camera']):>10}")
    old, one, new = out["drain"]
    if old["events_per_s"] and one["events_per_s"]:
        out["speedup_vs_old"] = round(new["events_per_s"] / old["events_per_s"], 1)
        out["speedup_vs_inflight1"] = round(new["events_per_s"] / one["events_per_s"], 1)
        print(f"speed-up: {out['speedup_vs_old']}x over the old sender, {out['speedup_vs_inflight1']}x over inflight=1")
    if out["steady"]:
        print(f"\n{'steady (inflight=' + str(args.inflight) + ')':<36}{'rate':>7}{'secs':>6}{'produced':>10}{'depth min/max/last':>20}{'left':>6}{'drained':>8}{'lost':>6}{'dups':>6}{'in order':>10}")
        for s in out["steady"]:
            sub = s["subscriber"]
            dm = f"{s['depth_min']}/{s['depth_max']}/{s['depth_last']}"
            print(f"{'':<36}{s['rate']:>7.0f}{s['seconds']:>6.0f}{s['produced']:>10}{dm:>20}{s['left_in_spool']:>6}{s['drained']:>8}{sub['lost']:>6}{sub['duplicates']:>6}{str(sub['in_order_per_camera']):>10}")
    write_json(args.json, out, indent=1)
    print(f"\nwrote {args.json}")
    if not args.no_docs:
        write_block("mqtt-throughput", markdown(out))


def markdown(out: dict) -> str:
    """The docs table: drain rates side by side, then each steady-load run."""
    lines = [f"`{out['command']}` on {out['cpu']} ({out['cores']} cores), {out['created']}; {out['broker']}.", "",
             "| drain of a pre-filled spool | events | acknowledged | events/s | lost | duplicates | in order per camera |", "|---|---|---|---|---|---|---|"]
    for d in out["drain"]:
        sub = d["subscriber"]
        lines.append(f"| {d['sender']}{' (stopped at its cap)' if d['capped'] else ''} | {d['events']:,} | {d['acknowledged']:,} | {d['events_per_s']:,.0f} "
                     f"| {sub['lost']} | {sub['duplicates']} | {'yes' if sub['in_order_per_camera'] else 'no'} |")
    if out.get("speedup_vs_old"):
        lines += ["", f"The window drains {out['speedup_vs_old']}× faster than the old sender and {out['speedup_vs_inflight1']}× faster than `inflight=1`, in the same run."]
    if out.get("steady"):
        lines += ["", "| steady load | seconds | produced (per s) | spool depth min / max / last | left after close | lost | duplicates |", "|---|---|---|---|---|---|---|"]
        for st in out["steady"]:
            sub = st["subscriber"]
            lines.append(f"| {st['rate']:,.0f} events/s | {st['seconds']:.0f} | {st['produced']:,} ({st['produced_per_s']:,.0f}) | {st['depth_min']} / {st['depth_max']} / {st['depth_last']} "
                         f"| {st['left_in_spool']} | {sub['lost']} | {sub['duplicates']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
