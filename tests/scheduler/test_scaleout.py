"""Producers and workers on separate "machines": processes that share no media folder.

Each process gets its own folders, so the processes share only network services: RabbitMQ
as the broker, the S3 store (moto's server) for uploads and outputs, PostgreSQL for the task
store and Celery's results.
"""

from __future__ import annotations

import time
from pathlib import Path

import av
import httpx
import pytest

from scheduler import media
from scheduler.pgtaskstore import PostgresTaskStore
from scheduler.taskstore import TaskStore
from tests.scheduler.s3_server import MotoServer

PRODUCERS = 2
WORKERS = 3
TASKS_PER_PRODUCER = 3
TARGET_HEIGHT = 240
DONE = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "short.mp4"
    media.generate_clip(path, seconds=2.0, width=640, height=360)
    return path


def _machine_env(base: dict[str, str], root: Path) -> dict[str, str]:
    """Return ``base`` with the folders of one simulated machine under ``root``."""
    return {
        **base,
        "MEDIA_ROOT": str(root / "media"),
        "SCHEDULER_STATE_DIR": str(root / "state"),
        "SCHEDULER_OUTBOX": str(root / "outbox"),
    }


def _post_video(base_url: str, clip: Path) -> httpx.Response:
    with clip.open("rb") as handle:
        return httpx.post(
            f"{base_url}/process-video",
            files={"file": (clip.name, handle, "video/mp4")},
            data={"height": str(TARGET_HEIGHT), "thumbnails": "2"},
            timeout=30,
        )


def _wait_all(base_url: str, task_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    tasks: dict[str, dict] = {}
    while time.monotonic() < deadline:
        for task_id in task_ids:
            if tasks.get(task_id, {}).get("state") not in DONE:
                tasks[task_id] = httpx.get(f"{base_url}/tasks/{task_id}", timeout=5).json()
        if all(task["state"] in DONE for task in tasks.values()):
            return tasks
        time.sleep(0.2)
    raise AssertionError(f"tasks not finished in {timeout} s: {tasks}")


def _wait_running(store: TaskStore, task_ids: list[str], timeout: float = 60.0) -> str:
    """Return the id of a task that a worker is transcoding."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for task_id in task_ids:
            record = store.get(task_id)
            if record is not None and record.state == "progress" and record.worker:
                return task_id
        time.sleep(0.02)
    raise AssertionError("no task reached the progress state")


@pytest.mark.slow
def test_two_producers_three_workers_s3(
    tmp_path: Path,
    rabbit_env: dict[str, str],
    s3_media_env: dict[str, str],
    s3_server: MotoServer,
    task_db_url: str,
    start_worker,
    start_producer,
    short_clip: Path,
) -> None:
    base = {
        **rabbit_env,
        **s3_media_env,
        "SCHEDULER_TASK_DB_URL": task_db_url,
        # Celery's results go to the same PostgreSQL schema, through SQLAlchemy and psycopg 3.
        "CELERY_RESULT_BACKEND": "db+"
        + task_db_url.replace("postgresql://", "postgresql+psycopg://"),
        # A slow x264 preset makes each 2-second clip take about a second, so the kill
        # lands while a task runs.
        "VIDEO_X264_PRESET": "slower",
    }
    queues = [base["SCHEDULER_VIDEO_QUEUE"]]
    workers = [
        start_worker(_machine_env(base, tmp_path / f"worker-{i}"), queues, name=f"w{i}", wait=False)
        for i in range(WORKERS)
    ]
    producers = [
        start_producer(_machine_env(base, tmp_path / f"producer-{i}"), wait=False)
        for i in range(PRODUCERS)
    ]
    for process in [*workers, *producers]:
        process.wait_ready()

    submitted: dict[str, int] = {}
    for round_ in range(TASKS_PER_PRODUCER):
        for index, producer in enumerate(producers):
            response = _post_video(producer.base_url, short_clip)
            assert response.status_code == 202, (round_, response.text)
            submitted[response.json()["task_id"]] = index
    task_ids = list(submitted)

    store = PostgresTaskStore(task_db_url)
    victim_task = _wait_running(store, task_ids)
    victim_host = store.get(victim_task).worker
    victim = next(w for w in workers if victim_host.startswith(f"{w.name}@"))
    victim.kill()

    tasks = _wait_all(producers[0].base_url, task_ids, timeout=180)
    failed = {task_id: task for task_id, task in tasks.items() if task["state"] != "succeeded"}
    assert failed == {}
    redelivered = store.get(victim_task)
    assert redelivered.deliveries == 2
    assert redelivered.worker != victim_host

    for task_id, task in tasks.items():
        other = producers[1 - submitted[task_id]]
        names = [entry["name"] for entry in task["result"]["files"]]
        assert names == ["video.mp4", "thumb_01.jpg", "thumb_02.jpg"]
        thumb = httpx.get(other.base_url + task["result"]["files"][1]["url"], timeout=10)
        assert thumb.content[:2] == b"\xff\xd8"

    first = tasks[task_ids[0]]
    other = producers[1 - submitted[task_ids[0]]]
    video = httpx.get(other.base_url + first["result"]["files"][0]["url"], timeout=30)
    assert video.status_code == 200
    out = tmp_path / "downloaded.mp4"
    out.write_bytes(video.content)
    with av.open(str(out)) as container:
        frame = next(container.decode(video=0))
        assert frame.height == TARGET_HEIGHT

    bucket, prefix = s3_media_env["MEDIA_URL"].removeprefix("s3://").split("/", 1)
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/uploads/")
    assert listing.get("KeyCount", 0) == 0
    for root in tmp_path.glob("*/media"):
        assert not any((root / task_id).exists() for task_id in task_ids)
    assert not list(tmp_path.glob("*/state/tasks.db"))
