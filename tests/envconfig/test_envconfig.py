import pytest

from envconfig import ConfigError, env_bool, env_checked, env_float, env_int, env_list, env_str


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("TRUE", True), ("yes", True), ("off", False), ("0", False), ("", True)],
)
def test_env_bool_parses_common_spellings(raw: str, expected: bool) -> None:
    assert env_bool("FLAG", True, environ={"FLAG": raw}) is expected


def test_env_bool_rejects_unknown_word() -> None:
    with pytest.raises(ConfigError, match="FLAG='maybe'"):
        env_bool("FLAG", False, environ={"FLAG": "maybe"})


def test_env_int_uses_default_when_unset() -> None:
    assert env_int("PORT", 3000, environ={}) == 3000


def test_env_int_rejects_text() -> None:
    with pytest.raises(ConfigError, match="PORT='abc' is not an integer"):
        env_int("PORT", 3000, environ={"PORT": "abc"})


def test_env_int_enforces_range() -> None:
    with pytest.raises(ConfigError, match="below the minimum 1"):
        env_int("PORT", 3000, minimum=1, environ={"PORT": "0"})


def test_env_float_parses_decimal() -> None:
    assert env_float("TIMEOUT", 1.0, environ={"TIMEOUT": "0.25"}) == 0.25


def test_env_list_drops_blanks() -> None:
    assert env_list("HOSTS", [], environ={"HOSTS": "a, b,,c "}) == ["a", "b", "c"]


def test_env_str_strips_spaces() -> None:
    assert env_str("NAME", "x", environ={"NAME": "  y "}) == "y"


def test_env_checked_names_variable() -> None:
    def parse_even(text: str) -> int:
        if int(text) % 2:
            raise ValueError(f"{text} is odd")
        return int(text)

    with pytest.raises(ConfigError, match=r"^COUNT='3' is invalid: 3 is odd$"):
        env_checked("COUNT", "2", parse_even, {"COUNT": "3"})


@pytest.mark.parametrize(("environ", "expected"), [({}, "2"), ({"COUNT": " 4 "}, "4")])
def test_env_checked_returns_text(environ: dict[str, str], expected: str) -> None:
    assert env_checked("COUNT", "2", int, environ) == expected
