"""Scheduler benchmarks: producer latency, task throughput, and transcoding speed.

Run from the repository root with RabbitMQ on 127.0.0.1:5672::

    .venv/bin/python bench/scheduler_bench.py all      # or: producer | throughput | transcode

Every run uses its own queue names and temporary folders and deletes its queues at the end.
The figures go to stdout as Markdown table rows for ``docs/benchmarks.md``.

- ``producer``: POST /send-emails from 50 concurrent keep-alive clients against
  ``python app.py``; requests per second and latency percentiles. No worker runs, so the
  figure is the cost of validating, recording and publishing with confirms.
- ``throughput``: N tasks through RabbitMQ with 2 worker processes, from the first publish to
  the last completion. The scheduler path (task store insert, confirmed publish, tracked
  ``send_emails`` writing one ``.eml``) is compared with a bare Celery app calling
  ``apply_async`` on a no-op task with Celery's defaults, in the same run.
- ``transcode``: frames per second of :func:`scheduler.media.transcode` against the ffmpeg
  command line doing the same transcode (H.264 veryfast CRF 23 at 480p, AAC 48 kHz stereo).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from scheduler import media
from scheduler.config import load_settings

ROOT = Path(__file__).resolve().parent.parent

BROKER = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
HIGH_LIMIT = "1000000/second, burst 1000000"


def environ(tmp: Path, prefix: str) -> dict[str, str]:
    return {
        "CELERY_BROKER_URL": BROKER,
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{tmp / 'results.db'}",
        "SCHEDULER_STATE_DIR": str(tmp / "state"),
        "MEDIA_ROOT": str(tmp / "media"),
        "SCHEDULER_OUTBOX": str(tmp / "outbox"),
        "SCHEDULER_VIDEO_QUEUE": f"{prefix}-video",
        "SCHEDULER_IO_QUEUE": f"{prefix}-io",
        "SCHEDULER_DEAD_LETTER_QUEUE": f"{prefix}-dlq",
        "SCHEDULER_VIDEO_RATE_LIMIT": HIGH_LIMIT,
        "SCHEDULER_POST_RATE_LIMIT": HIGH_LIMIT,
        "SMTP_URL": "",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def delete_queues(prefix: str, extra: list[str] = ()) -> None:  # type: ignore[assignment]
    from kombu import Connection

    with Connection(BROKER, connect_timeout=5) as connection:
        names = [f"{prefix}-video", f"{prefix}-io", f"{prefix}-dlq", *extra]
        for name in names:
            for op in ("queue_delete", "exchange_delete"):
                # A failed delete closes the channel, so each one gets a fresh channel.
                channel = connection.channel()
                with contextlib.suppress(Exception):
                    getattr(channel, op)(name)
                with contextlib.suppress(Exception):
                    channel.close()


def start(command: list[str], env: dict[str, str], cwd: Path, ready: str) -> subprocess.Popen:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    for line in process.stdout:
        if ready in line:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{command} not ready")
    log = open(os.environ["BENCH_LOG"], "a") if os.environ.get("BENCH_LOG") else None  # noqa: SIM115
    threading.Thread(
        target=lambda: [log.write(line) if log else None for line in process.stdout], daemon=True
    ).start()
    return process


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


def bench_producer(clients: int, requests_per_client: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-producer-"))
    port = free_port()
    env = {**environ(tmp, prefix), "SCHEDULER_PORT": str(port)}
    server = start([sys.executable, "app.py"], env, ROOT / "scheduler", "Running on")
    body = json.dumps({"recipients": ["ann@example.com"], "subject": "S", "body": "B"})
    latencies: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        barrier.wait()
        for _ in range(requests_per_client):
            started = time.perf_counter()
            connection.request("POST", "/send-emails", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            if response.status != 202:
                errors.append(response.status)
        connection.close()
        with lock:
            latencies.extend(mine)

    try:
        # Warm-up: connection pool, SQLite file, queue declaration.
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(300):
            warm.request("POST", "/send-emails", body, {"Content-Type": "application/json"})
            warm.getresponse().read()
        warm.close()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        stop(server)
        delete_queues(prefix)
        shutil.rmtree(tmp, ignore_errors=True)
    total = len(latencies)
    print(
        f"| producer POST /send-emails | {clients} clients, {total} requests | "
        f"{total / elapsed:.0f} req/s | p50 {percentile(latencies, 0.5) * 1000:.1f} ms | "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms | errors {len(errors)} |"
    )


BARE_APP = """
from celery import Celery
import os
app = Celery("bare", broker=os.environ["BARE_BROKER"], backend="rpc://")
app.conf.task_default_queue = os.environ["BARE_QUEUE"]
@app.task(name="bare.noop")
def noop(i):
    return i
