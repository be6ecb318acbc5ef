"""The artifact description that travels with every model edgefg writes.

A ``manifest.json`` sits beside the model file(s) of a compressed *artifact* and of a deployed
*bundle*. It holds everything later stages need — labels, preprocessing, I/O specs, precision,
backend, target, compression steps, measured accuracy/parity, library versions and a sha256 of
every file — so nothing is guessed twice. Imports only the standard library at import time (the
on-device runtime reads it); loading checks the strict schema of :mod:`edgefg.trust.schema`
(``jsonschema``) and, with ``trust``, the bundle's Ed25519 signature (``cryptography``).
"""
from __future__ import annotations

import calendar
import copy
import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefg.errors import BundleError, ChecksumError, InputPathError, OutputExistsError
from edgefg.manifest_fields import (  # noqa: F401  (re-exported: the manifest's names, defined below the schema)
    CROP_MODES,
    MANIFEST_NAME,
    OPENCV_INTERPOLATIONS,
    PIL_INTERPOLATIONS,
    RESIZERS,
    SCHEMA_VERSION,
)

LABELS_NAME = "labels.txt"
PARITY_DIR = "parity_samples"  # a few calibration images an artifact keeps for deploy's parity check


@dataclass
class Preprocess:
    """How a decoded image becomes the model input: timm's eval transform, made explicit.

    Geometry follows ``timm.data.transforms_imagenet_eval``: the resize size is
    ``floor(input_size / crop_pct)`` per side; ``center`` resizes the shorter side to it and
    centre-crops, ``squash`` resizes both sides to it (aspect ratio not kept) and centre-crops,
    ``border`` fits the longer side into it, pads with the mean colour and centre-crops/pads.
    ``resize`` names the library: ``pil`` reproduces timm/torchvision exactly (PIL's antialiased
    kernels), ``opencv`` is the faster approximation (area pre-shrink + OpenCV kernel).
    """

    input_size: tuple[int, int] = (224, 224)  # (H, W) fed to the model
    crop_mode: str = "center"  # center | squash | border
    crop_pct: float = 0.875
    interpolation: str = "bicubic"  # pil: nearest|bilinear|bicubic|box|hamming|lanczos; opencv: nearest|bilinear|bicubic|area
    resize: str = "pil"  # pil | opencv
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)  # on 0..1 pixels
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    color: str = "RGB"  # channel order the model expects
    layout: str = "NCHW"  # NCHW | NHWC
    dtype: str = "float32"  # float32 | float16 | uint8 | int8
    quant_scale: float | None = None  # for integer inputs: q = round(x / scale + zero_point)
    quant_zero_point: int | None = None
    border_fill: tuple[int, int, int] | None = None  # BGR pad colour of crop_mode border; None: the mean colour

    GEOMETRY = ("input_size", "crop_mode", "crop_pct", "interpolation", "resize", "mean", "std", "color", "border_fill")

    @property
    def scale_size(self) -> tuple[int, int]:
        """The size the image is resized to before cropping (timm: floor(size / crop_pct))."""
        return tuple(math.floor(x / self.crop_pct + 1e-9) for x in self.input_size)  # type: ignore[return-value]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        d = dict(d)
        if "resize_shorter" in d and "crop_pct" not in d:  # manifests written before crop modes
            shorter, crop = d.pop("resize_shorter"), d.pop("crop", "center")
            size = min(d.get("input_size") or (224, 224))
            d["crop_mode"], d["crop_pct"] = ("squash", 1.0) if crop == "none" else ("center", size / shorter)
            d.setdefault("resize", "opencv")  # what those versions resized with
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        for key in ("input_size", "mean", "std", "border_fill"):
            if key in d and d[key] is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]
    dtype: str = "float32"
    quant_scale: float | None = None
    quant_zero_point: int | None = None
    role: str | None = None  # outputs: None = the scores; "embedding" = the classifier's input features (deploy --embedding)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})


def guess_layout(shape: Sequence[Any]) -> str | None:
    """NCHW or NHWC from a 4-D image input shape (1 or 3 channels), None when the shape does not tell (e.g. 1×3×H×3)."""
    c1, c3 = shape[1] in (1, 3), shape[3] in (1, 3)
    return "NCHW" if c1 and not c3 else "NHWC" if c3 and not c1 else None


