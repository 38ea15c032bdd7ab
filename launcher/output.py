"""Line-by-line output of the supervised processes, each line prefixed with its process name."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

_COLORS = ["36", "33", "32", "35", "34", "91", "92", "93", "94", "95", "96"]
_RESET = "\033[0m"


class PrefixedOutput:
    """Thread-safe writer of ``name | line`` records, coloured when writing to a terminal."""

    def __init__(self, names: list[str], stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        # Shared by the main thread and the threads that relay each process's output.
        self._lock = threading.RLock()
        self._width = max([len(name) for name in names] + [len("launcher")])
        use_color = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._colors = {
            name: (_COLORS[index % len(_COLORS)] if use_color else "")
            for index, name in enumerate(names)
        }
        self._colors["launcher"] = "1" if use_color else ""

    def line(self, name: str, text: str) -> None:
        """Write one line of output from the process ``name``."""
        color = self._colors.get(name, "")
        prefix = f"{name:<{self._width}} | "
        if color:
            prefix = f"\033[{color}m{prefix}{_RESET}"
        with self._lock:
            try:
                self._stream.write(prefix + text + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass  # the reader went away or the stream is closed: drop the line

    def note(self, text: str) -> None:
        """Write a message of the launcher itself."""
        self.line("launcher", text)
