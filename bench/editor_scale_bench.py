"""Edit-to-peer latency of the editor with two processes against one, side by side in one run.

Run from the repository root, with Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432
(database ``test``, trust authentication)::

    .venv/bin/python bench/editor_scale_bench.py            # 3 rounds, about 2 minutes
    .venv/bin/python bench/editor_scale_bench.py --rounds 1 --peers 10

Three deployments are measured, in turn within each round so that drift of the machine hits
them alike:

- ``sqlite``: one process with the default SQLite storage and no message queue (reference);
- ``one``: one process on PostgreSQL with the Redis message queue;
- ``two``: two processes on PostgreSQL sharing the Redis message queue, the peers split
  evenly between them and the typist on the first.

In each, ``--peers`` clients join one session and a typist client inserts one character
``--rate`` times per second for ``--seconds`` seconds. Each peer records when every update
arrives; the latency of an edit at a peer is that time minus the time the typist sent it. The
peers run in ``--workers`` separate processes, so that the clients' own Python code adds little
queueing; times come from ``time.perf_counter_ns``, which reads ``CLOCK_MONOTONIC`` and is
comparable across processes on Linux.

Every deployment uses its own PostgreSQL schema and Redis channel, dropped afterwards. Results
go to stdout as a Markdown table and to ``bench/results/editor-scale-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DEPLOYMENTS = ("sqlite", "one", "two")
WARMUP_EDITS = 20
START_TIMEOUT = 30.0

SERVER_ENV = {
    "CODECOLLAB_HTTP_RATE_LIMIT": "1000000/minute, burst 100000",
    "CODECOLLAB_CONNECT_RATE_LIMIT": "1000000/minute, burst 100000",
    "CODECOLLAB_SOCKET_RATE_LIMIT": "1000000/second, burst 1000000",
    "CODECOLLAB_LOG_LEVEL": "WARNING",
}


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_editor(extra_env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start one editor process and wait until it responds; return it and its URL."""
    port = free_port()
    env = {
        **os.environ,
        **SERVER_ENV,
        "CODECOLLAB_HOST": "127.0.0.1",
        "CODECOLLAB_PORT": str(port),
        **extra_env,
    }
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py"],
            cwd=REPO_ROOT / "codecollab",
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"editor exited with {process.returncode}; see {log_path}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"editor did not respond within {START_TIMEOUT} s; see {log_path}")


