"""The producer's HTTP API, with no worker unless a test starts one.

Input checks run against the real RabbitMQ only. Tests that depend on the broker (queued
messages, workers, the health check) run on RabbitMQ and on the embedded SQLite broker.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.scheduler.conftest import make_client, queue_depth, upload, wait_for_state

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
EMAIL = {"recipients": ["a@example.com"], "subject": "Hello", "body": "Text"}


# The broker name that GET /healthz reports.
HEALTHZ_BROKER = {"rabbitmq": "rabbitmq", "sqlite": "embedded"}


@pytest.fixture
def api(rabbit_env):
    """``(settings, test client)`` of a producer on RabbitMQ."""
    settings, _, client = make_client(rabbit_env)
    return settings, client


@pytest.fixture
def broker_api(broker_env):
    """``(settings, test client)`` of a producer on each broker in turn."""
    settings, _, client = make_client(broker_env)
    return settings, client


def post_json(client, path: str, body: object, **headers: str):  # noqa: ANN001, ANN201
    return client.post(
        path, data=json.dumps(body), content_type="application/json", headers=headers
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/send-emails", "not json", 400, "not valid JSON"),
        ("/send-emails", [1, 2], 400, 'JSON object, e.g. {"recipients"'),
        ("/generate-report", "{", 400, "not valid JSON"),
        ("/generate-report", "null", 400, 'JSON object, e.g. {"since"'),
        ("/send-emails", {"recipients": [], "subject": "s", "body": "b"}, 400, "recipients"),
        (
            "/send-emails",
            {"recipients": "a@example.com", "subject": "s", "body": "b"},
            400,
            "recipients",
        ),
        ("/send-emails", {"recipients": [3], "subject": "s", "body": "b"}, 400, "recipients[0]"),
        (
            "/send-emails",
            {"recipients": ["a@example.com"], "subject": "a\nBcc: x", "body": "b"},
            400,
            "one line",
        ),
        ("/send-emails", {**EMAIL, "run_at": "tomorrow"}, 400, "run_at"),
        (
            "/send-emails",
            {**EMAIL, "run_at": "2030-01-01T00:00:00Z", "delay_seconds": 5},
            400,
            "not both",
        ),
        ("/send-emails", {**EMAIL, "delay_seconds": -1}, 400, "delay_seconds"),
        ("/generate-report", {"since": "yesterday"}, 400, "since"),
        ("/generate-report", {"since": "2030-01-02", "until": "2030-01-01"}, 400, "earlier"),
        ("/generate-report", {"since": 5}, 400, "ISO 8601"),
    ],
)
def test_post_bad_json(api, path: str, body: object, status: int, fragment: str) -> None:
    _, client = api
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.post(path, data=raw, content_type="application/json")
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


@pytest.mark.parametrize("path", ["/send-emails", "/generate-report"])
@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_post_json_wrong_content_type(api, path: str, content_type: str | None) -> None:
    _, client = api
    response = client.post(path, data=json.dumps(EMAIL), content_type=content_type)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.get_json()["error"]


def test_post_non_json_serialisable(api) -> None:
    _, client = api
    response = client.post(
        "/generate-report", data='{"since": NaN}', content_type="application/json"
    )
    assert response.status_code == 400
    assert "strict JSON" in response.get_json()["error"]


@pytest.mark.parametrize(
    ("content", "filename", "fields", "status", "fragment"),
    [
        (b"", "empty.mp4", {}, 400, "empty"),
        (b"hello, this is text", "notes.mp4", {}, 415, "not a video"),
        (b"\x00" * 4096, "zeros.mkv", {}, 415, "not a video"),
    ],
)
def test_upload_bad_file(api, content, filename, fields, status, fragment) -> None:  # noqa: ANN001
    _, client = api
    data = {"file": (io.BytesIO(content), filename), **fields}
    response = client.post("/process-video", data=data, content_type="multipart/form-data")
    assert response.status_code == status
    assert fragment in response.get_json()["error"]


def test_upload_not_video_hides_paths(api) -> None:  # noqa: ANN001
    settings, client = api
    data = {"file": (io.BytesIO(b"hello, this is text"), "notes.mp4")}
    response = client.post("/process-video", data=data, content_type="multipart/form-data")
    error = response.get_json()["error"]
    assert "Invalid data found" in error
    assert str(settings.media_root) not in error
    assert ".part-" not in error


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"height": "tall"}, "height"),
        ({"height": "8"}, "height"),
        ({"thumbnails": "-1"}, "thumbnails"),
        ({"run_at": "not-a-date"}, "run_at"),
    ],
)
def test_upload_bad_fields(api, clip_path: Path, fields: dict, fragment: str) -> None:
    _, client = api
    response = upload(client, clip_path, **fields)
    assert response.status_code == 400
    assert fragment in response.get_json()["error"]


def test_upload_missing_field(api) -> None:
    _, client = api
    response = client.post(
        "/process-video", data={"other": "x"}, content_type="multipart/form-data"
    )
    assert response.status_code == 400
    assert "'file'" in response.get_json()["error"]


def test_upload_too_large(rabbit_env) -> None:
    _, _, client = make_client({**rabbit_env, "MAX_UPLOAD_MB": "1"})
    data = {"file": (io.BytesIO(b"\x00" * (2 * 1024 * 1024)), "big.mp4")}
    response = client.post("/process-video", data=data, content_type="multipart/form-data")
    assert response.status_code == 413
    assert "MAX_UPLOAD_MB=1" in response.get_json()["error"]


def test_upload_leaves_no_partial_files(api) -> None:
    settings, client = api
    data = {"file": (io.BytesIO(b"text"), "notes.mp4")}
    client.post("/process-video", data=data, content_type="multipart/form-data")
    assert list(settings.uploads_dir.iterdir()) == []


def test_accepted_upload_is_queued(broker_api, clip_path: Path) -> None:
    settings, client = broker_api
    response = upload(client, clip_path)
    assert response.status_code == 202
    task = client.get(f"/tasks/{response.get_json()['task_id']}").get_json()
    assert task["state"] == "queued"
    assert queue_depth(settings.broker_url, settings.video_queue) == 1


@pytest.mark.parametrize("task_id", [UNKNOWN_ID, "nope", "..%2F..%2Fetc"])
def test_unknown_task_404(api, task_id: str) -> None:
    _, client = api
    response = client.get(f"/tasks/{task_id}")
    assert response.status_code == 404
    assert response.get_json()["error"]


def test_delete_unknown_404(api) -> None:
    _, client = api
    assert client.delete(f"/tasks/{UNKNOWN_ID}").status_code == 404


@pytest.mark.parametrize("name", ["../../etc/passwd", "..", "video.mp4", "%2e%2e%2fsecret"])
def test_files_path_traversal(api, name: str) -> None:
    settings, client = api
    task_id = post_json(client, "/send-emails", EMAIL).get_json()["task_id"]
    (settings.media_root / "secret").write_text("secret")
    response = client.get(f"/files/{task_id}/{name}")
    assert response.status_code == 404


def test_list_tasks_paginates(api) -> None:
    _, client = api
    ids = [post_json(client, "/send-emails", EMAIL).get_json()["task_id"] for _ in range(3)]
    body = client.get("/tasks?page=1&per_page=2").get_json()
    assert body["total"] == 3
    assert [t["id"] for t in body["tasks"]] == ids[::-1][:2]
    assert client.get("/tasks?page=2&per_page=2").get_json()["tasks"][0]["id"] == ids[0]


@pytest.mark.parametrize("query", ["page=0", "per_page=1000", "page=x"])
def test_list_tasks_bad_query(api, query: str) -> None:
    _, client = api
    assert client.get(f"/tasks?{query}").status_code == 400


def test_idempotency_key_returns_original(broker_api) -> None:
    settings, client = broker_api
    first = post_json(client, "/send-emails", EMAIL, **{"Idempotency-Key": "k-1"})
    second = post_json(client, "/send-emails", EMAIL, **{"Idempotency-Key": "k-1"})
    assert second.status_code == 202
    assert second.get_json()["task_id"] == first.get_json()["task_id"]
    assert second.headers["Idempotent-Replayed"] == "true"
    assert client.get("/tasks").get_json()["total"] == 1
    assert queue_depth(settings.broker_url, settings.io_queue) == 1


def test_idempotency_key_other_kind(api) -> None:
    _, client = api
    post_json(client, "/send-emails", EMAIL, **{"Idempotency-Key": "k-2"})
    response = post_json(client, "/generate-report", {}, **{"Idempotency-Key": "k-2"})
    assert response.status_code == 422


def test_idempotency_key_invalid(api) -> None:
    _, client = api
    response = post_json(client, "/send-emails", EMAIL, **{"Idempotency-Key": "has space"})
    assert response.status_code == 400


def test_cancel_queued_never_starts(broker_api, broker_env, start_worker, clip_path: Path) -> None:
    settings, client = broker_api
    task_id = upload(client, clip_path).get_json()["task_id"]
    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.get_json()["state"] == "cancelled"

    start_worker(broker_env)
    deadline = time.monotonic() + 30
    while queue_depth(settings.broker_url, settings.video_queue) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["state"] == "cancelled"
    assert task["started_at"] is None
    assert not (settings.media_root / task_id).exists()


def test_cancel_finished_409(broker_api, broker_env, start_worker) -> None:
    _, client = broker_api
    start_worker(broker_env, pool="threads")
    task_id = post_json(client, "/send-emails", EMAIL).get_json()["task_id"]
    wait_for_state(client, task_id, {"succeeded"}, timeout=30)
    assert client.delete(f"/tasks/{task_id}").status_code == 409


def test_scheduled_task_waits_for_run_at(broker_api, broker_env, start_worker) -> None:
    settings, client = broker_api
    start_worker(broker_env, pool="threads")
    response = post_json(client, "/send-emails", {**EMAIL, "delay_seconds": 1.5})
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    assert client.get(f"/tasks/{task_id}").get_json()["state"] == "queued"
    # The dispatcher runs from celery beat; the test calls it as beat would.
    from celery import Celery

    from scheduler.celery_app import DISPATCH_DUE, make_celery

    app: Celery = make_celery(settings)
    app.send_task(DISPATCH_DUE)
    time.sleep(0.6)
    assert client.get(f"/tasks/{task_id}").get_json()["state"] == "queued"
    time.sleep(1.2)
    app.send_task(DISPATCH_DUE)
    task = wait_for_state(client, task_id, {"succeeded"}, timeout=30)
    assert task["run_at"] is not None


class SilentServer:
    """A TCP server on loopback that accepts connections and never responds."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("mode", ["refused", "silent"])
