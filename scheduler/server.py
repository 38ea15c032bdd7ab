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
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
        return self.app_factory()


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
