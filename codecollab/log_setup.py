"""Logging set-up of the editor process, and filters that keep third-party noise readable.

- ``RepeatedMessageFilter`` lets each distinct message through once per interval and reports
  how many copies it suppressed. python-engineio logs "message handler error" with a traceback
  for every message a client sends after its Socket.IO session was closed, which a
  disconnected flooder turns into thousands of tracebacks per second.
- gevent's WSGI server writes its errors to ``WSGI_LOGGER`` instead of bare stderr lines, and
  gevent-websocket's per-request access lines are left out below WARNING.
"""

from __future__ import annotations

import logging
import time

WSGI_LOGGER = "codecollab.wsgi"


class RepeatedMessageFilter(logging.Filter):
    """Pass each message template at most once per ``interval`` seconds."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last_passed: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = f"{record.name}:{record.msg}"
        now = time.monotonic()
        last = self._last_passed.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last_passed[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} more in the last {self.interval:.0f} s)"
        return True


def configure_logging(level: str) -> None:
    """Send every log record to stderr at ``level`` and install the filters above."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("engineio.server", "socketio.server"):
        logging.getLogger(name).addFilter(RepeatedMessageFilter())
    logging.getLogger("geventwebsocket.handler").setLevel(logging.WARNING)
