"""Report wording."""

from __future__ import annotations

import pytest

from scheduler.reports import count_tasks


@pytest.mark.parametrize(("count", "text"), [(0, "0 tasks"), (1, "1 task"), (2, "2 tasks")])
def test_count_tasks_plural(count: int, text: str) -> None:
    assert count_tasks(count) == text