def stop_editor(process: subprocess.Popen[bytes]) -> None:
    """Stop an editor with SIGTERM and wait for it."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def drop_cluster_state(schema: str, channel: str) -> None:
    """Drop the schema and Redis keys of one deployment."""
    import psycopg
    import redis

    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{channel}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def handle_messages_in_order(client: Any) -> None:
    """Make a python-socketio client handle received messages one at a time, in order.

    python-engineio's client starts a thread per message, so a binary event's attachment can be
    decoded before its placeholder, which fails with ``ValueError``. The server writes both
    frames with one call, which makes that race frequent.
    """
    trigger = client.eio._trigger_event

    def in_order(event: str, *args: Any, run_async: bool = False, **kwargs: Any) -> Any:
        return trigger(event, *args, run_async=False, **kwargs)

    client.eio._trigger_event = in_order


def peer_worker(urls: list[str], session: str, expected: int, ready: Any, results: Any) -> None:
    """Connect one peer per URL, record arrival times of ``expected`` updates, report them."""
    import socketio

    sys.path.insert(0, str(REPO_ROOT))
    from codecollab.yprotocol import SyncMessageType, decode_sync_message

    arrivals: list[list[int]] = [[] for _ in urls]
    clients = []
    for index, url in enumerate(urls):
        client = socketio.Client(reconnection=False, serializer="msgpack")
        handle_messages_in_order(client)

        def on_sync(data: bytes, times: list[int] = arrivals[index]) -> None:
            received = time.perf_counter_ns()
            if decode_sync_message(data).type is SyncMessageType.UPDATE:
                times.append(received)

        client.on("sync", on_sync)
        client.connect(
            url,
            auth={"session": session, "clientId": f"peer-{os.getpid()}-{index}", "name": "peer"},
            transports=["websocket"],
            wait_timeout=10,
        )
        clients.append((client, url))
    ready.put(len(clients))

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(len(times) < expected for times in arrivals):
        time.sleep(0.05)
    results.put([(url, times) for (_client, url), times in zip(clients, arrivals, strict=True)])
    for client, _url in clients:
        client.disconnect()


@dataclass
class Measurement:
    """Latencies of one deployment in one round, in milliseconds."""

    deployment: str
    round: int
    samples: int
    missing: int
    p50: float
    p95: float
    p99: float
    max: float
    # For ``two``: the same figures for peers on the typist's process and on the other one.
    local_p99: float | None = None
    remote_p99: float | None = None


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def run_deployment(deployment: str, round_index: int, args: argparse.Namespace) -> Measurement:
    """Start one deployment, type, collect the latencies and stop it."""
    import socketio
    from pycrdt import Doc, Text

    from codecollab.yprotocol import SyncMessageType, encode_sync_message

    tag = f"bench_{uuid.uuid4().hex[:10]}"
    extra = {"CODECOLLAB_DATABASE_PATH": str(Path(args.workdir) / f"{tag}.db")}
    if deployment != "sqlite":
        extra |= {
            "CODECOLLAB_DATABASE_URL": POSTGRES_URL,
            "CODECOLLAB_DATABASE_SCHEMA": tag,
            "CODECOLLAB_MESSAGE_QUEUE": REDIS_URL,
            "CODECOLLAB_CLUSTER_CHANNEL": tag,
        }
    count = 2 if deployment == "two" else 1
    servers = [start_editor(extra, Path(args.workdir) / f"{tag}-{i}.log") for i in range(count)]
    urls = [url for _process, url in servers]
    session = f"bench-{uuid.uuid4().hex}"
    edits = WARMUP_EDITS + int(args.rate * args.seconds)

    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    peer_urls = [urls[i % len(urls)] for i in range(args.peers)]
    groups = [peer_urls[w :: args.workers] for w in range(args.workers)]
    workers = [
        context.Process(target=peer_worker, args=(group, session, edits, ready, results))
        for group in groups
        if group
    ]
    try:
        for worker in workers:
            worker.start()
        connected = sum(ready.get(timeout=60) for _ in workers)
        assert connected == args.peers

        typist = socketio.Client(reconnection=False, serializer="msgpack")
        handle_messages_in_order(typist)
        typist.connect(
            urls[0],
            auth={"session": session, "clientId": "typist", "name": "typist"},
            transports=["websocket"],
            wait_timeout=10,
        )
        doc = Doc(client_id=4242)
        text = doc.get("content", type=Text)
        sent: list[int] = []
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        for _ in range(edits):
            state = doc.get_state()
            text.insert(0, "x")
            message = encode_sync_message(SyncMessageType.UPDATE, doc.get_update(state))
            sent.append(time.perf_counter_ns())
            typist.emit("sync", message)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

        collected = [results.get(timeout=150) for _ in workers]
        typist.disconnect()
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
        for process, _url in servers:
            stop_editor(process)
        if deployment != "sqlite":
            drop_cluster_state(tag, tag)

    latencies: list[float] = []
    by_process: dict[str, list[float]] = {url: [] for url in urls}
    missing = 0
    for group in collected:
        for url, times in group:
            missing += max(0, edits - len(times))
            for index in range(WARMUP_EDITS, min(edits, len(times))):
                latency = (times[index] - sent[index]) / 1e6
                latencies.append(latency)
                by_process[url].append(latency)

    measurement = Measurement(
        deployment,
        round_index,
        len(latencies),
        missing,
        percentile(latencies, 0.50),
        percentile(latencies, 0.95),
        percentile(latencies, 0.99),
        max(latencies),
    )
    if deployment == "two":
        measurement.local_p99 = percentile(by_process[urls[0]], 0.99)
        measurement.remote_p99 = percentile(by_process[urls[1]], 0.99)
    return measurement


def main() -> None:
    """Parse the options, run every round and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of all deployments")
    parser.add_argument("--peers", type=int, default=20, help="peer clients in the session")
    parser.add_argument("--workers", type=int, default=4, help="processes running the peers")
    parser.add_argument("--rate", type=float, default=20.0, help="typist's edits per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured typing time")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))

    measurements: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="editor-scale-bench-") as workdir:
        args.workdir = workdir
        for round_index in range(args.rounds):
            for deployment in DEPLOYMENTS:
                measurement = run_deployment(deployment, round_index, args)
                measurements.append(measurement)
                print(
                    f"round {round_index} {deployment:>6}: p50 {measurement.p50:.2f} ms, "
                    f"p99 {measurement.p99:.2f} ms ({measurement.samples} samples, "
                    f"{measurement.missing} missing)",
                    file=sys.stderr,
                )

    print_table(measurements, args)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"editor-scale-{stamp}.json"
    path.write_text(
        json.dumps(
            {
                "machine": machine_description(),
                "options": {k: v for k, v in vars(args).items() if k != "workdir"},
                "measurements": [asdict(m) for m in measurements],
            },
            indent=2,
        )
    )
    print(f"\nresults written to {path.relative_to(REPO_ROOT)}")


def print_table(measurements: list[Measurement], args: argparse.Namespace) -> None:
    """Print the median over rounds of each figure, and the p99 added by the second process."""

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    rows = {d: [m for m in measurements if m.deployment == d] for d in DEPLOYMENTS}
    print(
        f"\n{args.peers} peers, typist at {args.rate:g} edits/s for {args.seconds:g} s, "
        f"{args.rounds} rounds (median of rounds), 1-minute load average at the end "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    print("| deployment | p50 ms | p95 ms | p99 ms | max ms | samples | missing |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for deployment, group in rows.items():
        print(
            f"| {deployment} | {median([m.p50 for m in group]):.2f} | "
            f"{median([m.p95 for m in group]):.2f} | {median([m.p99 for m in group]):.2f} | "
            f"{median([m.max for m in group]):.2f} | {sum(m.samples for m in group)} | "
            f"{sum(m.missing for m in group)} |"
        )
    two = rows["two"]
    one = rows["one"]
    added = [t.p99 - o.p99 for t, o in zip(two, one, strict=True)]
    print(
        f"\np99 added by the second process (two - one, per round): "
        f"{', '.join(f'{value:+.2f}' for value in added)} ms; median {median(added):+.2f} ms"
    )
    print(
        f"two processes, p99 at peers on the typist's process: "
        f"{median([m.local_p99 or 0.0 for m in two]):.2f} ms; on the other process: "
        f"{median([m.remote_p99 or 0.0 for m in two]):.2f} ms"
    )


def machine_description() -> dict[str, str]:
    """Return the CPU, core count, OS and versions of the run."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "os": platform.platform(),
        # Other work on the machine inflates tail latencies; the 1-minute load is recorded.
        "load_average_1min_at_end": f"{os.getloadavg()[0]:.1f}",
    }


if __name__ == "__main__":
    main()
