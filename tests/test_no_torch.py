"""The on-device commands must work where torch (and the compression stack) cannot be imported."""
import json
import subprocess
import sys
import textwrap

BLOCKER = textwrap.dedent(
    """
    import sys
    class _Block:
        BLOCKED = ("torch", "torchvision", "timm", "nncf", "onnxscript")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _Block())
    from edgefg.cli import main
    sys.argv = ["edgefg"] + sys.argv[1:]
    main()
    """
)


def _edgefg(*args, cwd):
    return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_run_bench_validate_without_torch(tiny_bundles, tiny_artifacts, image_folder, tmp_path):
    bundle = tiny_bundles["int8-intel-cpu"]
    r = _edgefg("run", bundle, "--source", image_folder, "--max-frames", 5, "--output", tmp_path / "o.jsonl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 5
    r = _edgefg("bench", bundle, "--rounds", 1, "--iters", 2, "--warmup", 1, "--json", tmp_path / "b.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["latency_ms"]["p50"] > 0
    r = _edgefg("validate", bundle, "--data", image_folder, "--reference", tiny_artifacts["fp32"], "--json", tmp_path / "v.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "v.json").read_text())["agreement"] > 0


def test_blocker_blocks_and_compress_says_what_to_install(tiny_model, image_folder, tmp_path):
    r = _edgefg("compress", tiny_model, "--data", image_folder, "-o", tmp_path / "x", cwd=tmp_path)
    assert r.returncode == 2 and "pip install 'edgefg[compress]'" in r.stderr and "Traceback" not in r.stderr
