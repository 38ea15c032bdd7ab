"""End to end: requests go through the producer, the broker and a real worker.

Every flow runs twice through the ``broker_env`` fixture: on the real RabbitMQ and on the
embedded SQLite broker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import av
import pytest

from scheduler import media
from scheduler.celery_app import make_celery
from tests.scheduler.conftest import make_client, upload, wait_for_state

# The broker name that GET /healthz reports.
HEALTHZ_BROKER = {"rabbitmq": "rabbitmq", "sqlite": "embedded"}


def test_video_e2e(broker, broker_env, start_worker, clip_path: Path) -> None:  # noqa: ANN001
    settings, _, client = make_client(broker_env)
    start_worker(broker_env)
    assert client.get("/healthz").get_json()["broker"] == HEALTHZ_BROKER[broker]

    response = upload(client, clip_path, height="240", thumbnails="4")
    assert response.status_code == 202
    task_id = response.get_json()["task_id"]
    assert response.headers["Location"].endswith(f"/tasks/{task_id}")

    task = wait_for_state(client, task_id, {"succeeded", "failed"})
    assert task["state"] == "succeeded", task
    names = [f["name"] for f in task["result"]["files"]]
    assert names == ["video.mp4", "thumb_01.jpg", "thumb_02.jpg", "thumb_03.jpg", "thumb_04.jpg"]

    download = client.get(task["result"]["files"][0]["url"])
    assert download.status_code == 200
    out = settings.media_root / "out.mp4"
    out.write_bytes(download.data)
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert (frame.width, frame.height) == (426, 240)
        assert container.streams.video[0].codec_context.name == "h264"
        assert container.streams.audio[0].codec_context.name == "aac"
    thumb = client.get(task["result"]["files"][1]["url"])
    assert thumb.data[:2] == b"\xff\xd8"


@pytest.fixture(scope="module")
def long_clip_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-second clip, so a cancel lands well before the transcode ends, even under load."""
    path = tmp_path_factory.mktemp("long-clip") / "long.mp4"
    media.generate_clip(path, seconds=12.0, width=640, height=360)
    return path


def test_cancel_running_video(broker_env, start_worker, long_clip_path: Path) -> None:
    env = {**broker_env, "VIDEO_X264_PRESET": "veryslow"}
    settings, _, client = make_client(env)
    start_worker(env)
    task_id = upload(client, long_clip_path).get_json()["task_id"]
    wait_for_state(client, task_id, {"progress"}, timeout=30)

    response = client.delete(f"/tasks/{task_id}")
    assert response.status_code == 202
    task = wait_for_state(client, task_id, {"cancelled", "succeeded", "failed"}, timeout=30)
    assert task["state"] == "cancelled"
    assert task["percent"] < 100
    assert not (settings.media_root / task_id).exists()
    assert not (settings.media_root / f".{task_id}.partial").exists()


def test_report_and_emails_e2e(broker_env, start_worker) -> None:
    settings, _, client = make_client(broker_env)
    start_worker(broker_env, queues=[broker_env["SCHEDULER_IO_QUEUE"]], pool="threads")
    emails = client.post(
        "/send-emails",
        json={"recipients": ["ann@example.com", "not-an-address"], "subject": "Hi", "body": "B"},
    )
    mail_task = wait_for_state(client, emails.get_json()["task_id"], {"succeeded", "failed"})
    assert mail_task["state"] == "succeeded"
    statuses = [r["status"] for r in mail_task["result"]["recipients"]]
    assert statuses == ["written", "invalid"]
    assert len(list((settings.outbox / mail_task["id"]).glob("*.eml"))) == 1
    # A fresh Celery app reads the worker's copy from the result backend's database. The worker
    # writes it after the task store records success, so it may lag by a moment.
    backend = make_celery(settings).backend
    deadline = time.monotonic() + 10
    while (stored := backend.get_task_meta(mail_task["id"]))["status"] == "PENDING":
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert stored["status"] == "SUCCESS"

    report = client.post("/generate-report", json={"since": "2000-01-01T00:00:00Z"})
    task = wait_for_state(client, report.get_json()["task_id"], {"succeeded", "failed"})
    assert task["state"] == "succeeded"
    assert task["result"]["by_kind"] == {"send-emails": 1}
    csv_text = client.get(f"/files/{task['id']}/report.csv").get_data(as_text=True)
    assert mail_task["id"] in csv_text


def test_failed_task_dead_lettered(broker_env, start_worker, clip_path: Path) -> None:
    from scheduler.deadletters import peek

    settings, _, client = make_client(broker_env)
    task_id = upload(client, clip_path).get_json()["task_id"]
    # Damage the stored upload after it was accepted, so the worker's probe fails.
    for path in settings.uploads_dir.iterdir():
        path.write_bytes(b"not a video any more")
    start_worker(broker_env)

    task = wait_for_state(client, task_id, {"succeeded", "failed"})
    assert task["state"] == "failed"
    assert "not a readable video" in task["error"]
    letters = []
    for _ in range(50):
        letters = peek(settings, 10)
        if letters:
            break
        time.sleep(0.1)
    assert [letter.task_id for letter in letters] == [task_id]
    assert letters[0].reason == "rejected"


def test_cleanup_removes_old_outputs(broker_env, start_worker, clip_path: Path) -> None:
    from scheduler.celery_app import CLEANUP_OUTPUTS
    from scheduler.taskstore import TaskStore

    env = {**broker_env, "OUTPUT_RETENTION_DAYS": "1"}
    settings, _, client = make_client(env)
    start_worker(env)
    task_id = upload(client, clip_path, height="120", thumbnails="1").get_json()["task_id"]
    wait_for_state(client, task_id, {"succeeded"})
    store = TaskStore(settings.task_db)
    two_days_ago = time.time() - 2 * 86400
    store._write("UPDATE tasks SET finished_at = ? WHERE id = ?", (two_days_ago, task_id))

    make_celery(settings).send_task(CLEANUP_OUTPUTS)
    deadline = time.monotonic() + 30
    while (settings.media_root / task_id).exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (settings.media_root / task_id).exists()
    task = client.get(f"/tasks/{task_id}").get_json()
    assert task["result"]["files"] == []
    assert task["result"]["expired"] is True
    assert client.get(f"/files/{task_id}/video.mp4").status_code == 404


def _pool_children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()]


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_idle_pool_process_killed(broker_env, start_worker, clip_path: Path) -> None:
    env = broker_env
    _, _, client = make_client(env)
    worker = start_worker(env)
    [child] = _pool_children(worker.process.pid)
    time.sleep(1.0)  # let the idle pool process block on the task pipe
    os.kill(child, signal.SIGKILL)
    time.sleep(1.0)  # the pool replaces it

    task_id = upload(client, clip_path, height="180", thumbnails="1").get_json()["task_id"]
    task = wait_for_state(client, task_id, {"succeeded", "failed"}, timeout=20)
    assert task["state"] == "succeeded", task
