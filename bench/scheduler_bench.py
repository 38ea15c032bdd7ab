"""Scheduler benchmarks: producer latency, task throughput, and transcoding speed.

Run from the repository root with RabbitMQ on 127.0.0.1:5672::

    .venv/bin/python bench/scheduler_bench.py all      # or: producer | throughput | transcode

Every run uses its own queue names and temporary folders and deletes its queues at the end.
The figures go to stdout as Markdown table rows for ``docs/benchmarks.md``.

- ``producer``: POST /send-emails against ``python app.py`` with ``SCHEDULER_PROCESSES`` 1
  and 2 (the second with Redis rate-limit storage), from one asyncio client process with
  keep-alive connections. Three loads: one client in a loop; 50 clients in a closed loop,
  each sending its next request as soon as the last one is answered (saturation); and an
  open loop at fixed total rates spread over 50 connections, each request due at a
  scheduled time and its latency counted from that time, so a slow server cannot hide its
  queueing by slowing the client down (coordinated omission). No worker runs, so the figure
  is the cost of validating, recording and publishing with confirms. The producer's CPU
  seconds per request (all its processes, from ``/proc``) come with the saturation row.
- ``throughput``: N tasks through RabbitMQ with 2 worker processes, from the first publish to
  the last completion. The scheduler path (task store insert, confirmed publish, tracked
  ``send_emails`` writing one ``.eml``, workers with the Procfile's io prefetch multiplier)
  is compared with a bare Celery app calling ``apply_async`` on a no-op task with Celery's
  defaults, in the same run.
- ``transcode``: frames per second of :func:`scheduler.media.transcode` against the ffmpeg
  command line doing the same transcode (H.264 veryfast CRF 23 at 480p, AAC 48 kHz stereo).
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import dataclass
from pathlib import Path

from scheduler import media
from scheduler.config import load_settings

ROOT = Path(__file__).resolve().parent.parent

BROKER = os.environ.get("BENCH_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# The io worker's prefetch multiplier in the Procfile, which the throughput run copies.
IO_PREFETCH_MULTIPLIER = "4"
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


def start(
    command: list[str], env: dict[str, str], cwd: Path, ready: str | None, port: int = 0
) -> subprocess.Popen:
    """Start ``command`` in its own process group and wait until it is ready.

    Ready means a line containing ``ready`` in its output or, when ``ready`` is None, a 200
    from ``GET /healthz`` on ``port``.
    """
    log_path = os.environ.get("BENCH_LOG")
    log = open(log_path, "a") if log_path else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE if ready else log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    if ready is None:
        while not healthy(port):
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                raise RuntimeError(f"{command} not ready")
            time.sleep(0.1)
        return process
    assert process.stdout is not None
    for line in process.stdout:
        if ready in line:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{command} not ready")
    output = process.stdout
    writer = log if log is not subprocess.DEVNULL else None
    threading.Thread(
        target=lambda: [writer.write(line) if writer else None for line in output], daemon=True
    ).start()
    return process


def healthy(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False


def stop(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def group_cpu_seconds(pgid: int) -> float:
    """Return the user and system CPU seconds of every live process in group ``pgid``."""
    ticks = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


class Client:
    """One keep-alive HTTP/1.1 connection that reconnects when the server closes it."""

    def __init__(self, port: int, request: bytes) -> None:
        self.port = port
        self.request = request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def send(self) -> int:
        """Send the request, read the whole response and return its status code."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                length = int(line[15:])
            elif line.startswith(b"connection:") and b"close" in line:
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies: list[float]
    errors: int

    def row(self, processes: int, load: str, cpu: str = "") -> str:
        p50 = percentile(self.latencies, 0.5) * 1000
        p99 = percentile(self.latencies, 0.99) * 1000
        worst = max(self.latencies) * 1000
        return (
            f"| {processes} | {load} | {self.requests / self.seconds:.0f} | {p50:.1f} ms | "
            f"{p99:.1f} ms | {worst:.1f} ms | {self.errors} | {cpu} |"
        )


