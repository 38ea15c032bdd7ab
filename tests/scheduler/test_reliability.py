"""A worker killed with SIGKILL mid-task loses nothing: the task completes on another worker.

This runs on RabbitMQ only. The same 20 trials on the embedded SQLite broker are in
test_sqlite_broker_celery.py, with a task that holds until the test releases it.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler import media
from scheduler.taskstore import TaskStore
from tests.scheduler.conftest import make_client, upload, wait_for_state

TRIALS = 20
# Attempts whose task ended before the kill landed are repeated, up to this bound.
MAX_ATTEMPTS = 30


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "short.mp4"
    media.generate_clip(path, seconds=2.0, width=640, height=360)
    return path


@pytest.mark.slow
def test_sigkill_worker_loses_nothing(rabbit_env, start_worker, short_clip: Path) -> None:
    # A slow x264 preset stretches a 2-second clip to about a second of work, so the kill
    # lands mid-task while the whole test stays short.
    env = {**rabbit_env, "VIDEO_X264_PRESET": "slower"}
    settings, _, client = make_client(env)
    store = TaskStore(settings.task_db)
    queues = [env["SCHEDULER_VIDEO_QUEUE"]]
    workers = {}
    for name in ("a", "b"):
        worker = start_worker(env, queues, name=name, wait=False)
        workers[worker.name] = worker
    for worker in workers.values():
        worker.wait_ready()

    lost = []
    killed_mid_task = 0
    for attempt in range(MAX_ATTEMPTS):
        if killed_mid_task == TRIALS:
            break
        task_id = upload(client, short_clip).get_json()["task_id"]
        running = wait_for_state(client, task_id, {"progress", "succeeded", "failed"}, 30)
        victim_host = store.get(task_id).worker
        victim = workers.pop(victim_host.split("@")[0])
        victim.kill()
        killed_at = time.time()
        replacement = start_worker(env, queues, name="r", wait=False)
        workers[replacement.name] = replacement

        final = wait_for_state(client, task_id, {"succeeded", "failed", "cancelled"}, 60)
        record = store.get(task_id)
        replacement.wait_ready()
        if running["state"] != "progress" or record.finished_at < killed_at:
            # The task ended before the kill landed, so this attempt tests nothing.
            continue
        killed_mid_task += 1
        if final["state"] != "succeeded" or record.worker == victim_host:
            lost.append((attempt, final["state"], record.worker))
        assert record.deliveries == 2

    assert killed_mid_task == TRIALS
    assert lost == []