@dataclass
class Manifest:
    """Schema-versioned description of an artifact or bundle directory."""

    name: str
    kind: str  # "artifact" (output of compress) | "bundle" (output of deploy)
    model_file: str  # path relative to the directory
    format: str  # onnx | openvino | tflite | tensorrt-onnx ...
    backend: str  # runtime backend that runs model_file: onnxruntime | openvino | tflite | tensorrt
    precision: str  # fp32 | fp16 | bf16 | int8
    labels: list[str]
    preprocess: Preprocess
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    output_activation: str = "logits"  # logits | softmax
    target: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    compression: list[dict[str, Any]] = field(default_factory=list)
    accuracy: dict[str, Any] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # a bundle's release number, covered by its signature like every field: ``edgefg install`` refuses one
    # lower than the installed bundle's (no signed downgrade). Deploy sets it: --release N, default the
    # deploy time in seconds since 1970 (older bundles without it: their ``created`` time stands in)
    release: int | None = None
    # classes enrolled from a few images (``edgefg enroll``, :mod:`edgefg.enroll`): their prototype file,
    # calibration and the trained head's labels; labels = head labels less "removed" + "classes". {}: none
    prototypes: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def stamp_release(self, release: int | None = None) -> None:
        """A new bundle: ``created`` now and ``release`` = ``release`` or the time in seconds."""
        now = time.time()
        self.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.release = int(now) if release is None else int(release)

    def release_order(self) -> int:
        """What install compares: ``release``, else the creation time in seconds (0 when unreadable)."""
        if self.release is not None:
            return self.release
        try:
            return calendar.timegm(time.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ"))
        except (TypeError, ValueError):
            return 0

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def output_index(self, role: str) -> int | None:
        """The index of the output with ``role`` (e.g. "embedding"), None when the model has none."""
        return next((i for i, o in enumerate(self.outputs) if o.role == role), None)

    def with_backend(self, backend: str, **changes: Any) -> Manifest:
        """A copy whose model file runs in ``backend`` (with that backend's defaults: the options are
        dropped) — e.g. a TensorRT bundle's ONNX in ONNX Runtime on a host without the device."""
        return copy.deepcopy(dataclasses.replace(self, backend=backend, backend_options={}, **changes))  # deep: callers change nested specs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise BundleError(
                f"manifest schema version {version!r} is not supported (this edgefg reads {SCHEMA_VERSION})",
                "re-create the bundle with this edgefg version",
            )
        try:
            d = dict(d)
            d["preprocess"] = Preprocess.from_dict(d["preprocess"])
            d["inputs"] = [TensorSpec.from_dict(t) for t in d["inputs"]]
            d["outputs"] = [TensorSpec.from_dict(t) for t in d["outputs"]]
            known = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (KeyError, TypeError) as exc:
            raise BundleError(f"manifest is missing or has a malformed field: {exc}") from None

    # -- files -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return path

    def record_files(self, directory: str | Path) -> None:
        """Write labels.txt, then hash every file in ``directory`` (except the manifest) into ``files``."""
        directory = Path(directory)
        (directory / LABELS_NAME).write_text("\n".join(self.labels) + "\n", encoding="utf-8")
        self.files = {
            p.relative_to(directory).as_posix(): sha256_file(p)
            for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MANIFEST_NAME
        }


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory: str | Path, verify: bool = True, trust: Sequence[Any] | None = None) -> Manifest:
    """Read ``manifest.json`` from an artifact/bundle directory; verify checksums by default.

    The manifest is checked against the strict schema (:mod:`edgefg.trust.schema`) before any field
    is used. ``trust`` (public key paths or :class:`~edgefg.trust.signing.PublicKey`): the manifest's
    bytes must carry a signature by one of them (checked before they are parsed), and every file is
    verified whatever ``verify`` says.
    """
    from edgefg.trust.paths import open_confined
    from edgefg.trust.schema import MAX_MANIFEST_BYTES, check_manifest_data

    directory = Path(directory)
    if not directory.exists():
        raise InputPathError(f"'{directory}' does not exist", "pass the directory written by edgefg compress/deploy")
    if directory.is_file():
        raise BundleError(
            f"'{directory}' is a file, not an edgefg bundle directory",
            "wrap a model file into a bundle with: edgefg deploy MODEL --target ...",
        )
    path = directory / MANIFEST_NAME
    try:
        with open_confined(directory, MANIFEST_NAME, MANIFEST_NAME) as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"'{directory}' has no {MANIFEST_NAME}", "is it a directory written by edgefg compress/deploy?") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BundleError(f"'{path}' is larger than {MAX_MANIFEST_BYTES >> 20} MB", "re-create the bundle")
    if trust is not None:
        from edgefg.trust.signing import verify_manifest_signature

        verify_manifest_signature(directory, raw, trust)  # over the very bytes parsed below
        verify = True
    try:
        data = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"'{path}' is not valid JSON ({exc})", "re-create the bundle") from None
    except RecursionError:
        raise BundleError(f"'{path}' is nested too deeply to be a manifest", "re-create the bundle") from None
    check_manifest_data(data)
    manifest = Manifest.from_dict(data)
    if verify:
        verify_files(directory, manifest)
    return manifest


def verify_files(directory: str | Path, manifest: Manifest) -> None:
    """Raise :class:`ChecksumError` unless every listed file exists with its recorded sha256."""
    directory = Path(directory)
    if not manifest.files:
        raise ChecksumError(f"'{directory}' manifest lists no file checksums", "re-create the bundle")
    if manifest.model_file not in manifest.files:
        raise ChecksumError(f"the model file '{manifest.model_file}' has no checksum in the manifest")
    from edgefg.trust.paths import open_confined

    for rel, expected in manifest.files.items():
        path = directory / rel
        try:
            fh = open_confined(directory, rel)  # a bad name, a symlink, not a regular file: BundleError
        except FileNotFoundError:
            raise ChecksumError(f"'{path}' listed in the manifest is missing", "copy the whole bundle directory") from None
        with fh:
            digest = hashlib.sha256()
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"checksum mismatch for '{path}' (expected {expected[:12]}…, got {actual[:12]}…)",
                "the file is corrupt or was modified; re-copy or re-deploy the bundle",
            )


@contextmanager
def atomic_output_dir(out: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary directory next to ``out``; move it into place only on success.

    An exception leaves nothing at ``out`` that looks valid (and leaves an existing ``out``
    untouched unless the work completed and ``force`` was given).
    """
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"output '{out}' already exists", "choose another path or pass --force to overwrite")
    from edgefg.trust.outputs import ordinary_modes, sweep_stale, temp_dir

    out.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out.parent, out.name)  # what an interrupted run of the same command left behind
    tmp = temp_dir(out.parent, out.name)
    try:
        yield tmp
        ordinary_modes(tmp)  # mkdtemp makes it 0700
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    else:
        os.replace(tmp, out)
