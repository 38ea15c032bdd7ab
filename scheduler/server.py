"""The HTTP server behind ``python app.py``: Werkzeug's threaded server with TCP_NODELAY.

Werkzeug writes the status line, the headers and the body of a response in separate
``send`` calls. With Nagle's algorithm on, the later small writes wait for the client's
delayed ACK (up to 40 ms on Linux), which made every keep-alive request take tens of
milliseconds. Turning Nagle off on each accepted socket removes that wait.
"""

from __future__ import annotations

import logging
import socket

from flask import Flask
from werkzeug.serving import WSGIRequestHandler

from scheduler.config import Settings

logger = logging.getLogger(__name__)


class NoDelayRequestHandler(WSGIRequestHandler):
    """Request handler that sends each write at once (TCP_NODELAY)."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def serve(app: Flask, settings: Settings) -> None:
    """Serve ``app`` on the configured host and port until interrupted.

    Each request gets its own thread, which ``/tasks/stream`` needs because a stream holds
    its thread for as long as the client stays connected.
    """
    logger.info("producer listening on http://%s:%d", settings.host, settings.port)
    app.run(
        host=settings.host,
        port=settings.port,
        threaded=True,
        request_handler=NoDelayRequestHandler,
    )
