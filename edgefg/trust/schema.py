"""The strict ``manifest.json`` schema, checked before any field of a manifest is used.

JSON Schema (``jsonschema``) rather than pydantic: the schema is data (``edgefg manifest-schema``
could publish it for an OTA tool or another language), and the package is about a third of pydantic's
size on a device (≈3.5 MB with its dependencies vs ≈9.5 MB, pure Python but one Rust wheel,
``rpds-py``; pydantic-core alone is 5 MB), with a shorter import (≈60 ms vs ≈90 ms measured here).

What JSON Schema cannot say (label count = output width, file names confined to the bundle, integer
inputs need a quantization, input shape = preprocessing size) is checked in :func:`cross_checks`.
Every violation raises :class:`~edgefg.errors.BundleError` (exit 2) with one line naming the field.

**Preprocessing lives in** :data:`PREPROCESS_FIELDS` — one entry per ``Preprocess`` field, the
legacy ``resize_shorter``/``crop`` kept so that old manifests still load.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

from edgefg.errors import BundleError
from edgefg.manifest_fields import CROP_MODES, OPENCV_INTERPOLATIONS, PIL_INTERPOLATIONS, RESIZERS
from edgefg.trust.paths import name_problem

MAX_MANIFEST_BYTES = 16 << 20  # a 100k-label manifest is ~2 MB
MAX_DEPTH = 32  # nesting of the free-form sections (accuracy, parity, source, ...)
MAX_LABELS = 100_000
MAX_FILES = 10_000


def _finite(lo: float | None = None, hi: float | None = None, exclusive_lo: bool = False) -> dict[str, Any]:
    s: dict[str, Any] = {"type": "number", "finite": True}
    if lo is not None:
        s["exclusiveMinimum" if exclusive_lo else "minimum"] = lo
    if hi is not None:
        s["maximum"] = hi
    return s


def _triple(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item, "minItems": 3, "maxItems": 3}


_NULLABLE_SCALE = {"type": ["number", "null"], "finite": True, "exclusiveMinimum": 0, "maximum": 1e6}
_NULLABLE_ZERO = {"type": ["integer", "null"], "minimum": -128, "maximum": 255}

# -- Preprocess: the one place to extend when Preprocess changes ----------------------------------
PREPROCESS_FIELDS: dict[str, dict[str, Any]] = {
    "input_size": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 8192}, "minItems": 2, "maxItems": 2},
    "crop_mode": {"enum": list(CROP_MODES)},
    "crop_pct": _finite(0, 1, exclusive_lo=True),
    "resize": {"enum": list(RESIZERS)},
    "interpolation": {"enum": sorted(set(PIL_INTERPOLATIONS) | set(OPENCV_INTERPOLATIONS))},
    "border_fill": {"anyOf": [{"type": "null"}, _triple({"type": "integer", "minimum": 0, "maximum": 255})]},
    "mean": _triple(_finite(-1e3, 1e3)),
    "std": _triple(_finite(0, 1e3, exclusive_lo=True)),
    "color": {"enum": ["RGB", "BGR", "rgb", "bgr"]},
    "layout": {"enum": ["NCHW", "NHWC"]},
    "dtype": {"enum": ["float32", "float16", "uint8", "int8"]},
    "quant_scale": _NULLABLE_SCALE,
    "quant_zero_point": _NULLABLE_ZERO,
    # legacy (before crop_mode/crop_pct): still accepted so that old manifests load
    "resize_shorter": {"type": "integer", "minimum": 1, "maximum": 16384},
    "crop": {"enum": ["center", "none"]},
}
PREPROCESS_REQUIRED = ["input_size", "interpolation", "mean", "std", "layout", "dtype"]

TENSOR_FIELDS: dict[str, dict[str, Any]] = {
    "name": {"type": "string", "maxLength": 1024},
    "shape": {"type": "array", "maxItems": 8, "items": {"anyOf": [
        {"type": "integer", "minimum": -1, "maximum": 1 << 31}, {"type": "string", "maxLength": 64}]}},
    "dtype": {"enum": ["float32", "float16", "bfloat16", "float64", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"]},
    "quant_scale": _NULLABLE_SCALE,
    "quant_zero_point": _NULLABLE_ZERO,
    "role": {"enum": [None, "scores", "embedding"]},
}

_FREE = {"type": "object", "maxProperties": 10_000}  # free-form sections (reports, versions, options)
_LABEL = {"type": "string", "minLength": 1, "maxLength": 512}
# enrolled classes (edgefg enroll): {} or every key below; labels = head_labels less removed, then classes
PROTOTYPES_SCHEMA: dict[str, Any] = {"anyOf": [{"type": "object", "maxProperties": 0}, {
    "type": "object",
    "properties": {
        "file": {"type": "string", "minLength": 1, "maxLength": 1024},
        "embedding_output": {"type": "string", "minLength": 1, "maxLength": 1024},
        "head_labels": {"type": "array", "minItems": 1, "maxItems": MAX_LABELS, "items": _LABEL},
        "removed": {"type": "array", "maxItems": MAX_LABELS, "items": _LABEL},
        "classes": {"type": "array", "maxItems": MAX_LABELS, "items": _LABEL},
        "temperature": _finite(0, 1e6, exclusive_lo=True),
        "bias": _finite(-1e6, 1e6),
        "fit": _FREE,
    },
    "required": ["file", "embedding_output", "head_labels", "removed", "classes", "temperature", "bias"],
    "additionalProperties": False,
}]}


@lru_cache(maxsize=1)
def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12 + the ``finite`` keyword) of a ``manifest.json``."""
    from edgefg.formats import BACKENDS  # the table itself: the runtime backends are not imported
    from edgefg.manifest_fields import SCHEMA_VERSION

    tensor = {"type": "object", "properties": TENSOR_FIELDS, "required": ["name", "shape"], "additionalProperties": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "edgefg manifest.json",
        "type": "object",
        "properties": {
            "schema_version": {"const": SCHEMA_VERSION},
            "name": {"type": "string", "minLength": 1, "maxLength": 256},
            "kind": {"enum": ["artifact", "bundle"]},
            "model_file": {"type": "string", "minLength": 1, "maxLength": 1024},
            "format": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.+_-]{0,31}$"},
            "backend": {"enum": sorted(BACKENDS)},
            "precision": {"enum": ["fp32", "fp16", "bf16", "int8"]},
            "labels": {"type": "array", "minItems": 1, "maxItems": MAX_LABELS, "items": {"type": "string", "minLength": 1, "maxLength": 512}},
            "preprocess": {"type": "object", "properties": PREPROCESS_FIELDS, "required": PREPROCESS_REQUIRED, "additionalProperties": False},
            "inputs": {"type": "array", "minItems": 1, "maxItems": 16, "items": tensor},
            "outputs": {"type": "array", "minItems": 1, "maxItems": 16, "items": tensor},
            "output_activation": {"enum": ["logits", "softmax"]},
            "target": {"type": ["string", "null"], "maxLength": 256},
            "backend_options": _FREE,
            "compression": {"type": "array", "maxItems": 1000, "items": _FREE},
            "accuracy": _FREE,
            "parity": _FREE,
            "source": _FREE,
            "versions": {"type": "object", "maxProperties": 1000, "additionalProperties": {"type": ["string", "null"], "maxLength": 256}},
            "files": {"type": "object", "maxProperties": MAX_FILES, "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"}},
            "created": {"type": "string", "maxLength": 64},
            "release": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63 - 1},
            "prototypes": PROTOTYPES_SCHEMA,
        },
        "required": ["schema_version", "name", "kind", "model_file", "format", "backend", "precision", "labels", "preprocess", "inputs", "outputs"],
        "additionalProperties": False,
    }


