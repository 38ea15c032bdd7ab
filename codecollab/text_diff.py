"""Minimal edits that turn one text into another, for replacing a shared text in place.

Replacing a Yjs text wholesale (delete everything, insert the new text) makes every concurrent
typist's edits land next to a full copy of the document. Applying only the changed ranges keeps
their edits where they were. The diff trims the common prefix and suffix, then runs
``difflib.SequenceMatcher`` on characters when the changed middle is small, or on lines first
when it is large, so the cost stays bounded on multi-megabyte documents.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from pycrdt import Text

from codecollab.text_offsets import Unit, length_in

# Product of the two lengths above which a character-level SequenceMatcher (quadratic in the
# worst case) gives way to a line-level one.
CHAR_DIFF_BUDGET = 1_000_000


@dataclass(frozen=True)
class Edit:
    """Replace ``old[start:end]`` (code point offsets into the old text) with ``text``."""

    start: int
    end: int
    text: str


def diff_edits(old: str, new: str) -> list[Edit]:
    """Return non-overlapping edits, in ascending order, that turn ``old`` into ``new``."""
    prefix = _common_prefix_length(old, new)
    suffix = _common_prefix_length(old[prefix:][::-1], new[prefix:][::-1])
    old_middle = old[prefix : len(old) - suffix]
    new_middle = new[prefix : len(new) - suffix]

    if not old_middle and not new_middle:
        return []
    if not old_middle or not new_middle:
        return [Edit(prefix, prefix + len(old_middle), new_middle)]

    edits: list[Edit] = []
    if len(old_middle) * len(new_middle) <= CHAR_DIFF_BUDGET:
        _diff_characters(old_middle, new_middle, prefix, edits)
    else:
        _diff_lines(old_middle, new_middle, prefix, edits)
    return edits


def apply_edits(text: Text, old: str, edits: list[Edit]) -> None:
    """Apply ``edits`` computed against ``old`` to the pycrdt ``text``, whose value is ``old``.

    The caller opens the transaction. Edits run from the last to the first, so the UTF-8
    offsets computed against ``old`` stay valid.
    """
    utf8_starts: list[tuple[int, int]] = []
    position = 0
    utf8_position = 0
    for edit in edits:
        utf8_start = utf8_position + length_in(old[position : edit.start], Unit.UTF8)
        utf8_end = utf8_start + length_in(old[edit.start : edit.end], Unit.UTF8)
        utf8_starts.append((utf8_start, utf8_end))
        position, utf8_position = edit.end, utf8_end

    for edit, (utf8_start, utf8_end) in zip(reversed(edits), reversed(utf8_starts), strict=True):
        if utf8_end > utf8_start:
            del text[utf8_start:utf8_end]
        if edit.text:
            text.insert(utf8_start, edit.text)


def _common_prefix_length(a: str, b: str) -> int:
    # Binary search over slice comparisons, which run in C, instead of a per-character loop.
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[low:middle] == b[low:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _diff_characters(old: str, new: str, offset: int, edits: list[Edit]) -> None:
    matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            edits.append(Edit(offset + i1, offset + i2, new[j1:j2]))


def _diff_lines(old: str, new: str, offset: int, edits: list[Edit]) -> None:
    old_lines = old.splitlines(keepends=True)
    new_lines = new.splitlines(keepends=True)
    old_starts = _line_starts(old_lines)
    new_starts = _line_starts(new_lines)

    matcher = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        old_block = old[old_starts[i1] : old_starts[i2]]
        new_block = new[new_starts[j1] : new_starts[j2]]
        block_offset = offset + old_starts[i1]
        if old_block and new_block and len(old_block) * len(new_block) <= CHAR_DIFF_BUDGET:
            _diff_characters(old_block, new_block, block_offset, edits)
        else:
            edits.append(Edit(block_offset, block_offset + len(old_block), new_block))


def _line_starts(lines: list[str]) -> list[int]:
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    return starts
