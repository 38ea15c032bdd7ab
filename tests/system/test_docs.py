"""The README's configuration table against .env.example, so neither drifts from the other."""

from __future__ import annotations

import re

import pytest

from envconfig import repo_root

ROOT = repo_root()


def _example_defaults() -> dict[str, str]:
    """Variables of .env.example with their default, commented-out ones included."""
    text = (ROOT / ".env.example").read_text()
    pairs = re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE)
    return {name: value.strip() for name, value in pairs}


def _readme_table() -> dict[str, str]:
    """Rows of the README's configuration table: variable name to its default column."""
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*`([A-Z][A-Z0-9_]*)`\s*\|([^|]*)\|", line)
        if match:
            rows[match[1]] = match[2].strip()
    return rows


def test_readme_lists_every_example_variable() -> None:
    assert sorted(set(_example_defaults()) - set(_readme_table())) == []


def test_readme_lists_no_unknown_variable() -> None:
    assert sorted(set(_readme_table()) - set(_example_defaults())) == []


@pytest.mark.parametrize("name", sorted(_example_defaults()))
def test_readme_default_matches_example(name: str) -> None:
    expected = _example_defaults()[name]
    shown = _readme_table().get(name, "").strip("`")
    assert shown == (expected or "(empty)")
