"""The one lazy-table helper (edgefg/lazy.py) and every table that uses it: each entry resolves."""
import click
import pytest

from edgefg.errors import EdgefgError, MissingDependencyError, UnsupportedError
from edgefg.lazy import did_you_mean, pick, resolve


def test_pick_names_the_known_entries_and_the_closest():
    table = {"onnxruntime": 1, "openvino": 2}
    assert pick(table, "openvino", "runtime backend") == 2
    with pytest.raises(UnsupportedError) as e:
        pick(table, "openvno", "runtime backend")
    assert e.value.message == "unknown runtime backend 'openvno'"
    assert "did you mean 'openvino'?" in e.value.hint and "onnxruntime, openvino" in e.value.hint
    assert did_you_mean("zzz", table) == ""


def test_resolve_imports_an_attribute_or_a_module_and_names_the_extra_when_missing():
    assert resolve("edgefg.lazy:pick") is pick
    assert resolve("edgefg.lazy").__name__ == "edgefg.lazy"
    with pytest.raises(MissingDependencyError) as e:
        resolve("edgefg_not_installed_engine.mod:X", extra="openvino")
    assert "pip install 'edgefg[openvino]'" in e.value.hint
    with pytest.raises(ModuleNotFoundError):  # without an extra it is our bug, not the user's install
        resolve("edgefg_not_installed_engine")


def test_every_lazy_table_entry_resolves():
    from edgefg.cli import LAZY_COMMANDS
    from edgefg.formats import BACKENDS
    from edgefg.runtime.outputs.contract import OUTPUT_MODULES
    from edgefg.tune.engine import ENGINES

    for name, entry in LAZY_COMMANDS.items():
        assert isinstance(resolve(entry), click.Command), name
    for name in OUTPUT_MODULES:
        mod = resolve(OUTPUT_MODULES[name])
        assert hasattr(mod, "OPTIONS") and hasattr(mod, "open_output"), name
    for name, entry in ENGINES.items():
        assert callable(resolve(entry)), name
    for name, info in BACKENDS.items():
        try:
            cls = resolve(info.entry, extra=info.extra)
        except MissingDependencyError:  # TensorRT is not installable here: its own tests say so
            assert name == "tensorrt"
            continue
        assert cls.name == name


def test_an_unknown_backend_in_a_manifest_is_one_line():
    from edgefg.runtime.backends.base import backend_class

    with pytest.raises(EdgefgError, match="unknown runtime backend 'openvno'") as e:
        backend_class("openvno")
    assert "did you mean 'openvino'" in e.value.hint
