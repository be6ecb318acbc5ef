"""The one timing helper: warm-up, interleaved rounds across the models compared, medians and spread."""
import time

from edgefg.runtime.engine.timing import interleaved_rounds, latency_summary, split_calls, time_interleaved


def test_rounds_interleave_the_models():
    order: list[str] = []

    def runner(name):
        def run(n):
            order.extend([name] * n)
            return [1.0] * n

        return run

    times = interleaved_rounds([runner("a"), runner("b")], rounds=3, iters=2)
    assert order == ["a", "a", "b", "b"] * 3 and [len(t) for t in times] == [6, 6]


def test_time_interleaved_warms_up_and_reports_median_and_spread():
    calls = {"fast": 0, "slow": 0}

    def fast():
        calls["fast"] += 1

    def slow():
        calls["slow"] += 1
        time.sleep(0.002)

    fast_lat, slow_lat = time_interleaved([fast, slow], rounds=2, iters=3, warmup=2)
    assert calls == {"fast": 2 + 2 * (1 + 3), "slow": 2 + 2 * (1 + 3)}  # warm-up + per round one untimed call + iters
    assert slow_lat["p50"] > fast_lat["p50"] and slow_lat["p50"] >= 2.0
    assert {"p50", "p90", "p99", "mean", "iqr"} <= set(slow_lat) and slow_lat["iqr"] >= 0
    assert latency_summary([1, 2, 3, 4, 5])["iqr"] == 2.0


def test_split_calls_keeps_the_number_of_calls():
    assert split_calls(30) == (5, 6) and split_calls(3) == (3, 1) and split_calls(1) == (1, 1)
