"""The HTTP server behind ``python app.py``: gunicorn with threaded workers.

Gunicorn's master process binds the port once and forks ``SCHEDULER_PROCESSES`` workers,
which all accept connections from that one socket and are restarted when one dies. Each
worker builds its own app after the fork (its own task-store connections, broker
connections and event poller) and serves requests from a pool of ``SCHEDULER_THREADS``
threads, so one process uses one core at most and more processes are needed to use more.
Keep-alive connections wait in the worker's event loop without holding a thread.

Threads rather than gevent: SQLite calls, and its busy-wait when a worker holds the write
lock, block in C, which would stall every request of a gevent process, while here they
stall only their own thread. Gunicorn sets TCP_NODELAY on its sockets, so a response
written in several ``send`` calls is not held back by Nagle's algorithm.

With more than one process, rate-limit buckets must live in Redis
(``RATELIMIT_STORAGE_URL``), which :mod:`scheduler.config` enforces at start-up.

A request that gunicorn rejects before Flask sees it (a request line over 4,094 bytes, too many
or too large headers, a malformed request) gets a JSON ``{"error": ...}`` body like every other
error, instead of gunicorn's HTML page.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable

import gunicorn.util
from flask import Flask
from gunicorn.app.base import BaseApplication

from scheduler.config import Settings

logger = logging.getLogger(__name__)

# Seconds a stopping worker lets running requests finish before it is killed. An open
# /tasks/stream never finishes, so stopping takes this long while a jobs page is open.
GRACEFUL_TIMEOUT = 5
# Seconds an idle keep-alive connection stays open.
KEEPALIVE = 5


class ProducerServer(BaseApplication):
    """Gunicorn application that builds the producer app in each worker after the fork.

    :param settings: bind address, number of processes and threads per process.
    :param app_factory: called once in each worker to build the Flask app.
    """

    def __init__(self, settings: Settings, app_factory: Callable[[], Flask]) -> None:
        self.settings = settings
        self.app_factory = app_factory
        super().__init__()

    def load_config(self) -> None:
        settings = self.settings
        options = {
            "bind": f"{_bind_host(settings.host)}:{settings.port}",
            "workers": settings.processes,
            "worker_class": "gthread",
            "threads": settings.threads,
            "keepalive": KEEPALIVE,
            "graceful_timeout": GRACEFUL_TIMEOUT,
            "proc_name": "scheduler-producer",
            # The control socket's default path is per user, so two producers would collide.
            "control_socket_disable": True,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "info",
        }
        for name, value in options.items():
            self.cfg.set(name, value)

    def load(self) -> Flask:
        # NOTE: gunicorn 27 writes its parser's error pages through this module-level function,
        # which no setting replaces; tests/scheduler/test_server.py fails if that changes.
        gunicorn.util.write_error = write_json_error
        return self.app_factory()


def write_json_error(sock: socket.socket, status_int: int, reason: str, message: str) -> None:
    """Write gunicorn's error response to a request it rejected, with a JSON body.

    :param message: gunicorn's description of what was wrong, such as the length limit that the
        request line exceeded; empty for an internal error.
    """
    error = f"{reason}: {message}" if message else reason
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


def _bind_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def serve(settings: Settings, app_factory: Callable[[], Flask]) -> None:
    """Serve the app that ``app_factory`` builds until SIGTERM or SIGINT."""
    logger.info(
        "producer listening on http://%s:%d (processes: %d, threads each: %d)",
        _bind_host(settings.host),
        settings.port,
        settings.processes,
        settings.threads,
    )
    ProducerServer(settings, app_factory).run()
