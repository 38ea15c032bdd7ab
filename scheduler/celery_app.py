"""The Celery application: broker, queues, reliability settings and the beat schedule.

Task names are fixed strings (``scheduler.process_video`` ...), so the producer can publish
with ``send_task`` without importing the task code, and every worker agrees on the names.

Reliability settings on RabbitMQ:

- ``task_acks_late`` with ``task_reject_on_worker_lost``: a message is acknowledged only after
  its task ends, so a worker that dies mid-task leaves it to be delivered again.
- ``worker_prefetch_multiplier = 1``: a worker reserves one message per pool slot, so a long
  video never holds back messages that another worker could take.
- Publisher confirms (``confirm_publish``) and durable queues with persistent messages: a
  202 response means RabbitMQ has stored the message.
- ``task_acks_on_failure = False``: a task that fails for good is rejected without requeue,
  so the broker moves it to the dead-letter queue, where it can be inspected. RabbitMQ and the
  embedded SQLite broker both read the ``x-dead-letter-*`` queue arguments.
- Soft and hard time limits on every task, below RabbitMQ's ``consumer_timeout``
  (checked by :mod:`scheduler.config`).
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import timedelta
from typing import Any

from celery import Celery
from kombu import Connection, Exchange, Queue
from sqlalchemy import event
from sqlalchemy.engine import Engine

from scheduler.config import Settings
from scheduler.result_backend import backend_url
from scheduler.sqlite_broker import register as register_sqlite_broker

logger = logging.getLogger(__name__)

PROCESS_VIDEO = "scheduler.process_video"
GENERATE_REPORT = "scheduler.generate_report"
SEND_EMAILS = "scheduler.send_emails"
DISPATCH_DUE = "scheduler.dispatch_due"
CLEANUP_OUTPUTS = "scheduler.cleanup_outputs"

# The kind shown by the API for each task name, and back.
KIND_BY_TASK = {
    PROCESS_VIDEO: "process-video",
    GENERATE_REPORT: "generate-report",
    SEND_EMAILS: "send-emails",
}
TASK_BY_KIND = {kind: name for name, kind in KIND_BY_TASK.items()}


def dead_letter_exchange(settings: Settings) -> Exchange:
    """Return the exchange that receives rejected messages of the work queues."""
    return Exchange(f"{settings.dead_letter_queue}.exchange", type="direct", durable=True)


def build_queues(settings: Settings) -> list[Queue]:
    """Return the durable work queues, which a worker consumes unless ``-Q`` names others."""
    dlx = dead_letter_exchange(settings)
    arguments = {
        "x-dead-letter-exchange": dlx.name,
        "x-dead-letter-routing-key": settings.dead_letter_queue,
    }
    return [
        Queue(
            name,
            Exchange(name, type="direct", durable=True),
            routing_key=name,
            durable=True,
            queue_arguments=arguments,
        )
        for name in (settings.video_queue, settings.io_queue)
    ]


def dead_letter_queue(settings: Settings) -> Queue:
    """Return the queue that keeps rejected messages for inspection.

    It is not in ``task_queues``, so no worker consumes it and runs its tasks again.
    """
    dlx = dead_letter_exchange(settings)
    return Queue(
        settings.dead_letter_queue, dlx, routing_key=settings.dead_letter_queue, durable=True
    )


@event.listens_for(Engine, "connect")
def _tune_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
    """Put every SQLite database opened through SQLAlchemy in WAL mode with NORMAL sync.

    This covers the result backend and the embedded broker. SQLite's default (rollback
    journal, FULL sync) makes each commit wait for an fsync, which capped a worker at a few
    dozen tasks per second. WAL with NORMAL sync survives a crash of the process; the last
    commits can be lost only if the whole machine loses power.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def make_celery(settings: Settings, *, producer: bool = False) -> Celery:
    """Build the Celery app for ``settings``.

    :param producer: bound the socket reads and writes of the HTTP producer, so a POST whose
        broker stops responding fails after ``publish_timeout`` seconds instead of hanging.
        Workers keep blocking sockets, which their event loop expects.
    """
    app = Celery("scheduler", set_as_current=False)
    transport_options: dict[str, object]
    if settings.embedded_broker:
        register_sqlite_broker()
        transport_options = {}
        if producer:
            # A POST waits at most this long for SQLite's write lock before returning 503.
            transport_options["busy_timeout"] = settings.publish_timeout
    else:
        transport_options = {"confirm_publish": True}
        if producer:
            transport_options["read_timeout"] = settings.publish_timeout
            transport_options["write_timeout"] = settings.publish_timeout

    # Celery 5.7 prefers CELERY_RESULT_BACKEND from the environment over ``result_backend``,
    # so the rewritten URL goes into ``backend_cls``, which Celery prefers over both.
    app.backend_cls = backend_url(settings.result_backend)
    video_queue, io_queue = settings.video_queue, settings.io_queue
    app.conf.update(
        broker_url=settings.broker_url,
        result_backend=backend_url(settings.result_backend),
        broker_transport_options=transport_options,
        broker_connection_timeout=settings.publish_timeout,
        broker_connection_retry_on_startup=True,
        broker_heartbeat=30,
        task_queues=build_queues(settings),
        task_default_queue=io_queue,
        task_default_exchange=io_queue,
        task_default_routing_key=io_queue,
        task_routes={
            PROCESS_VIDEO: {"queue": video_queue, "routing_key": video_queue},
            GENERATE_REPORT: {"queue": io_queue, "routing_key": io_queue},
            SEND_EMAILS: {"queue": io_queue, "routing_key": io_queue},
            DISPATCH_DUE: {"queue": io_queue, "routing_key": io_queue},
            CLEANUP_OUTPUTS: {"queue": io_queue, "routing_key": io_queue},
        },
        task_create_missing_queues=False,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure=False,
        task_acks_on_timeout=True,
        # The task store records the start; a STARTED write to the result backend would
        # cost a second database commit per task.
        task_track_started=False,
        # The task store keeps every task's state and result, and GET /tasks/<id> reads it
        # there. CELERY_STORE_RESULTS, on by default, adds a copy in the result backend for
        # AsyncResult and Flower.
        task_ignore_result=not settings.store_results,
        task_publish_retry=False,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        # Celery's default: workers send task events only after a monitor asks for them.
        # Flower does so when it starts, so it still shows every task.
        worker_send_task_events=False,
        task_send_sent_event=False,
        result_expires=timedelta(days=settings.result_expires_days),
        result_extended=True,
        worker_enable_remote_control=True,
        worker_hijack_root_logger=True,
        beat_schedule_filename=str(settings.state_dir / "celerybeat-schedule"),
        beat_schedule={
            "dispatch-due-tasks": {
                "task": DISPATCH_DUE,
                "schedule": settings.dispatch_interval,
                "options": {"expires": max(settings.dispatch_interval * 5, 10)},
            },
            "cleanup-old-outputs": {
                "task": CLEANUP_OUTPUTS,
                "schedule": settings.cleanup_interval,
                "options": {"expires": settings.cleanup_interval},
            },
        },
    )
    return app


def connect_once(connection: Connection, timeout: float) -> None:
    """Connect with one quick retry and give up after about ``timeout`` seconds.

    :raises kombu.exceptions.OperationalError: when the broker is unreachable.
    """
    connection.ensure_connection(
        max_retries=1, interval_start=0.2, interval_step=0.2, interval_max=0.5, timeout=timeout
    )


def declare_topology(app: Celery, settings: Settings) -> None:
    """Declare the exchanges and queues, the dead-letter queue included.

    Workers declare only the queues they consume, so without this the dead-letter exchange
    might not exist when the broker first rejects a message, and the message would be dropped.
    """
    with app.connection_for_write() as connection:
        connect_once(connection, settings.publish_timeout)
        channel = connection.default_channel
        for queue in [*build_queues(settings), dead_letter_queue(settings)]:
            queue.bind(channel).declare()