@lru_cache(maxsize=1)
def _validator():
    import jsonschema

    def finite(validator, wanted, instance, schema):  # noqa: ARG001 (jsonschema keyword signature)
        if wanted and isinstance(instance, float) and not math.isfinite(instance):
            yield jsonschema.ValidationError(f"{instance} is not a finite number")

    base = jsonschema.Draft202012Validator
    cls = jsonschema.validators.extend(base, {"finite": finite})
    return cls(manifest_schema())


def field_name(path: Any) -> str:
    """``deque(['preprocess', 'std', 1])`` → ``preprocess.std[1]``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _depth_problem(data: Any, limit: int = MAX_DEPTH) -> str | None:
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if depth > limit:
            return where or "(top level)"
        if isinstance(node, dict):
            stack += [(v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in node.items()]
        elif isinstance(node, list):
            stack += [(v, depth + 1, f"{where}[{i}]") for i, v in enumerate(node)]
    return None


def _fail(field: str, problem: str) -> BundleError:
    problem = " ".join(problem.split())
    if len(problem) > 200:
        problem = problem[:197] + "..."
    return BundleError(f"manifest.json field '{field}': {problem}", "re-create the bundle with edgefg deploy, or fix the field")


def schema_errors(data: Any) -> Iterator[tuple[str, str]]:
    """Every schema violation as ``(field, problem)``, most relevant first."""
    import jsonschema

    errors = sorted(_validator().iter_errors(data), key=jsonschema.exceptions.relevance)
    for e in errors:
        yield field_name(e.absolute_path), e.message


def check_manifest_data(data: Any) -> None:
    """Raise :class:`BundleError` (one line, naming the field) unless ``data`` is a valid manifest."""
    from edgefg.manifest_fields import SCHEMA_VERSION

    if not isinstance(data, dict):
        raise _fail("(top level)", f"a manifest is a JSON object, not {type(data).__name__}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"manifest schema version {str(version)[:40]!r} is not supported (this edgefg reads {SCHEMA_VERSION})",
            "re-create the bundle with this edgefg version",
        )
    deep = _depth_problem(data)
    if deep:
        raise _fail(deep, f"nested deeper than {MAX_DEPTH} levels")
    for field, problem in schema_errors(data):
        raise _fail(field, problem)
    cross_checks(data)


def cross_checks(data: dict[str, Any]) -> None:
    """The rules that relate fields to each other (``data`` already matches the schema)."""
    problem = name_problem(data["model_file"])
    if problem:
        raise _fail("model_file", f"{data['model_file'][:80]!r} {problem}")
    for name in data.get("files", {}):
        problem = name_problem(name)
        if problem:
            raise _fail("files", f"{name[:80]!r} {problem}")
    if data.get("files") and data["model_file"] not in data["files"]:
        raise _fail("model_file", f"'{data['model_file'][:80]}' has no checksum in 'files'")
    width = data["outputs"][0]["shape"][-1] if data["outputs"][0]["shape"] else None
    protos = data.get("prototypes") or {}
    head = protos.get("head_labels", data["labels"])  # with enrolled classes the trained head's labels set the width
    if isinstance(width, int) and width > 0 and width != len(head):
        field = "prototypes.head_labels" if protos else "labels"
        raise _fail(field, f"{len(head)} labels for a model output of width {width} (outputs[0].shape[-1])")
    if protos:
        _prototype_checks(data, protos)
    in_shape, out_shape = data["inputs"][0]["shape"], data["outputs"][0]["shape"]
    if len(in_shape) != 4:
        raise _fail("inputs[0].shape", f"{in_shape} is not an image input (N, C, H, W) or (N, H, W, C)")
    if not 1 <= len(out_shape) <= 4:
        raise _fail("outputs[0].shape", f"{out_shape} is not a classifier output (N, classes)")
    for field, shape in (("inputs[0].shape", in_shape), ("outputs[0].shape", out_shape)):
        if any(isinstance(d, int) and d == 0 for d in shape):
            raise _fail(field, f"{shape} has a zero dimension")
    pre = data["preprocess"]
    if pre["dtype"] in ("uint8", "int8") and (pre.get("quant_scale") is None or pre.get("quant_zero_point") is None):
        raise _fail("preprocess.quant_scale", f"an {pre['dtype']} input needs quant_scale and quant_zero_point")
    shape = data["inputs"][0]["shape"]
    if len(shape) == 4:
        hw = (shape[2], shape[3]) if pre["layout"] == "NCHW" else (shape[1], shape[2])
        if all(isinstance(d, int) and d > 0 for d in hw) and list(hw) != list(pre["input_size"]):
            raise _fail("preprocess.input_size", f"{list(pre['input_size'])} differs from the model input's {pre['layout']} size {list(hw)} (inputs[0].shape)")


def _prototype_checks(data: dict[str, Any], protos: dict[str, Any]) -> None:
    """Enrolled classes: labels = head labels less the removed ones, then the enrolled classes; the
    prototype file is one of the bundle's checksummed files; the embedding output exists."""
    problem = name_problem(protos["file"])
    if problem:
        raise _fail("prototypes.file", f"{protos['file'][:80]!r} {problem}")
    if data.get("files") and protos["file"] not in data["files"]:
        raise _fail("prototypes.file", f"'{protos['file'][:80]}' has no checksum in 'files'")
    removed = set(protos["removed"])
    if not removed <= set(protos["head_labels"]):
        raise _fail("prototypes.removed", "names a class the trained head does not have")
    expected = [lab for lab in protos["head_labels"] if lab not in removed] + list(protos["classes"])
    if list(data["labels"]) != expected:
        raise _fail("labels", "differ from prototypes.head_labels less prototypes.removed, then prototypes.classes")
    if len(set(expected)) != len(expected):
        raise _fail("prototypes.classes", "an enrolled class has the name of another class")
    if protos["classes"] and protos["embedding_output"] not in {o["name"] for o in data["outputs"][1:]}:
        raise _fail("prototypes.embedding_output", f"'{protos['embedding_output'][:80]}' is not one of the model's outputs")
