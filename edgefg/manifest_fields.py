"""The names a manifest's fields may take, read by :mod:`edgefg.manifest` (the dataclasses) and
:mod:`edgefg.trust.schema` (the JSON Schema that checks them): a leaf, so neither imports the other for them."""
from __future__ import annotations

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"

CROP_MODES = ("center", "squash", "border")  # timm's eval crop modes
RESIZERS = ("pil", "opencv")
PIL_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
OPENCV_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area")
