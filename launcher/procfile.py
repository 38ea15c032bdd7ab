"""Parser for the Procfile format that honcho and foreman read: one ``name: command`` per line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+):\s*(?P<command>\S.*)$")


class ProcfileError(ValueError):
    """A Procfile line that is neither a comment, a blank line nor ``name: command``."""


@dataclass(frozen=True)
class ProcessSpec:
    """One Procfile entry."""

    name: str
    command: str  # a shell command line, run with /bin/sh -c


def parse_procfile(text: str, source: str = "Procfile") -> list[ProcessSpec]:
    """Parse Procfile text into its entries, in file order.

    Blank lines and lines starting with ``#`` are skipped.

    :raises ProcfileError: for a malformed line or a name used twice, naming the line number.
    """
    specs: list[ProcessSpec] = []
    seen: set[str] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        match = _LINE.match(line)
        if match is None:
            raise ProcfileError(f"{source}:{number}: expected 'name: command', found {line!r}")

        name = match["name"]
        if name in seen:
            raise ProcfileError(f"{source}:{number}: process name {name!r} is used twice")
        seen.add(name)
        specs.append(ProcessSpec(name=name, command=match["command"].strip()))
    return specs


def read_procfile(path: Path) -> list[ProcessSpec]:
    """Read and parse the Procfile at ``path``."""
    return parse_procfile(path.read_text(encoding="utf-8"), source=str(path))
