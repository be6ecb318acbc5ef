"""Bounded image decoding: the pixel count is read from the file header before anything is decoded.

A 1 MB PNG can declare 20000×20000 pixels (1.2 GB once decoded). :func:`read_limited` reads the
width and height from the header (a small parser for PNG, JPEG, BMP, GIF, WebP, TIFF and
PNM — the formats edgefg reads), refuses an image over the limit with :class:`ImageTooLargeError`
(a :class:`~edgefg.errors.DataError`, so validation, calibration and image sources skip and count it
like a corrupt image) and only then hands the bytes to OpenCV. A file whose header cannot be parsed is
refused the same way: its size cannot be known before decoding.

The limit: ``--max-pixels`` (via :func:`set_max_pixels`), else ``$EDGEFG_MAX_PIXELS``, else
:data:`DEFAULT_MAX_PIXELS` (40 MP: a 7728×5152 photo fits); 0 turns the check off. numpy only.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from edgefg.errors import DataError, EdgefgError

DEFAULT_MAX_PIXELS = 40_000_000
ENV = "EDGEFG_MAX_PIXELS"
HARD_MAX = 1 << 34  # what "no practical limit" may be set to at most (OpenCV's own cap is 2^30)
_override: int | None = None


class ImageTooLargeError(DataError):
    """An image whose header declares more pixels than the limit allows."""


def parse_max_pixels(value: str | int, what: str = ENV) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise EdgefgError(f"{what} must be a whole number of pixels (0 = no limit), got {str(value)[:40]!r}") from None
    if not 0 <= n <= HARD_MAX:
        raise EdgefgError(f"{what} must be between 0 (no limit) and {HARD_MAX}, got {n}")
    return n


def set_max_pixels(n: int | None) -> None:
    """Set the process-wide limit (None: back to $EDGEFG_MAX_PIXELS / the default)."""
    global _override
    _override = None if n is None else parse_max_pixels(n, "--max-pixels")


def max_pixels() -> int:
    if _override is not None:
        return _override
    env = os.environ.get(ENV)
    return parse_max_pixels(env) if env not in (None, "") else DEFAULT_MAX_PIXELS


# -- header parsers: (width, height) or ValueError ------------------------------------------------
def _png(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    if head[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR")
    return struct.unpack(">II", head[16:24])


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    fh.seek(2)
    for _ in range(100_000):
        b = fh.read(1)
        while b == b"\xff":  # fill bytes before a marker
            b = fh.read(1)
        if not b:
            break
        marker = b[0]
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            break
        raw = fh.read(2)
        if len(raw) < 2:
            break
        (length,) = struct.unpack(">H", raw)
        if length < 2:
            break
        if marker in _SOF:
            body = fh.read(5)
            if len(body) < 5:
                break
            h, w = struct.unpack(">HH", body[1:5])
            return w, h
        fh.seek(length - 2, os.SEEK_CUR)
        if not fh.read(1):  # past the end
            break
        fh.seek(-1, os.SEEK_CUR)
        if fh.read(1) != b"\xff":  # a segment must be followed by a marker
            break
        fh.seek(-1, os.SEEK_CUR)
    raise ValueError("JPEG without a frame header")


def _bmp(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    (dib,) = struct.unpack("<I", head[14:18])
    if dib == 12:
        return struct.unpack("<HH", head[18:22])
    w, h = struct.unpack("<ii", head[18:26])
    return abs(w), abs(h)


def _gif(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    return struct.unpack("<HH", head[6:10])


def _webp(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    chunk = head[12:16]
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    raise ValueError("WebP without a known image chunk")


def _tiff(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    end = "<" if head[:2] == b"II" else ">"
    (ifd,) = struct.unpack(end + "I", head[4:8])
    fh.seek(ifd)
    raw = fh.read(2)
    if len(raw) < 2:
        raise ValueError("TIFF IFD out of the file")
    (count,) = struct.unpack(end + "H", raw)
    entries = fh.read(12 * min(count, 4096))
    dims: dict[int, int] = {}
    for i in range(len(entries) // 12):
        tag, typ, _n = struct.unpack(end + "HHI", entries[12 * i : 12 * i + 8])
        if tag in (256, 257):
            val = entries[12 * i + 8 : 12 * i + 12]
            dims[tag] = struct.unpack(end + "H", val[:2])[0] if typ == 3 else struct.unpack(end + "I", val)[0]
    if 256 not in dims or 257 not in dims:
        raise ValueError("TIFF without width/height tags")
    return dims[256], dims[257]


def _pnm(fh: BinaryIO, head: bytes) -> tuple[int, int]:
    fh.seek(2)
    data = fh.read(4096)
    numbers: list[int] = []
    i = 0
    while len(numbers) < 2 and i < len(data):
        c = data[i : i + 1]
        if c == b"#":
            while i < len(data) and data[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isdigit():
            j = i
            while j < len(data) and data[j : j + 1].isdigit():
                j += 1
            numbers.append(int(data[i:j][:12]))
            i = j
            continue
        elif not c.isspace():
            raise ValueError("PNM header is not numbers")
        i += 1
    if len(numbers) < 2:
        raise ValueError("PNM header without a size")
    return numbers[0], numbers[1]


_FORMATS = [  # (magic test, parser, name)
    (lambda h: h.startswith(b"\x89PNG\r\n\x1a\n"), _png, "PNG"),
    (lambda h: h.startswith(b"\xff\xd8"), _jpeg, "JPEG"),
    (lambda h: h.startswith(b"BM"), _bmp, "BMP"),
    (lambda h: h[:6] in (b"GIF87a", b"GIF89a"), _gif, "GIF"),
    (lambda h: h[:4] == b"RIFF" and h[8:12] == b"WEBP", _webp, "WebP"),
    (lambda h: h[:4] in (b"II*\x00", b"MM\x00*"), _tiff, "TIFF"),
    (lambda h: len(h) > 2 and h[:1] == b"P" and h[1:2] in b"123456" and h[2:3].isspace(), _pnm, "PNM"),
]


def image_size(fh: BinaryIO) -> tuple[int, int, str]:
    """``(width, height, format)`` from the header of an open image file; ValueError when unknown."""
    fh.seek(0)
    head = fh.read(64)
    for test, parse, name in _FORMATS:
        if len(head) >= 8 and test(head):
            try:
                w, h = parse(fh, head.ljust(64, b"\x00"))
            except (struct.error, OSError, IndexError) as exc:
                raise ValueError(f"{name} header is damaged ({exc})") from None
            return int(w), int(h), name
    raise ValueError("not a PNG, JPEG, BMP, GIF, WebP, TIFF or PNM file")


def read_limited(path: str | Path, limit: int | None = None) -> np.ndarray:
    """The bytes of image file ``path`` (uint8 array), after checking its declared pixel count.

    Raises :class:`ImageTooLargeError` above ``limit`` (default :func:`max_pixels`; 0 = no check) and
    :class:`DataError` for a file whose header cannot be read.
    """
    limit = max_pixels() if limit is None else limit
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise DataError(f"'{path}' cannot be read ({exc.strerror or exc})") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if limit:
            try:
                w, h, fmt = image_size(fh)
            except ValueError as exc:
                raise DataError(f"'{path}' is not a readable image ({exc})") from None
            if w <= 0 or h <= 0:
                raise DataError(f"'{path}' is not a readable image ({fmt} header says {w}×{h})")
            if w * h > limit:
                raise ImageTooLargeError(
                    f"'{path}' is {w}×{h} = {w * h / 1e6:.1f} MP, over the {limit / 1e6:g} MP limit (not decoded)",
                    f"raise it with --max-pixels or {ENV} if such images are expected",
                )
            if size > 4 * limit + (16 << 20):  # more bytes than any encoding of that many pixels needs
                raise ImageTooLargeError(f"'{path}' is {size / 1e6:.0f} MB, too large for a {w}×{h} image (not decoded)")
        fh.seek(0)
        return np.frombuffer(fh.read(), dtype=np.uint8)
