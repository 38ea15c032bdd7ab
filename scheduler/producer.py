"""The producer: a Flask JSON API that records tasks, queues them and reports on them.

Every response is JSON (``/files`` and ``/tasks/stream`` excepted), and every error is
``{"error": "..."}`` with its status code. The task store is the source of truth for the
state of a task: the producer records each id before publishing it, so an unknown id is a
404 and never Celery's endless ``PENDING``.
"""

from __future__ import annotations

import logging
import re
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

from flask import (
    Flask,
    Response,
    jsonify,
    request,
    send_from_directory,
    stream_with_context,
    url_for,
)
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request

from ratelimiter.flask import Limiter
from scheduler import inputs, media, mediastore
from scheduler.celery_app import make_celery
from scheduler.config import EMBEDDED_BROKER_LIMITS, Settings, load_settings
from scheduler.events import TaskEvents
from scheduler.pgtaskstore import open_task_store
from scheduler.publisher import BrokerUnavailable, Publisher
from scheduler.taskstore import TERMINAL_STATES, IdempotencyConflict, TaskRecord, TaskStore
from scheduler.web import create_jobs_blueprint

logger = logging.getLogger(__name__)

MAX_FORM_OVERHEAD = 64 * 1024
MAX_THUMBNAILS = 100
MAX_PER_PAGE = 100
# Valid bodies quoted in the error for a JSON body that is not an object.
REPORT_EXAMPLE = '{"since": "2030-01-01T00:00:00Z"}'
EMAIL_EXAMPLE = '{"recipients": ["ann@example.com"], "subject": "Hi", "body": "Text"}'
_TASK_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def _upload_request_class(upload_dir: Path) -> type[Request]:
    """Return a request class that streams file parts straight into ``upload_dir``.

    Werkzeug would spool large uploads to the system temporary folder. Writing them next to
    their final place lets the producer move them with a rename instead of a copy.
    """
    from flask import Request as FlaskRequest

    class UploadRequest(FlaskRequest):
        def _get_file_stream(
            self,
            total_content_length: int | None,
            content_type: str | None,
            filename: str | None = None,
            content_length: int | None = None,
        ) -> IO[bytes]:
            upload_dir.mkdir(parents=True, exist_ok=True)
            return tempfile.NamedTemporaryFile(dir=upload_dir, prefix=".part-", delete=False)

    return UploadRequest


def _error(message: str, status: int, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=message, **extra), status


