"""Every `--flag` that edgefg's own text names (hints, errors, next: lines, docstrings) is a real option.

The strings are read from the source with ``ast`` and checked against the click commands: a flag
right after ``edgefg CMD`` must be an option of CMD, any other flag an option of some command, or
one of the few other tools' flags listed below (with the tool)."""
import ast
import re
from pathlib import Path

import click
from click.testing import CliRunner

from edgefg.cli import cli

REPO = Path(__file__).resolve().parents[1]
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
COMMAND = re.compile(r"\bedgefg ([a-z][a-z-]*)")
# flags of other tools that edgefg prints (trtexec commands, nvidia-smi queries, venv setup)
FOREIGN = {
    "--onnx": "trtexec", "--save": "trtexec --saveEngine", "--mem": "trtexec --memPoolSize", "--workspace": "trtexec (TensorRT 8)",
    "--calib": "trtexec", "--use": "trtexec --useDLACore", "--allow": "trtexec --allowGPUFallback", "--timing": "trtexec --timingCacheFile",
    "--query-gpu": "nvidia-smi", "--format": "nvidia-smi", "--id": "nvidia-smi", "--system-site-packages": "python -m venv",
    "--head": "ray start", "--resources": "ray start", "--object-store-memory": "ray start", "--disable-usage-stats": "ray start",
    "--block": "ray start",
}
# files whose strings are not messages: the live page's CSS custom properties (--bg, --fg, ...)
NOT_MESSAGES = {"edgefg/runtime/outputs/webpage.py"}


def command_options() -> dict[str, set[str]]:
    ctx = click.Context(cli)
    group = {o for p in cli.params for o in (*p.opts, *p.secondary_opts)} | {"--help", "--version"}
    out = {}
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        # a group (edgefg collect export|stats): its own options and those of its subcommands
        subs = [cmd.get_command(ctx, s) for s in cmd.list_commands(ctx)] if isinstance(cmd, click.Group) else []
        out[name] = {o for c in (cmd, *subs) for p in c.params for o in (*p.opts, *p.secondary_opts)} | {"--help"} | group
    return out


def source_texts():
    """(file, line, text) for every string literal in edgefg/; f-strings joined with VALUE for the holes."""
    for path in sorted((REPO / "edgefg").rglob("*.py")):
        if path.relative_to(REPO).as_posix() in NOT_MESSAGES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        inside_fstrings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr):
                parts = []
                for v in node.values:
                    inside_fstrings.add(id(v))
                    parts.append(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "VALUE")
                yield path.relative_to(REPO), node.lineno, "".join(parts)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in inside_fstrings:
                yield path.relative_to(REPO), node.lineno, node.value


def flag_problems(text: str, options: dict[str, set[str]]) -> list[str]:
    known = set().union(*options.values())
    problems = []
    # flags after `edgefg CMD`, up to the next command, `|`, `;` or line end, belong to CMD
    spans = []
    for m in COMMAND.finditer(text):
        if m.group(1) not in options:
            continue
        end = len(text)
        for stop in (text.find("edgefg ", m.end()), text.find("|", m.end()), text.find(";", m.end()), text.find("\n", m.end())):
            if stop != -1:
                end = min(end, stop)
        spans.append((m.start(), end))
        for flag in FLAG.findall(text[m.end():end]):
            if flag not in options[m.group(1)]:
                problems.append(f"`edgefg {m.group(1)}` has no option {flag}")
    for m in FLAG.finditer(text):
        if any(a <= m.start() < b for a, b in spans):
            continue
        if m.group() not in known and m.group() not in FOREIGN:
            problems.append(f"no edgefg command has the option {m.group()}")
    return problems


def test_every_flag_named_in_edgefg_text_exists():
    options = command_options()
    bad = [f"{path}:{line}: {p}" for path, line, text in source_texts() for p in flag_problems(text, options)]
    assert not bad, "\n".join(bad)


def test_the_scanner_catches_a_made_up_flag():
    options = command_options()
    assert flag_problems("rename the folders, or pass --labels FILE", options) == []  # compress/deploy have it
    assert flag_problems("edgefg validate B --data D --labels F", options) == ["`edgefg validate` has no option --labels"]
    assert flag_problems("pass --no-such-flag", options) == ["no edgefg command has the option --no-such-flag"]
    assert flag_problems("next: edgefg deploy X --target intel-cpu -o Y | edgefg bench X --json r.json", options) == []


def test_validate_class_mismatch_hint_names_only_validate_options(tiny_bundles, image_folder, tmp_path):
    data = tmp_path / "data"
    (data / "Not_A_Model_Class").mkdir(parents=True)
    src = next((image_folder / "Least_Flycatcher").iterdir())
    (data / "Not_A_Model_Class" / src.name).write_bytes(src.read_bytes())
    r = CliRunner().invoke(cli, ["validate", str(tiny_bundles["fp32-onnxruntime-cpu"]), "--data", str(data)])
    assert r.exit_code == 2, r.output
    hint = [line for line in r.output.splitlines() if line.startswith("hint:")]
    assert hint and "leave them out" in hint[0]
    assert set(FLAG.findall(hint[0])) <= command_options()["validate"], hint[0]


def test_deploy_layout_option_for_a_model_whose_shape_does_not_tell(tmp_path):
    """wrap's hint says `pass --layout NCHW or NHWC`: deploy has the option and it works."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "c", "h", "w"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    axes = numpy_helper.from_array(np.array([2, 3], dtype=np.int64), "axes")
    graph = helper.make_graph([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)], "g", [x], [y], [axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "m.onnx")
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    base = ["deploy", str(tmp_path / "m.onnx"), "-t", "onnxruntime-cpu", "--labels", str(tmp_path / "labels.txt"),
            "--mean", "0.5", "0.5", "0.5", "--std", "0.25", "0.25", "0.25"]
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a")])
    assert r.exit_code == 2 and "pass --layout NCHW or NHWC" in r.output
    r = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b"), "--layout", "NCHW", "--input-size", "32", "32"])
    assert r.exit_code == 0, r.output
    from edgefg.manifest import load_manifest

    assert load_manifest(tmp_path / "b").preprocess.layout == "NCHW"
