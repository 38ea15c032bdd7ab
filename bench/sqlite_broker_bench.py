"""Compare the SQLite broker with kombu's filesystem and SQLAlchemy transports and RabbitMQ.

Run from the repository root::

    .venv/bin/python bench/sqlite_broker_bench.py            # all transports
    .venv/bin/python bench/sqlite_broker_bench.py --messages 2000 --only sqlite filesystem

For each transport, in one run and in separate processes:

- throughput: one producer publishes ``--messages`` messages as fast as it can while one consumer
  receives and acks each; messages/s is the count over the time from the first publish to the
  last ack. The consumer's CPU time from its start to the last ack, per message, varies less
  than messages/s on a shared machine.
- latency: the producer publishes ``--latency-messages`` messages at ``--rate`` per second; the
  consumer records the time from publish to receipt (p50, p95, max, in ms).
- idle CPU: the consumer waits on an empty queue for ``--idle-seconds``; its CPU time over that
  wall time.
- Celery worker idle CPU (SQLite broker only): a worker with one prefork pool process, no tasks,
  for ``--worker-idle-seconds``; the CPU time of the worker and its pool process over that wall
  time.

The SQLite broker with ``synchronous=NORMAL`` runs twice: with kombu's blocking
``drain_events`` loop, as a plain kombu consumer or a gevent worker uses it, and on a kombu hub
(event loop), as a Celery worker with the prefork, threads or solo pool uses it.

The virtual transports (SQLite, filesystem, SQLAlchemy) all poll every 50 ms here; kombu's
default for the other two is 1 s, which would add up to a second of latency. RabbitMQ pushes
messages, so it has no polling interval. RabbitMQ is skipped when 127.0.0.1:5672 is closed.
Every run uses fresh files in a temporary folder and a unique RabbitMQ queue, deleted at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import platform
import queue as queue_module
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import celery
import kombu
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from scheduler.sqlite_broker import register  # noqa: E402

POLLING_INTERVAL = 0.05
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
DEADLINE = 300.0
# Runs per transport before it is reported as failed; kombu's filesystem consumer can crash on
# a half-written message file.
ATTEMPTS = 3


@dataclass(frozen=True)
class Target:
    """One broker under test: its name, URL and kombu transport options."""

    name: str
    url: str
    options: dict[str, Any]
    event_loop: bool = False  # consume on a kombu hub instead of blocking drain_events()


def make_targets(folder: Path, names: list[str]) -> list[Target]:
    spool = folder / "filesystem"
    spool.mkdir(parents=True)
    all_targets = [
        Target(
            "sqlite (synchronous=NORMAL, default)", f"sqlite:///{folder / 'normal.sqlite3'}", {}
        ),
        Target(
            "sqlite (synchronous=NORMAL, event loop)",
            f"sqlite:///{folder / 'evented.sqlite3'}",
            {},
            event_loop=True,
        ),
        Target(
            "sqlite (synchronous=FULL)",
            f"sqlite:///{folder / 'full.sqlite3'}",
            {"synchronous": "FULL"},
        ),
        Target(
            "kombu filesystem",
            "filesystem://",
            {
                "data_folder_in": str(spool),
                "data_folder_out": str(spool),
                "control_folder": str(folder / "filesystem-control"),
            },
        ),
        Target("kombu sqlalchemy (SQLite)", f"sqla+sqlite:///{folder / 'sqla.sqlite3'}", {}),
        Target("rabbitmq (loopback)", RABBITMQ_URL, {}),
    ]
    prefixes = {"sqlite": "sqlite", "filesystem": "kombu filesystem"}
    prefixes |= {"sqlalchemy": "kombu sqlalchemy", "rabbitmq": "rabbitmq"}
    wanted = [prefixes[name] for name in names]
    return [t for t in all_targets if any(t.name.startswith(w) for w in wanted)]


def entities(queue_name: str) -> tuple[Exchange, Queue]:
    exchange = Exchange(queue_name, "direct", durable=True)
    return exchange, Queue(queue_name, exchange, queue_name, durable=True)


def connect(target: Target) -> Connection:
    register()
    conn = Connection(target.url, transport_options=dict(target.options))
    if not target.url.startswith("amqp"):
        # Set on the transport because the SQLAlchemy transport hands every transport option
        # to create_engine(), which rejects polling_interval.
        conn.transport.polling_interval = POLLING_INTERVAL
    return conn


def consume(
    target: Target, queue_name: str, count: int, ready: Any, control: Any, results: Any
) -> None:
    """Receive ``count`` messages, then measure idle CPU for the seconds read from ``control``."""
    exchange, queue = entities(queue_name)
    latencies: list[float] = []
    last = [0.0]

    def on_message(body: dict[str, Any], message: Any) -> None:
        now = time.time()
        latencies.append(now - body["t"])
        last[0] = now
        message.ack()

    with connect(target) as conn, Consumer(conn, [queue], callbacks=[on_message]) as consumer:
        consumer.qos(prefetch_count=10)
        wait = hub_waiter(conn) if target.event_loop else blocking_waiter(conn)
        ready.set()
        cpu_start = cpu_seconds()
        deadline = time.monotonic() + DEADLINE
        while len(latencies) < count and time.monotonic() < deadline:
            wait(1.0)
        busy_cpu = cpu_seconds() - cpu_start

        idle_seconds = control.get()
        cpu_before = cpu_seconds()
        idle_end = time.monotonic() + idle_seconds
        while time.monotonic() < idle_end:
            wait(max(0.01, idle_end - time.monotonic()))
        idle_cpu = (cpu_seconds() - cpu_before) / idle_seconds
    results.put((latencies, last[0], busy_cpu, idle_cpu))


def cpu_seconds() -> float:
    """Return the user and system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def blocking_waiter(conn: Connection) -> Callable[[float], None]:
    """Return a function that delivers messages for up to its argument in seconds."""

    def wait(seconds: float) -> None:
        with contextlib.suppress(TimeoutError, socket.timeout):
            conn.drain_events(timeout=seconds)

    return wait


