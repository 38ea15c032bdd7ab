"""Celery tasks run by the workers: video processing, reports, e-mail and housekeeping.

``scheduler/tasks.py`` re-exports :data:`celery_app` from here, so
``cd scheduler && celery -A tasks.celery_app worker`` finds these tasks.

Every task records its progress in the task store. A message can be delivered more than
once (acks are late, and a lost worker means redelivery), so each task starts with
:meth:`TaskStore.start`, which refuses tasks that are cancelled or already finished, and
writes its outputs into a scratch folder that the media store publishes only on success.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from celery import Task, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded

from scheduler import mailer, media, mediastore, reports
from scheduler.celery_app import (
    CLEANUP_OUTPUTS,
    DISPATCH_DUE,
    GENERATE_REPORT,
    PROCESS_VIDEO,
    SEND_EMAILS,
    declare_topology,
    make_celery,
)
from scheduler.config import EMBEDDED_BROKER_LIMITS, load_settings
from scheduler.logfilters import quiet_housekeeping
from scheduler.pgtaskstore import open_task_store
from scheduler.publisher import BrokerUnavailable, Publisher
from scheduler.taskstore import (
    CANCELLED,
    FAILED,
    RUNNING_STATES,
    SUCCEEDED,
    isoformat,
)

logger = logging.getLogger(__name__)

settings = load_settings()
celery_app = make_celery(settings)
store = open_task_store(settings)
media_store = mediastore.open_media_store(settings)
# Publishes scheduled tasks for dispatch_due; its connections are opened on first use, so a
# prefork child opens its own.
publisher = Publisher(celery_app, settings, max_connections=2)
# The dispatcher runs every few seconds; its routine Celery lines go to DEBUG.
quiet_housekeeping([DISPATCH_DUE])

# Seconds between two progress writes of one task; cancellation is noticed at the same pace.
PROGRESS_INTERVAL = 0.25
RETRY_BACKOFF_BASE = 2.0
RETRY_BACKOFF_MAX = 300.0


def backoff(retries: int) -> float:
    """Return the delay before retry number ``retries + 1``: exponential, with jitter.

    The delay is drawn from ``[d/2, d]`` where ``d = min(2 * 2**retries, 300)`` seconds, so
    workers that failed together do not retry together.
    """
    ceiling = min(RETRY_BACKOFF_BASE * 2**retries, RETRY_BACKOFF_MAX)
    return random.uniform(ceiling / 2, ceiling)


def file_entries(task_id: str, names: list[str]) -> list[dict[str, str]]:
    """Return the ``files`` list of a result: each name with its download URL."""
    return [{"name": name, "url": f"/files/{task_id}/{name}"} for name in names]


def begin(task: Task) -> bool:
    """Mark the task started; return ``False`` when this delivery must not run it."""
    task_id = task.request.id
    record = store.start(task_id, task.request.hostname or "")
    if record is None:
        current = store.get(task_id)
        if current is None:
            logger.warning("task %s is not in the task store; skipping it", task_id)
        elif current.cancel_requested and current.state in RUNNING_STATES:
            store.finish(task_id, CANCELLED, message="cancelled")
            logger.info("task %s was cancelled while its worker was lost", task_id)
        else:
            logger.info("task %s is %s; skipping this delivery", task_id, current.state)
        return False
    if record.deliveries > settings.max_deliveries:
        message = f"gave up after {record.deliveries - 1} deliveries that lost their worker"
        store.finish(task_id, FAILED, message="failed", error=message)
        logger.error("task %s %s", task_id, message)
        raise Reject(message, requeue=False)
    if task.request.delivery_info and task.request.delivery_info.get("redelivered"):
        logger.warning("task %s redelivered (delivery %d)", task_id, record.deliveries)
    return True


def _error_text(exc: BaseException, task: Task | None) -> str:
    if isinstance(exc, SoftTimeLimitExceeded) and task is not None:
        return f"timed out: the task ran past its soft time limit of {task.soft_time_limit} s"
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, media.NotAVideo) else f"{type(exc).__name__}: {text}"


@signals.task_failure.connect
def _record_failure(
    sender: Task | None = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    **_: Any,
) -> None:
    if task_id is None or exception is None:
        return
    error = _error_text(exception, sender)
    store.finish(task_id, FAILED, message="failed", error=error)
    logger.error("task %s failed: %s", task_id, error)


@signals.task_retry.connect
def _record_retry(request: Any = None, reason: Any = None, **_: Any) -> None:
    if request is not None:
        store.mark_retrying(request.id, "waiting to retry", str(reason))


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    logger.info("media store: %s", media_store.describe())
    if settings.embedded_broker:
        logger.warning(EMBEDDED_BROKER_LIMITS)
    try:
        declare_topology(celery_app, settings)
    except Exception as exc:  # noqa: BLE001 - the worker keeps running without the DLQ
        logger.error("could not declare the dead-letter queue: %s", exc)


@celery_app.task(
    name=PROCESS_VIDEO,
    bind=True,
    soft_time_limit=settings.video_soft_time_limit,
    time_limit=settings.video_time_limit,
)
def process_video(self: Task, upload: str, height: int, thumbnails: int) -> dict[str, Any]:
    """Transcode an uploaded video to H.264/AAC MP4 and extract JPEG thumbnails."""
    task_id = self.request.id
    if not begin(self):
        return {"skipped": True}
    with media_store.open_upload(upload, task_id) as source:
        return _transcode_upload(self, source, upload, height, thumbnails)


def _transcode_upload(
    task: Task, source: Path, upload: str, height: int, thumbnails: int
) -> dict[str, Any]:
    task_id = task.request.id
    info = media.probe(source)
    logger.info(
        "task %s: transcoding %s (%dx%d, %.1f s) to %dp",
        task_id,
        upload,
        info.width,
        info.height,
        info.duration,
        height,
    )
    scratch = media_store.scratch_dir(task_id)
    last_write = 0.0

    def on_progress(done: int, expected: int) -> bool:
        nonlocal last_write
        now = time.monotonic()
        if now - last_write < PROGRESS_INTERVAL:
            return True
        last_write = now
        percent = min(99.0, 100.0 * done / expected)
        return store.progress(task_id, percent, f"transcoded {done} of about {expected} frames")

    try:
        output = media.transcode(
            source,
            scratch,
            height=height,
            thumbnails=thumbnails,
            info=info,
            preset=settings.x264_preset,
            crf=settings.x264_crf,
            on_progress=on_progress,
        )
    except media.TranscodeCancelled:
        shutil.rmtree(scratch, ignore_errors=True)
        store.finish(task_id, CANCELLED, message="cancelled while transcoding")
        _discard_upload(task_id, upload)
        logger.info("task %s cancelled while transcoding", task_id)
        return {"cancelled": True}
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise

    media_store.publish_outputs(task_id, scratch)
    result = {
        "files": file_entries(task_id, [output.video, *output.thumbnails]),
        "source": info.to_json(),
        "output": {
            "width": output.width,
            "height": output.height,
            "frames": output.frames,
            "video_codec": "h264",
            "audio_codec": "aac" if info.audio_codec else None,
        },
    }
    store.finish(task_id, SUCCEEDED, message="done", result=result)
    # The upload goes only after the success is recorded: a worker lost in between leaves a
    # redelivery that start() skips, instead of one that fails on a missing upload.
    _discard_upload(task_id, upload)
    logger.info(
        "task %s: wrote %s and %d thumbnails", task_id, output.video, len(output.thumbnails)
    )
    return result


def _discard_upload(task_id: str, upload: str) -> None:
    """Delete the upload of a finished task; a failure is logged, and cleanup retries it."""
    try:
        media_store.delete_upload(upload)
    except mediastore.MediaStoreError as exc:
        logger.error("task %s: could not delete its upload %s: %s", task_id, upload, exc)


@celery_app.task(
    name=GENERATE_REPORT,
    bind=True,
    soft_time_limit=settings.io_soft_time_limit,
    time_limit=settings.io_time_limit,
)
def generate_report(self: Task, since: float | None, until: float | None) -> dict[str, Any]:
    """Write a CSV and an HTML report of the tasks created in ``[since, until)``."""
    task_id = self.request.id
    if not begin(self):
        return {"skipped": True}
    records = [r for r in store.between(since, until) if r.id != task_id]
    store.progress(task_id, 50.0, f"summarising {len(records)} tasks")
    period = f"from {_describe(since, 'the beginning')} until {_describe(until, 'now')}"
    scratch = media_store.scratch_dir(task_id)
    summary = reports.build_report(records, scratch, period)
    media_store.publish_outputs(task_id, scratch)
    result = {
        "files": file_entries(task_id, [reports.HTML_NAME, reports.CSV_NAME]),
        "tasks": summary.tasks,
        "by_state": summary.by_state,
        "by_kind": summary.by_kind,
        "failures": summary.failures,
    }
    store.finish(
        task_id, SUCCEEDED, message=f"report of {reports.count_tasks(summary.tasks)}", result=result
    )
    return result


def _describe(timestamp: float | None, default: str) -> str:
    return isoformat(timestamp) or default


@celery_app.task(
    name=SEND_EMAILS,
    bind=True,
    soft_time_limit=settings.io_soft_time_limit,
    time_limit=settings.io_time_limit,
)
def send_emails(
    self: Task,
    recipients: list[str],
    subject: str,
    body: str,
    statuses: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """Send one message per recipient; invalid addresses are reported, never fatal.

    ``statuses`` carries the per-recipient outcome across retries, so a retry sends only to
    the recipients that are still ``pending``.
    """
    task_id = self.request.id
    if not begin(self):
        return {"skipped": True}
    if statuses is None:
        statuses = []
        for address in recipients:
            error = mailer.address_error(address)
            if error:
                statuses.append({"address": address, "status": "invalid", "detail": error})
            else:
                statuses.append({"address": address, "status": "pending", "detail": ""})

    transient: Exception | None = None
    if settings.smtp_url:
        transient = _send_smtp(task_id, subject, body, statuses)
    else:
        outbox = settings.outbox / task_id
        for index, status in enumerate(statuses):
            if status["status"] == "pending":
                message = _build_or_fail(task_id, index, status, subject, body)
                if message is not None:
                    path = mailer.write_eml(outbox, index, message)
                    status.update(status="written", detail=f"written to the outbox as {path.name}")

    if transient is not None:
        if self.request.retries >= settings.max_retries:
            for status in statuses:
                if status["status"] == "pending":
                    status.update(status="failed", detail=f"gave up after retries: {transient}")
            error = f"SMTP kept failing after {self.request.retries} retries: {transient}"
            store.finish(
                task_id, FAILED, message="failed", error=error, result=_mail_result(statuses)
            )
            raise Reject(error, requeue=False)
        delay = backoff(self.request.retries)
        logger.warning(
            "task %s: SMTP failed (%s); retry %d in %.1f s",
            task_id,
            transient,
            self.request.retries + 1,
            delay,
        )
        raise self.retry(
            kwargs={
                "recipients": recipients,
                "subject": subject,
                "body": body,
                "statuses": statuses,
            },
            countdown=delay,
            max_retries=settings.max_retries,
            exc=transient,
        )

    result = _mail_result(statuses)
    summary = ", ".join(f"{n} {state}" for state, n in result["counts"].items())
    store.finish(task_id, SUCCEEDED, message=summary, result=result)
    return result


def _send_smtp(
    task_id: str, subject: str, body: str, statuses: list[dict[str, str]]
) -> Exception | None:
    """Send to every pending recipient; return the transient error that stopped it, if any."""
    target = mailer.parse_smtp_url(settings.smtp_url)
    total = len(statuses)
    with mailer.SmtpMailer(target, settings.smtp_timeout) as client:
        for index, status in enumerate(statuses):
            if status["status"] != "pending":
                continue
            message = _build_or_fail(task_id, index, status, subject, body)
            if message is not None:
                try:
                    client.send(message)
                except mailer.PermanentMailError as exc:
                    status.update(status="failed", detail=str(exc))
                except mailer.TransientMailError as exc:
                    return exc
                else:
                    status.update(status="sent", detail="")
            store.progress(task_id, 100.0 * (index + 1) / total, f"{index + 1} of {total} done")
    return None


def _build_or_fail(
    task_id: str, index: int, status: dict[str, str], subject: str, body: str
) -> EmailMessage | None:
    """Build the message of one recipient, or mark that recipient failed and return ``None``.

    The address passed ``mailer.address_error``, so a failure here is a gap in that check; it
    must cost one recipient, not the batch.
    """
    try:
        return mailer.build_message(settings.smtp_from, status["address"], subject, body)
    except (ValueError, TypeError, IndexError, UnicodeError) as exc:
        logger.error(
            "task %s: cannot build the message to recipient %d %r: %s",
            task_id,
            index,
            status["address"],
            exc,
        )
        status.update(status="failed", detail=f"the message could not be built: {exc}")
        return None


def _mail_result(statuses: list[dict[str, str]]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[status["status"]] = counts.get(status["status"], 0) + 1
    return {"files": [], "recipients": statuses, "counts": counts}


@celery_app.task(name=DISPATCH_DUE, ignore_result=True)
def dispatch_due() -> int:
    """Publish the scheduled tasks whose ``run_at`` has passed; return how many."""
    sent = 0
    for record in store.claim_due(time.time()):
        try:
            publisher.publish(record)
        except BrokerUnavailable as exc:
            store.release_claim(record.id)
            logger.error("could not dispatch scheduled task %s: %s", record.id, exc)
            break
        sent += 1
    if sent:
        logger.info("dispatched %d scheduled tasks", sent)
    return sent


@celery_app.task(name=CLEANUP_OUTPUTS, ignore_result=True)
def cleanup_outputs() -> int:
    """Delete outputs and uploads of tasks finished more than the retention period ago."""
    cutoff = time.time() - settings.output_retention_days * 86400
    removed = 0
    for record in store.finished_before(cutoff):
        shutil.rmtree(settings.outbox / record.id, ignore_errors=True)
        if not (record.result or {}).get("files"):
            continue
        # The API stops listing the files before they go, so no client follows a dead link.
        store.expire_outputs(record.id)
        media_store.delete_outputs(record.id)
        removed += 1
    media_store.delete_uploads_before(cutoff)
    logger.info(
        "cleanup removed the outputs of %d tasks older than %d days",
        removed,
        settings.output_retention_days,
    )
    return removed
