import pytest

from codecollab.session_ids import is_valid_client_id, new_session_id, session_id_problem


@pytest.mark.parametrize(
    "value", ["default", "abcdefghijklmnop", "A-_0" * 4, "x" * 64, new_session_id()]
)
def test_session_id_valid(value: str) -> None:
    assert session_id_problem(value) is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("short", "has 5 characters"),
        ("x" * 65, "has 65 characters"),
        ("abcdefghijklmno!", "only letters"),
        ("abcdefghijklmnop/", "only letters"),
        ("äbcdefghijklmnop", "only letters"),
        ("Default", "has 7 characters"),
        (None, "must be a string"),
    ],
)
def test_session_id_invalid(value: object, reason: str) -> None:
    problem = session_id_problem(value)
    assert problem is not None
    assert reason in problem


def test_new_session_id_is_unique_and_long() -> None:
    ids = {new_session_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 22 for i in ids)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3f2c9a1e-1b2c-4d5e-8f90-123456789abc", True),
        ("a", True),
        ("", False),
        ("x" * 65, False),
        ("tab id", False),
        (123, False),
    ],
)
def test_client_id_validation(value: object, expected: bool) -> None:
    assert is_valid_client_id(value) is expected