def hub_waiter(conn: Connection) -> Callable[[float], None]:
    """Like :func:`blocking_waiter`, but turns a kombu hub, as Celery's worker does."""
    hub = Hub()
    conn.transport.register_with_event_loop(conn.connection, hub)
    loop = hub.create_loop()

    def wait(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            next(loop)

    return wait


def produce(target: Target, queue_name: str, count: int, rate: float | None) -> float:
    """Publish ``count`` messages, paced at ``rate`` per second when given; return the start."""
    exchange, queue = entities(queue_name)
    with connect(target) as conn:
        conn.connect()
        producer = Producer(conn)
        queue(producer.channel).declare()
        start = time.time()
        for n in range(count):
            if rate:
                time.sleep(max(0.0, start + n / rate - time.time()))
            producer.publish(
                {"t": time.time(), "n": n, "pad": "x" * 200},
                exchange=exchange,
                routing_key=queue_name,
                declare=[queue],
            )
    return start


def run_phase(
    target: Target, count: int, rate: float | None, idle_seconds: float
) -> tuple[float, list[float], float, float]:
    """Return messages/s, latencies in seconds, consumer CPU seconds per message, and idle CPU
    as a fraction of one core."""
    ctx = multiprocessing.get_context("spawn")
    queue_name = f"bench-{uuid.uuid4().hex[:10]}"
    ready = ctx.Event()
    control = ctx.Queue()
    results = ctx.Queue()
    consumer = ctx.Process(
        target=consume, args=(target, queue_name, count, ready, control, results)
    )
    consumer.start()
    if not ready.wait(60):
        consumer.kill()
        raise RuntimeError(f"{target.name}: the consumer did not start within 60 s")
    start = produce(target, queue_name, count, rate)
    control.put(idle_seconds)
    try:
        latencies, last, busy_cpu, idle_cpu = wait_result(consumer, results)
    finally:
        consumer.join(30)
        cleanup(target, queue_name)
    if len(latencies) < count:
        raise RuntimeError(f"{target.name}: only {len(latencies)} of {count} messages arrived")
    per_second = count / (last - start)
    return per_second, latencies, busy_cpu / count, idle_cpu


class ConsumerCrashed(RuntimeError):
    """The consumer process exited before it sent its figures."""


def wait_result(consumer: Any, results: Any) -> Any:
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            return results.get(timeout=1)
        except queue_module.Empty:
            if not consumer.is_alive():
                raise ConsumerCrashed(f"exit code {consumer.exitcode}") from None
    consumer.kill()
    raise ConsumerCrashed(f"no result within {DEADLINE:.0f} s")


def cleanup(target: Target, queue_name: str) -> None:
    if not target.url.startswith("amqp"):
        return
    with Connection(target.url) as conn:
        channel = conn.channel()
        channel.queue_delete(queue_name)
        channel.exchange_delete(queue_name)


WORKER_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
from celery import Celery
from scheduler.sqlite_broker import register
register()
app = Celery("bench", broker={url!r})
app.conf.broker_transport_options = {{"polling_interval": {interval!r}}}
app.worker_main(["worker", "-P", "prefork", "-c", "1", "-Q", "bench-idle", "--loglevel=WARNING",
                 "--without-mingle", "--without-gossip", "--without-heartbeat"])
"""
# Seconds a started worker gets to declare its queues and settle before the measurement.
WORKER_SETTLE = 5.0


def process_tree_cpu(pid: int) -> float:
    """Return the CPU seconds used so far by process ``pid`` and its direct children."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    ticks = 0
    for each in pids:
        with contextlib.suppress(OSError):
            # utime and stime follow the command name, which is in parentheses.
            fields = Path(f"/proc/{each}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def worker_idle_cpu(folder: Path, seconds: float) -> float:
    """Return the idle CPU of a Celery prefork worker on the SQLite broker, as a core fraction."""
    url = f"sqlite:///{folder / 'worker.sqlite3'}"
    script = WORKER_SCRIPT.format(repo=str(REPO_ROOT), url=url, interval=POLLING_INTERVAL)
    # stdout carries only Celery's start-up banner; warnings and errors go to stderr.
    worker = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=folder, stdout=subprocess.DEVNULL
    )
    try:
        time.sleep(WORKER_SETTLE)
        if worker.poll() is not None:
            raise RuntimeError(f"the Celery worker exited with code {worker.returncode}")
        cpu_before, start = process_tree_cpu(worker.pid), time.monotonic()
        time.sleep(seconds)
        cpu_after, end = process_tree_cpu(worker.pid), time.monotonic()
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return (cpu_after - cpu_before) / (end - start)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def rabbitmq_up() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000, help="throughput messages")
    parser.add_argument("--latency-messages", type=int, default=300, help="paced messages")
    parser.add_argument("--rate", type=float, default=50.0, help="paced messages per second")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle CPU window")
    parser.add_argument(
        "--worker-idle-seconds",
        type=float,
        default=10.0,
        help="idle CPU window of the Celery worker on the SQLite broker; 0 skips it",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        default=["sqlite", "filesystem", "sqlalchemy", "rabbitmq"],
        choices=["sqlite", "filesystem", "sqlalchemy", "rabbitmq"],
        help="transports to run",
    )
    args = parser.parse_args(argv)
    if "rabbitmq" in args.only and not rabbitmq_up():
        print("RabbitMQ is not listening on 127.0.0.1:5672; skipping it", file=sys.stderr)
        args.only.remove("rabbitmq")

    rows = []
    with tempfile.TemporaryDirectory(prefix="sqlite-broker-bench-") as folder:
        names = [target.name for target in make_targets(Path(folder) / "names", args.only)]
        for index, name in enumerate(names):
            print(f"running {name} ...", file=sys.stderr)
            crashes = 0
            for attempt in range(ATTEMPTS):
                # Fresh files per attempt, so a crashed run leaves no backlog behind.
                attempt_folder = Path(folder) / f"{index}-{attempt}"
                attempt_folder.mkdir()
                target = make_targets(attempt_folder, args.only)[index]
                try:
                    per_second, _, cpu_per_message, _ = run_phase(target, args.messages, None, 0.01)
                    _, latencies, _, idle_cpu = run_phase(
                        target, args.latency_messages, args.rate, args.idle_seconds
                    )
                    break
                except ConsumerCrashed as exc:
                    crashes += 1
                    print(f"{target.name}: consumer crashed ({exc}); retrying", file=sys.stderr)
            else:
                rows.append((name, float("nan"), 0, 0, 0, 0, 0, crashes))
                continue
            rows.append(
                (
                    target.name,
                    per_second,
                    cpu_per_message * 1e6,
                    statistics.median(latencies) * 1000,
                    percentile(latencies, 0.95) * 1000,
                    max(latencies) * 1000,
                    idle_cpu * 100,
                    crashes,
                )
            )
        worker_cpu = None
        if "sqlite" in args.only and args.worker_idle_seconds > 0:
            print("running a Celery worker on the SQLite broker ...", file=sys.stderr)
            worker_folder = Path(folder) / "worker"
            worker_folder.mkdir()
            worker_cpu = worker_idle_cpu(worker_folder, args.worker_idle_seconds)

    print(
        f"\nPython {platform.python_version()}, kombu {kombu.__version__}, "
        f"SQLite {__import__('sqlite3').sqlite_version}, {platform.machine()}, "
        f"{multiprocessing.cpu_count()} CPUs; {args.messages} messages for throughput, "
        f"{args.latency_messages} at {args.rate:.0f}/s for latency\n"
    )
    print(
        "| transport | messages/s | consumer CPU µs/message | latency p50 ms | p95 ms | max ms "
        "| idle CPU % | consumer crashes |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, per_second, cpu_us, p50, p95, worst, idle, crashes in rows:
        print(
            f"| {name} | {per_second:.0f} | {cpu_us:.0f} | {p50:.1f} | {p95:.1f} | {worst:.1f} "
            f"| {idle:.1f} | {crashes} |"
        )

    by_name = {row[0]: row[1] for row in rows}
    print()
    for ours in [name for name in by_name if name.startswith("sqlite")]:
        for other in [name for name in by_name if not name.startswith("sqlite")]:
            print(f"{ours} / {other}: {by_name[ours] / by_name[other]:.2f}x messages/s")
    if worker_cpu is not None:
        print(
            f"\nCelery {celery.__version__} worker on the SQLite broker (prefork, 1 pool process), "
            f"idle for {args.worker_idle_seconds:.0f} s: {worker_cpu * 100:.1f} % of a core"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