"""


def bench_throughput(tasks: int) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))
    env = environ(tmp, prefix)
    try:
        ours = run_scheduler_tasks(env, tasks)
        bare = run_bare_tasks(tmp, prefix, tasks)
    finally:
        delete_queues(prefix, [f"{prefix}-bare"])
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"| throughput, 2 workers | {tasks} tasks | scheduler {ours:.0f} tasks/s | "
        f"bare Celery {bare:.0f} tasks/s | ratio {ours / bare:.2f} |"
    )


SUBMITTERS = 8


def run_in_threads(submit: Callable[[int], None], tasks: int) -> None:
    """Split ``tasks`` submissions over SUBMITTERS threads, as concurrent HTTP requests do."""
    share = tasks // SUBMITTERS
    counts = [share + (1 if i < tasks % SUBMITTERS else 0) for i in range(SUBMITTERS)]
    threads = [threading.Thread(target=submit, args=(count,)) for count in counts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def run_scheduler_tasks(env: dict[str, str], tasks: int) -> float:
    from scheduler.celery_app import make_celery
    from scheduler.publisher import Publisher
    from scheduler.taskstore import TaskStore

    settings = load_settings(environ=env)
    store = TaskStore(settings.task_db)
    publisher = Publisher(make_celery(settings, producer=True), settings)
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.celery_app",
        "worker",
        "-Q",
        settings.io_queue,
        "-P",
        "prefork",
        "-c",
        "1",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=info",
    ]
    workers = [
        start([*command, "--hostname", f"w{i}@%h"], env, ROOT / "scheduler", "ready.")
        for i in range(2)
    ]
    try:
        params = {"recipients": ["ann@example.com"], "subject": "S", "body": "B"}

        def submit(count: int) -> None:
            for _ in range(count):
                record, _ = store.insert(str(uuid.uuid4()), "send-emails", params)
                publisher.publish(record)
                store.confirm_queued(record.id)

        started = time.perf_counter()
        run_in_threads(submit, tasks)
        print(f"<!-- scheduler: submitted in {time.perf_counter() - started:.2f} s -->")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = store.count("succeeded")
            if done >= tasks:
                break
            time.sleep(0.01)
        return tasks / (time.perf_counter() - started)
    finally:
        for worker in workers:
            stop(worker)


def run_bare_tasks(tmp: Path, prefix: str, tasks: int) -> float:
    (tmp / "bare_app.py").write_text(BARE_APP)
    env = {"BARE_BROKER": BROKER, "BARE_QUEUE": f"{prefix}-bare", "PYTHONPATH": str(tmp)}
    os.environ.update(env)
    sys.path.insert(0, str(tmp))
    import bare_app  # type: ignore[import-not-found]

    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bare_app.app",
        "worker",
        "-P",
        "prefork",
        "-c",
        "1",
        "--without-mingle",
        "--without-gossip",
        "--loglevel=info",
    ]
    workers = [start([*command, "--hostname", f"b{i}@%h"], env, tmp, "ready.") for i in range(2)]
    try:
        results = []

        def submit(count: int) -> None:
            for i in range(count):
                results.append(bare_app.noop.apply_async((i,)))

        started = time.perf_counter()
        run_in_threads(submit, tasks)
        print(f"<!-- bare Celery: submitted in {time.perf_counter() - started:.2f} s -->")
        for result in results:
            result.get(timeout=300)
        return tasks / (time.perf_counter() - started)
    finally:
        for worker in workers:
            stop(worker)


def bench_transcode(seconds: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-transcode-"))
    try:
        clip = tmp / "clip.mp4"
        media.generate_clip(clip, seconds=seconds, width=1280, height=720, fps=30)
        info = media.probe(clip)
        runs = []
        for _ in range(3):
            out = tmp / f"ours-{len(runs)}"
            started = time.perf_counter()
            media.transcode(clip, out, height=480, thumbnails=3, info=info)
            runs.append(time.perf_counter() - started)
        ours = info.frames / statistics.median(runs)

        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            print(
                f"| transcode 720p to 480p | {info.frames} frames | PyAV {ours:.0f} fps | "
                "ffmpeg not installed |"
            )
            return
        cli_runs = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run(
                [
                    ffmpeg,
                    "-v",
                    "error",
                    "-y",
                    "-i",
                    str(clip),
                    "-vf",
                    "scale=-2:480",
                    "-c:v",
                    "libx264",
                    "-preset",
                    "veryfast",
                    "-crf",
                    "23",
                    "-pix_fmt",
                    "yuv420p",
                    "-c:a",
                    "aac",
                    "-ar",
                    "48000",
                    "-ac",
                    "2",
                    str(tmp / "cli.mp4"),
                ],
                check=True,
            )
            cli_runs.append(time.perf_counter() - started)
        cli = info.frames / statistics.median(cli_runs)
        print(
            f"| transcode 720p to 480p | {info.frames} frames | PyAV {ours:.0f} fps | "
            f"ffmpeg CLI {cli:.0f} fps | ratio {ours / cli:.2f} |"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Scheduler benchmarks.")
    parser.add_argument("which", choices=["all", "producer", "throughput", "transcode"])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=40, help="requests per client")
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test clip")
    args = parser.parse_args()
    print(
        f"<!-- {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()} -->"
    )
    if args.which in ("all", "producer"):
        bench_producer(args.clients, args.requests)
    if args.which in ("all", "throughput"):
        bench_throughput(args.tasks)
    if args.which in ("all", "transcode"):
        bench_transcode(args.seconds)


if __name__ == "__main__":
    main()
