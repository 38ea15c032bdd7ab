"""Matching request paths against a list of exemptions."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["PathMatcher"]


class PathMatcher:
    """Exact paths, and prefixes written with a trailing ``/``.

    ``"/healthz"`` matches only ``/healthz``; ``"/static/"`` matches ``/static/`` and every path
    below it.

    :raises ValueError: for an entry that does not start with ``/``.
    """

    def __init__(self, paths: Iterable[str]) -> None:
        exact = set()
        prefixes = []
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"exempt path {path!r} is invalid; start it with '/'")
            if path.endswith("/") and path != "/":
                prefixes.append(path)
            else:
                exact.add(path)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)

    def matches(self, path: str) -> bool:
        """Return whether ``path`` is exempt."""
        return path in self._exact or (bool(self._prefixes) and path.startswith(self._prefixes))
