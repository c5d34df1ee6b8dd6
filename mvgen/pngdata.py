"""A small PNG made in code (zlib + struct, no imaging library), for the vision check."""

from __future__ import annotations

import base64
import struct
import zlib

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def solid_png(
    width: int = 32, height: int = 32, rgb: tuple[int, int, int] = (220, 30, 30)
) -> bytes:
    """An RGB image of one colour: IHDR, one IDAT of filter-0 rows, IEND."""
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    row = b"\x00" + bytes(rgb) * width  # each scanline starts with its filter type
    pixels = zlib.compress(row * height, 9)
    return PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
