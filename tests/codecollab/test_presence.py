import pytest

from codecollab.presence import (
    DEFAULT_NAME,
    PALETTE,
    Participant,
    Presence,
    clean_color,
    clean_display_name,
    color_for,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Ada", "Ada"),
        ("  Ada   Lovelace ", "Ada Lovelace"),
        ("<script>alert(1)</script>", "<script>alert(1)</script>"),
        ("tab\there\nnewline", "tab here newline"),
        ("evil\u202eesrever", "evilesrever"),
        ("zero\u200bwidth", "zerowidth"),
        ("\x00\x07", DEFAULT_NAME),
        ("", DEFAULT_NAME),
        (None, DEFAULT_NAME),
        (42, DEFAULT_NAME),
        ("x" * 100, "x" * 40),
        ("👨‍👩‍👧", "👨‍👩‍👧"),
        ("e\u0301", "\u00e9"),
    ],
)
def test_clean_display_name(raw: object, expected: str) -> None:
    assert clean_display_name(raw) == expected


def test_color_for_is_stable_palette_entry() -> None:
    assert color_for("tab-1") == color_for("tab-1")
    assert color_for("tab-1") in PALETTE


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("#30BCED", "#30bced"), ("red", None), ("#12345", None), (None, None), ("#123456;x", None)],
)
def test_clean_color(raw: object, expected: str | None) -> None:
    assert clean_color(raw) == expected


def test_users_deduplicates_reloaded_tab() -> None:
    presence = Presence()
    presence.add(Participant("sid-1", "tab-a", "Ada", "#000001"))
    presence.add(Participant("sid-2", "tab-b", "Bob", "#000002"))
    presence.add(Participant("sid-3", "tab-a", "Ada2", "#000003"))
    assert presence.snapshot() == {
        "count": 2,
        "users": [
            {"clientId": "tab-a", "name": "Ada2", "color": "#000003"},
            {"clientId": "tab-b", "name": "Bob", "color": "#000002"},
        ],
    }


def test_remove_keeps_other_connection_of_same_tab() -> None:
    presence = Presence()
    presence.add(Participant("sid-1", "tab-a", "Ada", "#000001"))
    presence.add(Participant("sid-2", "tab-a", "Ada", "#000001"))
    presence.remove("sid-1")
    assert presence.snapshot()["count"] == 1


def test_update_user_reports_change() -> None:
    presence = Presence()
    presence.add(Participant("sid-1", "tab-a", "Ada", "#000001"))
    assert presence.update_user("sid-1", "Grace", None)
    assert not presence.update_user("sid-1", "Grace", None)