def test_broker_unreachable_503(tmp_path: Path, unique_prefix: str, mode: str) -> None:
    from tests.scheduler.conftest import scheduler_environ

    server = SilentServer() if mode == "silent" else None
    port = server.port if server else closed_port()
    env = scheduler_environ(tmp_path, f"amqp://guest:guest@127.0.0.1:{port}//", unique_prefix)
    try:
        _, _, client = make_client(env)
        started = time.monotonic()
        response = post_json(client, "/send-emails", EMAIL)
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert "unreachable" in response.get_json()["error"]
        assert elapsed < 10
        assert client.get("/tasks").get_json()["total"] == 0
        assert client.get("/healthz").status_code == 503
    finally:
        if server:
            server.close()


def test_healthz_ok(broker_api, broker: str) -> None:
    _, client = broker_api
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["broker"] == HEALTHZ_BROKER[broker]


def test_errors_are_json(api) -> None:
    _, client = api
    response = client.get("/no-such-route")
    assert response.status_code == 404
    assert "error" in response.get_json()
    assert client.put("/tasks").status_code == 405


@pytest.mark.parametrize(
    ("path", "variable", "invalid_status"),
    [
        ("/process-video", "SCHEDULER_VIDEO_RATE_LIMIT", 400),
        ("/send-emails", "SCHEDULER_POST_RATE_LIMIT", 415),
    ],
)
def test_rate_limit_429(rabbit_env, path: str, variable: str, invalid_status: int) -> None:
    _, _, client = make_client({**rabbit_env, variable: "2/minute, burst 2"})
    statuses = [
        client.post(path, data={}, content_type="multipart/form-data").status_code for _ in range(3)
    ]
    assert statuses[:2] == [invalid_status, invalid_status]
    response = client.post(path, data={}, content_type="multipart/form-data")
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert "error" in response.get_json()


def test_event_stream_reports_changes(api) -> None:
    _, client = api
    response = client.get("/tasks/stream", buffered=False)
    assert response.mimetype == "text/event-stream"
    chunks = response.response
    assert next(chunks).startswith(b"retry:")
    task_id = post_json(client, "/send-emails", EMAIL).get_json()["task_id"]
    deadline = time.monotonic() + 10
    seen = b""
    while task_id.encode() not in seen and time.monotonic() < deadline:
        seen += next(chunks)
    response.close()
    assert b"event: task" in seen
    assert task_id.encode() in seen