def create_app(
    settings: Settings | None = None,
    *,
    store: TaskStore | None = None,
    publisher: Publisher | None = None,
    media_store: mediastore.MediaStore | None = None,
) -> Flask:
    """Build the producer app.

    :param settings: defaults to :func:`scheduler.config.load_settings`.
    :param store: the task store; defaults to the one the settings select.
    :param publisher: defaults to a publisher on a Celery app built from the settings.
    :param media_store: where uploads and outputs live; defaults to the backend that
        ``MEDIA_URL`` selects.
    """
    settings = settings or load_settings()
    store = store or open_task_store(settings)
    if publisher is None:
        publisher = Publisher(make_celery(settings, producer=True), settings)
    media_store = media_store or mediastore.open_media_store(settings)
    events = TaskEvents(store)
    # Uploads stream into this local folder first; the media store takes them from there.
    settings.uploads_dir.mkdir(parents=True, exist_ok=True)

    app = Flask(__name__)
    app.request_class = _upload_request_class(settings.uploads_dir)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_mb * 1024 * 1024 + MAX_FORM_OVERHEAD
    app.json.sort_keys = False
    app.extensions["scheduler"] = {"settings": settings, "store": store, "events": events}
    app.register_blueprint(create_jobs_blueprint(settings, max_thumbnails=MAX_THUMBNAILS))

    # Per-route policies only, keyed by client IP; the key prefix keeps these buckets apart
    # from other services that share a Redis storage.
    limiter = Limiter(
        storage=settings.rate_limit_storage, key_prefix=settings.rate_limit_key_prefix
    )
    limiter.init_app(app)

    logger.info("media store: %s", media_store.describe())
    if settings.embedded_broker:
        logger.warning(EMBEDDED_BROKER_LIMITS)

    def accepted(task_id: str, created: bool) -> tuple[Response, int, dict[str, str]]:
        status_url = url_for("get_task", task_id=task_id, _external=True)
        response = jsonify(task_id=task_id, status_url=status_url)
        headers = {"Location": status_url}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return response, 202, headers

    def submit(
        task_id: str, kind: str, params: dict[str, Any], run_at: float | None, key: str | None
    ) -> tuple[str, bool]:
        """Record and queue a task.

        :return: the task id (the original task's on an idempotent replay) and whether a
            new task was created.
        """
        if run_at is not None:
            # A scheduled task is published later by the dispatcher, but a broker that is
            # down now still gets a 503, so the client never gets an id that cannot run.
            problem = publisher.ping()
            if problem is not None:
                raise BrokerUnavailable(f"the message broker is unreachable: {problem}")
        record, created = store.insert(task_id, kind, params, run_at=run_at, idempotency_key=key)
        if not created or run_at is not None:
            return record.id, created
        try:
            publisher.publish(record)
        except BrokerUnavailable:
            store.delete(task_id)
            raise
        store.confirm_queued(task_id)
        return task_id, True

    @app.errorhandler(inputs.InvalidInput)
    def invalid_input(exc: inputs.InvalidInput) -> tuple[Response, int]:
        return _error(exc.message, exc.status)

    @app.errorhandler(BrokerUnavailable)
    def broker_unavailable(exc: BrokerUnavailable) -> tuple[Response, int]:
        return _error(f"{exc}; nothing was queued, try again later", 503)

    @app.errorhandler(mediastore.MediaStoreError)
    def media_store_failed(exc: mediastore.MediaStoreError) -> tuple[Response, int]:
        logger.error("media store error on %s %s: %s", request.method, request.path, exc)
        return _error("the media store is unavailable; nothing was queued, try again later", 503)

    @app.errorhandler(IdempotencyConflict)
    def idempotency_conflict(exc: IdempotencyConflict) -> tuple[Response, int]:
        return _error(
            f"Idempotency-Key {exc.key!r} was already used for a {exc.existing.kind} task"
            f" ({exc.existing.id}); use a new key",
            422,
        )

    @app.errorhandler(413)
    def too_large(exc: HTTPException) -> tuple[Response, int]:
        return _error(
            f"the upload is larger than MAX_UPLOAD_MB={settings.max_upload_mb} MB;"
            " send a smaller file",
            413,
        )

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return _error(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def internal_error(exc: Exception) -> tuple[Response, int]:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return _error("internal error; the producer log has the details", 500)

    @app.post("/process-video")
    @limiter.limit(settings.video_rate_limit)
    def process_video() -> Any:
        upload = request.files.get("file")
        parts = [part.stream for part in request.files.values()]
        try:
            if upload is None:
                raise inputs.InvalidInput("missing multipart field 'file'; send -F file=@clip.mp4")
            part_path = Path(upload.stream.name)  # type: ignore[union-attr]
            upload.stream.flush()
            size = part_path.stat().st_size
            if size == 0:
                raise inputs.InvalidInput(f"the uploaded file {upload.filename!r} is empty")
            if size > settings.max_upload_mb * 1024 * 1024:
                raise inputs.InvalidInput(
                    f"the upload is larger than MAX_UPLOAD_MB={settings.max_upload_mb} MB;"
                    " send a smaller file",
                    413,
                )
            height = inputs.parse_int(
                request.form.get("height"), "height", settings.default_height, 16, 4320
            )
            thumbnails = inputs.parse_int(
                request.form.get("thumbnails"),
                "thumbnails",
                settings.default_thumbnails,
                0,
                MAX_THUMBNAILS,
            )
            run_at = inputs.parse_schedule(request.form)
            key = inputs.parse_idempotency_key(request.headers.get("Idempotency-Key"))
            try:
                info = media.probe(part_path)
            except media.NotAVideo as exc:
                raise inputs.InvalidInput(
                    f"{upload.filename!r} is not a video FFmpeg can decode ({exc.reason});"
                    " upload a video file such as MP4, MKV or WebM",
                    415,
                ) from None

            task_id = str(uuid.uuid4())
            suffix = Path(upload.filename or "").suffix.lower()
            stored_name = task_id + (suffix if _SUFFIX.match(suffix) else "")
            media_store.save_upload(part_path, stored_name)
            params = {"upload": stored_name, "height": height, "thumbnails": thumbnails}
            try:
                accepted_id, created = submit(task_id, "process-video", params, run_at, key)
            except BaseException:
                _discard_upload(media_store, stored_name)
                raise
            if not created:
                _discard_upload(media_store, stored_name)
            logger.info(
                "accepted video task %s (%s, %dx%d, %.1f s, client %s)",
                accepted_id,
                upload.filename,
                info.width,
                info.height,
                info.duration,
                request.remote_addr,
            )
            return accepted(accepted_id, created)
        finally:
            for stream in parts:
                name = getattr(stream, "name", None)
                stream.close()
                if isinstance(name, str) and Path(name).name.startswith(".part-"):
                    Path(name).unlink(missing_ok=True)

    @app.post("/generate-report")
    @limiter.limit(settings.post_rate_limit)
    def generate_report() -> Any:
        body = inputs.parse_json_object(request.get_data(), request.mimetype, REPORT_EXAMPLE)
        report = inputs.parse_report(body)
        run_at = inputs.parse_schedule(body)
        key = inputs.parse_idempotency_key(request.headers.get("Idempotency-Key"))
        params = {"since": report.since, "until": report.until}
        return accepted(*submit(str(uuid.uuid4()), "generate-report", params, run_at, key))

    @app.post("/send-emails")
    @limiter.limit(settings.post_rate_limit)
    def send_emails() -> Any:
        body = inputs.parse_json_object(request.get_data(), request.mimetype, EMAIL_EXAMPLE)
        email = inputs.parse_emails(body)
        run_at = inputs.parse_schedule(body)
        key = inputs.parse_idempotency_key(request.headers.get("Idempotency-Key"))
        params = {"recipients": email.recipients, "subject": email.subject, "body": email.body}
        return accepted(*submit(str(uuid.uuid4()), "send-emails", params, run_at, key))

    def find(task_id: str) -> TaskRecord:
        record = store.get(task_id) if _TASK_ID.match(task_id) else None
        if record is None:
            raise inputs.InvalidInput(f"no task with id {task_id!r}", 404)
        return record

    @app.get("/tasks/<task_id>")
    def get_task(task_id: str) -> Any:
        return jsonify(find(task_id).to_json())

    @app.get("/tasks")
    def list_tasks() -> Any:
        page = inputs.parse_int(request.args.get("page"), "page", 1, 1, 1_000_000)
        per_page = inputs.parse_int(request.args.get("per_page"), "per_page", 20, 1, MAX_PER_PAGE)
        records, total = store.page(page, per_page)
        return jsonify(
            tasks=[r.to_json() for r in records], page=page, per_page=per_page, total=total
        )

    @app.get("/tasks/stream")
    def stream_tasks() -> Response:
        last_id = request.headers.get("Last-Event-ID")
        return Response(
            events.stream(last_id),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @app.delete("/tasks/<task_id>")
    def cancel_task(task_id: str) -> Any:
        record = find(task_id)
        if record.state in TERMINAL_STATES:
            return _error(f"task {task_id} already {record.state}; nothing to cancel", 409)
        updated = store.request_cancel(task_id) or record
        logger.info("cancel of task %s requested (was %s)", task_id, record.state)
        return jsonify(updated.to_json()), 200 if updated.state in TERMINAL_STATES else 202

    @app.get("/files/<task_id>/<name>")
    def download(task_id: str, name: str) -> Response:
        record = find(task_id)
        listed = {entry["name"] for entry in (record.result or {}).get("files", [])}
        if name not in listed:
            raise inputs.InvalidInput(f"task {task_id} has no output file {name!r}", 404)
        folder = media_store.output_folder(task_id)
        if folder is not None:
            # send_from_directory rejects any name that would leave the folder.
            return send_from_directory(folder, name)
        return _stream_output(media_store, task_id, name)

    @app.get("/healthz")
    def healthz() -> Any:
        problem = publisher.ping()
        broker = "embedded" if settings.embedded_broker else "rabbitmq"
        media_kind = media_store.kind
        if problem is not None:
            return _error(
                f"the message broker is unreachable: {problem}",
                503,
                broker=broker,
                media=media_kind,
            )
        media_problem = media_store.check()
        if media_problem is not None:
            return _error(
                f"the media store is unusable: {media_problem}",
                503,
                broker=broker,
                media=media_kind,
            )
        return jsonify(status="ok", broker=broker, media=media_kind)

    return app


def _discard_upload(media_store: mediastore.MediaStore, name: str) -> None:
    """Delete an upload that no task will use; a failure is logged, never raised."""
    try:
        media_store.delete_upload(name)
    except mediastore.MediaStoreError as exc:
        logger.error("could not delete the unused upload %s: %s", name, exc)


def _stream_output(media_store: mediastore.MediaStore, task_id: str, name: str) -> Response:
    """Stream an output from the object store, passing an HTTP Range header through."""
    byte_range = request.headers.get("Range")
    try:
        remote = media_store.open_output(task_id, name, byte_range)
    except mediastore.MediaNotFound:
        raise inputs.InvalidInput(
            f"output {name!r} of task {task_id} is no longer in the media store", 404
        ) from None
    except mediastore.MediaStoreError as exc:
        if byte_range and "InvalidRange" in str(exc):
            raise inputs.InvalidInput(f"Range {byte_range!r} is outside the file", 416) from None
        raise
    response = Response(
        stream_with_context(remote.chunks),
        status=remote.status,
        mimetype=remote.content_type,
        direct_passthrough=True,
    )
    response.content_length = remote.length
    response.headers["Accept-Ranges"] = "bytes"
    if remote.content_range:
        response.headers["Content-Range"] = remote.content_range
    if remote.etag:
        response.headers["ETag"] = remote.etag
    if remote.last_modified is not None:
        response.last_modified = remote.last_modified
    return response
