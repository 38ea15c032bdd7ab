"""Publishing recorded tasks to the broker within a bounded time.

Celery's ``apply_async`` can block for a long time when the broker is down (its connection
retry loop), so the publisher checks the connection with one bounded attempt first and sends
with publish retries off. Any broker error becomes :class:`BrokerUnavailable`, which the
producer turns into a 503.
"""

from __future__ import annotations

import logging
import socket
import threading

from celery import Celery
from kombu.exceptions import KombuError, OperationalError

from scheduler.celery_app import TASK_BY_KIND, connect_once, declare_topology
from scheduler.config import Settings
from scheduler.taskstore import TaskRecord

logger = logging.getLogger(__name__)

_BROKER_ERRORS = (OperationalError, KombuError, OSError, socket.timeout, TimeoutError)


class BrokerUnavailable(Exception):
    """The broker could not be reached, or did not confirm the message in time."""


class Publisher:
    """Sends task messages through the Celery app's connection pool."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._declared = False
        self._lock = threading.Lock()

    def _declare_once(self) -> None:
        if self._declared:
            return
        with self._lock:
            if not self._declared:
                declare_topology(self.app, self.settings)
                self._declared = True

    def publish(self, record: TaskRecord) -> None:
        """Publish ``record`` as a message whose Celery task id is the record's id.

        :raises BrokerUnavailable: when the broker does not accept the message within about
            ``publish_timeout`` seconds.
        """
        name = TASK_BY_KIND[record.kind]
        timeout = self.settings.publish_timeout
        try:
            self._declare_once()
            with self.app.pool.acquire(block=True, timeout=timeout) as connection:
                try:
                    connect_once(connection, timeout)
                    self.app.send_task(
                        name,
                        kwargs=record.params,
                        task_id=record.id,
                        connection=connection,
                        retry=False,
                    )
                except BaseException:
                    # Drop the socket so the pool reconnects next time instead of reusing it.
                    connection.collect()
                    raise
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
