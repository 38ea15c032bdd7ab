"""Log filters that keep Celery's per-task lines for frequent housekeeping tasks out of INFO.

Celery beat queues the dispatcher of scheduled tasks every ``SCHEDULER_DISPATCH_INTERVAL``
seconds (2 by default). At INFO, beat logs "Sending due task" and the worker logs "received"
and "succeeded" for every run: three lines every two seconds that bury the lines an operator
needs. These filters demote exactly those three messages to DEBUG for the named tasks, so
``--loglevel=debug`` still shows them. Failures, retries and the dispatcher's own
"dispatched N scheduled tasks" line are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

# The message templates of Celery 5.7 that name one task run (celery/app/trace.py,
# celery/worker/strategy.py and celery/beat.py).
_TASK_MESSAGES = (
    "Task %(name)s[%(id)s] received",
    "Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
)
_BEAT_MESSAGE = "Scheduler: Sending due task %s (%s)"
_LOGGERS = ("celery.app.trace", "celery.worker.strategy", "celery.beat")


class HousekeepingFilter(logging.Filter):
    """Demote Celery's per-run INFO lines of the given task names to DEBUG."""

    def __init__(self, task_names: Iterable[str]) -> None:
        super().__init__()
        self.task_names = frozenset(task_names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._is_housekeeping(record):
            return True
        record.levelno = logging.DEBUG
        record.levelname = logging.getLevelName(logging.DEBUG)
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _is_housekeeping(self, record: logging.LogRecord) -> bool:
        args = record.args
        if record.msg in _TASK_MESSAGES and isinstance(args, dict):
            return args.get("name") in self.task_names
        if record.msg == _BEAT_MESSAGE and isinstance(args, tuple) and len(args) == 2:
            return args[1] in self.task_names
        return False


def quiet_housekeeping(task_names: Iterable[str]) -> HousekeepingFilter:
    """Install one :class:`HousekeepingFilter` on Celery's task, consumer and beat loggers."""
    log_filter = HousekeepingFilter(task_names)
    for name in _LOGGERS:
        logging.getLogger(name).addFilter(log_filter)
    return log_filter
