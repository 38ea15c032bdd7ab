"""Conversion of text offsets between code points, UTF-8 bytes and UTF-16 code units.

Three index units meet in this service: pycrdt's ``Text`` takes UTF-8 byte offsets, Yjs and
CodeMirror count UTF-16 code units, and Python's ``str`` counts code points. The same position
in ``"a😀b"`` is code point 2, UTF-8 byte 5 and UTF-16 unit 3. Server code converts offsets only
through this module.

An offset that falls inside a character (between the bytes of one UTF-8 sequence, or between
the two halves of a surrogate pair) raises ``ValueError``: silently rounding it would split a
character. Combining marks are separate code points, so an offset between a letter and its
combining mark is a valid boundary in every unit.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["Unit", "convert_offset", "length_in"]


class Unit(Enum):
    """A unit for indexing text."""

    CODE_POINT = "code_point"
    UTF8 = "utf8"
    UTF16 = "utf16"


def length_in(text: str, unit: Unit) -> int:
    """Return the length of ``text`` counted in ``unit``."""
    if unit is Unit.CODE_POINT:
        return len(text)
    if unit is Unit.UTF8:
        return len(text.encode("utf-8"))
    return len(text.encode("utf-16-le")) // 2


def convert_offset(text: str, offset: int, source: Unit, target: Unit) -> int:
    """Convert ``offset`` in ``text`` from the ``source`` unit to the ``target`` unit.

    :raises ValueError: when ``offset`` is negative, beyond the end of ``text`` or inside a
        character.
    """
    code_point = _to_code_point(text, offset, source)
    if target is Unit.CODE_POINT:
        return code_point
    return length_in(text[:code_point], target)


def _to_code_point(text: str, offset: int, unit: Unit) -> int:
    total = length_in(text, unit)
    if offset < 0 or offset > total:
        raise ValueError(
            f"offset {offset} is outside the text, which has {total} {unit.value} units"
        )
    if unit is Unit.CODE_POINT:
        return offset

    encoding = "utf-8" if unit is Unit.UTF8 else "utf-16-le"
    width = 1 if unit is Unit.UTF8 else 2
    prefix = text.encode(encoding)[: offset * width]
    try:
        return len(prefix.decode(encoding))
    except UnicodeDecodeError:
        raise ValueError(f"{unit.value} offset {offset} falls inside a character") from None