def email_request(port: int) -> bytes:
    body = json.dumps({"recipients": ["ann@example.com"], "subject": "S", "body": "B"}).encode()
    head = (
        f"POST /send-emails HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def closed_loop(port: int, clients: int, per_client: int) -> LoadResult:
    """Run ``clients`` connections that each send ``per_client`` requests back to back."""
    connections = [Client(port, email_request(port)) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0

    async def run(client: Client) -> None:
        nonlocal errors
        for _ in range(per_client):
            started = time.perf_counter()
            status = await client.send()
            latencies.append(time.perf_counter() - started)
            errors += status != 202

    started = time.perf_counter()
    await asyncio.gather(*(run(client) for client in connections))
    elapsed = time.perf_counter() - started
    for client in connections:
        client.close()
    return LoadResult(len(latencies), elapsed, latencies, errors)


async def open_loop(port: int, clients: int, rate: float, seconds: float) -> LoadResult:
    """Send ``rate`` requests per second for ``seconds``, request k due at ``k / rate``.

    Request k goes out on connection ``k % clients`` at its due time, or as soon as that
    connection is free. Its latency is counted from the due time, so time spent waiting
    for a busy connection counts against the server instead of being left out.
    """
    connections = [Client(port, email_request(port)) for _ in range(clients)]
    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    origin = time.perf_counter() + 0.1

    async def run(index: int, client: Client) -> None:
        nonlocal errors
        for k in range(index, total, clients):
            due = origin + k / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await client.send()
            latencies.append(time.perf_counter() - due)
            errors += status != 202

    await asyncio.gather(*(run(i, client) for i, client in enumerate(connections)))
    elapsed = time.perf_counter() - origin
    for client in connections:
        client.close()
    return LoadResult(len(latencies), elapsed, latencies, errors)


def bench_producer(
    clients: int, requests_per_client: int, rates: list[float], seconds: float
) -> None:
    print("| processes | load | requests/s | p50 | p99 | max | errors | producer CPU per request |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for processes in (1, 2):
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        tmp = Path(tempfile.mkdtemp(prefix="bench-producer-"))
        port = free_port()
        env = {
            **environ(tmp, prefix),
            "SCHEDULER_PORT": str(port),
            "SCHEDULER_PROCESSES": str(processes),
        }
        if processes > 1:
            env["RATELIMIT_STORAGE_URL"] = REDIS
            env["SCHEDULER_RATE_LIMIT_KEY_PREFIX"] = f"{prefix}:ratelimit"
        server = start([sys.executable, "app.py"], env, ROOT / "scheduler", None, port)
        try:
            # Warm-up: broker connections, SQLite pages, every process's first requests.
            asyncio.run(closed_loop(port, clients, 10))
            single = asyncio.run(closed_loop(port, 1, 300))
            print(single.row(processes, "1 client, closed loop"))
            cpu_before = group_cpu_seconds(server.pid)
            saturated = asyncio.run(closed_loop(port, clients, requests_per_client))
            cpu = (group_cpu_seconds(server.pid) - cpu_before) / saturated.requests
            load = f"{clients} clients, closed loop"
            print(saturated.row(processes, load, f"{cpu * 1000:.2f} ms"))
            for rate in rates:
                offered = asyncio.run(open_loop(port, clients, rate, seconds))
                load = f"open loop, {rate:.0f}/s over {clients} connections"
                print(offered.row(processes, load))
        finally:
            stop(server)
            delete_queues(prefix)
            shutil.rmtree(tmp, ignore_errors=True)


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
        "--prefetch-multiplier",
        IO_PREFETCH_MULTIPLIER,
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
    parser.add_argument(
        "--requests", type=int, default=40, help="requests per client in the closed loop"
    )
    parser.add_argument(
        "--rates", default="100,200,400", help="offered rates of the open loop, requests/s"
    )
    parser.add_argument(
        "--seconds-per-rate", type=float, default=8.0, help="length of each open-loop run"
    )
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the test clip")
    args = parser.parse_args()
    print(
        f"<!-- {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()} -->"
    )
    if args.which in ("all", "producer"):
        rates = [float(rate) for rate in args.rates.split(",")]
        bench_producer(args.clients, args.requests, rates, args.seconds_per_rate)
    if args.which in ("all", "throughput"):
        bench_throughput(args.tasks)
    if args.which in ("all", "transcode"):
        bench_transcode(args.seconds)


if __name__ == "__main__":
    main()
