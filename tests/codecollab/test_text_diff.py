import random

import pytest
from pycrdt import Doc, Text

from codecollab.text_diff import apply_edits, diff_edits


def replace(old: str, new: str) -> str:
    doc = Doc()
    text = doc.get("content", type=Text)
    text += old
    with doc.transaction():
        apply_edits(text, old, diff_edits(old, new))
    return str(text)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("", "hello"),
        ("hello", ""),
        ("hello world", "hello brave world"),
        ("abc", "abc"),
        ("a😀b中c", "a😀X中c"),
        ("e\u0301 café", "e\u0301 cafe"),
        ("line1\nline2\nline3\n", "line1\nchanged\nline3\nline4\n"),
        ("👨‍👩‍👧 family", "👨‍👩 family"),
    ],
)
def test_apply_edits_produces_new_text(old: str, new: str) -> None:
    assert replace(old, new) == new


def test_diff_edits_is_minimal_for_one_word() -> None:
    edits = diff_edits("def main():\n    return 1\n", "def main():\n    return 2\n")
    assert [(e.start, e.end, e.text) for e in edits] == [(23, 24, "2")]


def test_diff_edits_empty_for_equal_text() -> None:
    assert diff_edits("same 😀", "same 😀") == []


def test_apply_edits_large_text_uses_line_diff() -> None:
    lines = [f"line {i} 😀 中\n" for i in range(20_000)]
    old = "".join(lines)
    lines[5_000] = "changed\n"
    lines.insert(15_000, "inserted\n")
    new = "".join(lines)
    edits = diff_edits(old, new)
    assert replace(old, new) == new
    assert sum(len(e.text) for e in edits) < 100


def test_apply_edits_random_texts_round_trip() -> None:
    rng = random.Random(7)
    alphabet = "ab \n😀中e\u0301"
    for _ in range(200):
        old = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        new = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        assert replace(old, new) == new


def test_replace_keeps_concurrent_edit() -> None:
    # A typist's insert made concurrently with the replacement survives, once.
    server = Doc()
    text = server.get("content", type=Text)
    text += "alpha beta gamma"
    typist = Doc()
    typist.apply_update(server.get_update())
    typist_text = typist.get("content", type=Text)
    typist_text.insert(len("alpha"), "!")

    old = str(text)
    with server.transaction():
        apply_edits(text, old, diff_edits(old, "alpha beta delta"))
    server.apply_update(typist.get_update())
    assert str(text) == "alpha! beta delta"
