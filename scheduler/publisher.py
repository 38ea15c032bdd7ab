"""Publishing recorded tasks to the broker within a bounded time.

Celery's ``apply_async`` can block for a long time when the broker is down (its connection
retry loop), so the publisher connects with one bounded attempt and sends with publish
retries off. Any broker error becomes :class:`BrokerUnavailable`, which the producer turns
into a 503.

The publisher keeps its own small pool of broker connections, each with its kombu producer
and its queues already declared, and builds messages with Celery's own
``create_task_message`` and ``send_task_message``. It does not go through
``Celery.send_task``, which touches the result backend on every call, and that backend is
thread-local in Celery 5: each new server thread (or greenlet) would build a SQLAlchemy
backend and check its tables before its first publish.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu import Connection, Producer
from kombu.exceptions import KombuError, OperationalError

from scheduler.celery_app import TASK_BY_KIND, build_queues, connect_once, declare_topology
from scheduler.config import Settings
from scheduler.taskstore import TaskRecord

logger = logging.getLogger(__name__)

_BROKER_ERRORS = (OperationalError, KombuError, OSError, socket.timeout, TimeoutError)

# Celery 5's own limit (``AMQP.kwargsrepr_maxsize``) on the kwargs text shown by monitors.
KWARGS_REPR_MAX = 1024


class BrokerUnavailable(Exception):
    """The broker could not be reached, or did not confirm the message in time."""


@dataclass
class _Link:
    """One pooled broker connection and the producer bound to its default channel."""

    connection: Connection
    # None until the first publish, and again after an error dropped the connection.
    producer: Producer | None = None


def kwargs_repr(params: dict[str, Any]) -> str:
    """Return the ``kwargsrepr`` header of a task: ``repr(params)`` cut to 1,024 characters.

    Celery's own ``saferepr`` guards against recursive and unprintable objects, which task
    parameters (decoded JSON) never contain.
    """
    text = repr(params)
    return text if len(text) <= KWARGS_REPR_MAX else text[: KWARGS_REPR_MAX - 3] + "..."


class Publisher:
    """Publisher of task messages over at most ``max_connections`` pooled broker connections.

    :param app: the Celery app whose broker URL, transport options and routes are used.
    :param settings: supplies ``publish_timeout``, the bound on each connect, send and
        publisher confirm, and the queue names to declare.
    :param max_connections: broker connections kept open by this process; a publish that
        finds them all busy waits for one up to ``publish_timeout`` seconds.
    """

    def __init__(self, app: Celery, settings: Settings, *, max_connections: int = 10) -> None:
        self.app = app
        self.settings = settings
        self.max_connections = max_connections
        # Keyword arguments of send_task_message for each task name, from task_routes.
        self._routes = {name: app.amqp.router.route({}, name) for name in TASK_BY_KIND.values()}
        self._declared = False
        self._lock = threading.Lock()
        self._reset_pool()

    def _reset_pool(self) -> None:
        self._pid = os.getpid()
        self._idle: list[_Link] = []
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def _declare_once(self) -> None:
        if self._declared:
            return
        with self._lock:
            if not self._declared:
                declare_topology(self.app, self.settings)
                self._declared = True

    def _checkout(self, timeout: float) -> _Link:
        if self._pid != os.getpid():
            # A forked child must not share its parent's sockets.
            self._reset_pool()
        if not self._slots.acquire(timeout=timeout):
            raise TimeoutError(f"all {self.max_connections} broker connections stayed busy")
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _Link(self.app.connection_for_write())

    def _checkin(self, link: _Link) -> None:
        with self._lock:
            self._idle.append(link)
        self._slots.release()

    def _producer(self, link: _Link, timeout: float) -> Producer:
        """Return the link's producer, connecting and declaring the work queues first."""
        if link.producer is None or not link.connection.connected:
            connect_once(link.connection, timeout)
            channel = link.connection.default_channel
            for queue in build_queues(self.settings):
                # Declaring is idempotent; it recreates a queue deleted while we were away.
                queue.bind(channel).declare()
            link.producer = self.app.amqp.Producer(channel, auto_declare=False)
        return link.producer

    def publish(self, record: TaskRecord) -> None:
        """Publish ``record`` as a message whose Celery task id is the record's id.

        :raises BrokerUnavailable: when the broker does not accept the message within about
            ``publish_timeout`` seconds.
        """
        name = TASK_BY_KIND[record.kind]
        timeout = self.settings.publish_timeout
        amqp = self.app.amqp
        try:
            self._declare_once()
            link = self._checkout(timeout)
            try:
                producer = self._producer(link, timeout)
                message = amqp.create_task_message(
                    record.id,
                    name,
                    (),
                    record.params,
                    argsrepr="()",
                    kwargsrepr=kwargs_repr(record.params),
                    # None leaves storing the result to the worker's task_ignore_result.
                    ignore_result=None,
                )
                amqp.send_task_message(
                    producer, name, message, retry=False, declare=[], **self._routes[name]
                )
            except BaseException:
                # Drop the socket so the next publish on this link reconnects.
                link.connection.collect()
                link.producer = None
                raise
            finally:
                self._checkin(link)
        except _BROKER_ERRORS as exc:
            logger.warning("publish of task %s (%s) failed: %s", record.id, name, exc)
            raise BrokerUnavailable(f"the message broker is unreachable: {exc}") from exc
        logger.info("published task %s (%s)", record.id, name)

    def ping(self) -> str | None:
        """Open a connection to the broker once.

        :return: ``None`` when the broker is reachable, otherwise the error text.
        """
        timeout = self.settings.publish_timeout
        try:
            with self.app.connection_for_write() as connection:
                connect_once(connection, timeout)
        except _BROKER_ERRORS as exc:
            return str(exc)
        return None
