"""The housekeeping filter: routine dispatcher lines leave INFO, everything else stays."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from celery.app import trace

from scheduler.logfilters import HousekeepingFilter

QUIET = "scheduler.dispatch_due"
LOUD = "scheduler.process_video"
TASK_ARGS = {"id": "1f", "runtime": 0.01, "return_value": "0", "args": "()", "kwargs": "{}"}


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, _Capture]]:
    """A logger at INFO with the filter installed and a handler that keeps every record."""
    logger = logging.getLogger("tests.logfilters.celery")
    handler = _Capture()
    log_filter = HousekeepingFilter([QUIET])
    logger.addHandler(handler)
    logger.addFilter(log_filter)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)
    logger.removeFilter(log_filter)


@pytest.mark.parametrize(
    ("message", "args", "kept"),
    [
        (trace.LOG_RECEIVED, {**TASK_ARGS, "name": QUIET}, False),
        (trace.LOG_SUCCESS, {**TASK_ARGS, "name": QUIET}, False),
        ("Scheduler: Sending due task %s (%s)", ("dispatch-due-tasks", QUIET), False),
        (trace.LOG_RECEIVED, {**TASK_ARGS, "name": LOUD}, True),
        (trace.LOG_SUCCESS, {**TASK_ARGS, "name": LOUD}, True),
        ("Scheduler: Sending due task %s (%s)", ("cleanup-old-outputs", LOUD), True),
        ("dispatched %d scheduled tasks", (3,), True),
    ],
)
def test_filter_info_lines(
    captured: tuple[logging.Logger, _Capture], message: str, args: object, kept: bool
) -> None:
    logger, handler = captured
    if isinstance(args, tuple):
        logger.info(message, *args)
    else:
        logger.info(message, args)
    assert (len(handler.records) == 1) is kept


def test_filter_keeps_failures(captured: tuple[logging.Logger, _Capture]) -> None:
    logger, handler = captured
    logger.error(
        trace.LOG_FAILURE, {**TASK_ARGS, "name": QUIET, "description": "raised", "exc": "x"}
    )
    assert len(handler.records) == 1


def test_filter_demotes_at_debug(captured: tuple[logging.Logger, _Capture]) -> None:
    logger, handler = captured
    logger.setLevel(logging.DEBUG)
    logger.info(trace.LOG_SUCCESS, {**TASK_ARGS, "name": QUIET})
    assert [record.levelname for record in handler.records] == ["DEBUG"]


def test_celery_templates_unchanged() -> None:
    """The filter matches Celery's templates, so an upgrade that changes them fails here."""
    from scheduler import logfilters

    assert (trace.LOG_RECEIVED, trace.LOG_SUCCESS) == logfilters._TASK_MESSAGES
