import pytest

from codecollab.text_offsets import Unit, convert_offset, length_in

SAMPLES = {
    "ascii": "hello",
    "emoji": "a😀b",
    "cjk": "中文字",
    "combining": "e\u0301x",  # e + COMBINING ACUTE ACCENT, then x
    "family": "👨‍👩‍👧",  # three emoji joined by ZERO WIDTH JOINERs
    "mixed": "x中😀e\u0301🇫🇷",
}


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        ("ascii", Unit.UTF8, 5),
        ("emoji", Unit.CODE_POINT, 3),
        ("emoji", Unit.UTF8, 6),
        ("emoji", Unit.UTF16, 4),
        ("cjk", Unit.UTF8, 9),
        ("cjk", Unit.UTF16, 3),
        ("combining", Unit.CODE_POINT, 3),
        ("combining", Unit.UTF8, 4),
        ("family", Unit.CODE_POINT, 5),
        ("family", Unit.UTF16, 8),
        ("family", Unit.UTF8, 18),
    ],
)
def test_length_in_each_unit(name: str, unit: Unit, expected: int) -> None:
    assert length_in(SAMPLES[name], unit) == expected


@pytest.mark.parametrize(
    ("name", "offset", "source", "target", "expected"),
    [
        ("emoji", 2, Unit.CODE_POINT, Unit.UTF8, 5),
        ("emoji", 2, Unit.CODE_POINT, Unit.UTF16, 3),
        ("emoji", 5, Unit.UTF8, Unit.CODE_POINT, 2),
        ("emoji", 3, Unit.UTF16, Unit.UTF8, 5),
        ("emoji", 5, Unit.UTF8, Unit.UTF16, 3),
        ("cjk", 2, Unit.CODE_POINT, Unit.UTF8, 6),
        ("cjk", 6, Unit.UTF8, Unit.UTF16, 2),
        ("combining", 1, Unit.CODE_POINT, Unit.UTF8, 1),
        ("combining", 2, Unit.CODE_POINT, Unit.UTF8, 3),
        ("combining", 3, Unit.UTF8, Unit.CODE_POINT, 2),
        ("mixed", 7, Unit.CODE_POINT, Unit.UTF16, 10),
        ("mixed", 0, Unit.UTF16, Unit.UTF8, 0),
        ("ascii", 5, Unit.UTF16, Unit.UTF8, 5),
    ],
)
def test_convert_offset_between_units(
    name: str, offset: int, source: Unit, target: Unit, expected: int
) -> None:
    assert convert_offset(SAMPLES[name], offset, source, target) == expected


@pytest.mark.parametrize(
    ("name", "offset", "source"),
    [
        ("emoji", 2, Unit.UTF8),  # inside the 4-byte sequence of 😀
        ("emoji", 2, Unit.UTF16),  # between the two halves of the surrogate pair
        ("cjk", 1, Unit.UTF8),
        ("combining", 2, Unit.UTF8),  # inside the 2-byte combining accent
    ],
)
def test_convert_offset_rejects_split_character(name: str, offset: int, source: Unit) -> None:
    with pytest.raises(ValueError, match="inside a character"):
        convert_offset(SAMPLES[name], offset, source, Unit.CODE_POINT)


@pytest.mark.parametrize("offset", [-1, 4])
def test_convert_offset_rejects_out_of_range(offset: int) -> None:
    with pytest.raises(ValueError, match="outside the text"):
        convert_offset("a😀b", offset, Unit.CODE_POINT, Unit.UTF8)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_convert_offset_round_trips_every_boundary(name: str) -> None:
    text = SAMPLES[name]
    for index in range(len(text) + 1):
        utf16 = convert_offset(text, index, Unit.CODE_POINT, Unit.UTF16)
        utf8 = convert_offset(text, utf16, Unit.UTF16, Unit.UTF8)
        assert convert_offset(text, utf8, Unit.UTF8, Unit.CODE_POINT) == index


def test_convert_offset_matches_pycrdt_text() -> None:
    from pycrdt import Doc, Text

    text = Doc().get("content", type=Text)
    text += "中😀e\u0301"
    offset = convert_offset("中😀e\u0301", 2, Unit.CODE_POINT, Unit.UTF8)
    text.insert(offset, "|")
    assert str(text) == "中😀|e\u0301"
