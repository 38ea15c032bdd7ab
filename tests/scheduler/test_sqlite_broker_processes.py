"""Producers and consumers in separate processes share one SQLite broker file.

Each consumer appends the id of every message it receives to its own file before acking it, with
one unbuffered write per id, so the record survives a SIGKILL of the consumer.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from scheduler.sqlite_broker import register

MESSAGES = 10_000
PRODUCERS = 4
CONSUMERS = 4
DEADLINE = 120.0

EXCHANGE = Exchange("load", "direct")
QUEUE = Queue("load", EXCHANGE, "load")

# Durability across power loss is not under test here; NORMAL keeps the run short on CI.
OPTIONS = {"polling_interval": 0.01, "synchronous": "NORMAL", "visibility_timeout": 2.0}


def produce(url: str, first: int, count: int) -> None:
    register()
    with Connection(url, transport_options=OPTIONS) as conn:
        producer = Producer(conn)
        producer.declare()
        for n in range(first, first + count):
            producer.publish({"id": n}, exchange=EXCHANGE, routing_key="load", declare=[QUEUE])


def consume(url: str, record: str, stop: multiprocessing.synchronize.Event) -> None:
    register()
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_message(body: dict, message) -> None:
        os.write(fd, f"{body['id']}\n".encode())
        message.ack()

    with (
        Connection(url, transport_options=OPTIONS) as conn,
        Consumer(conn, [QUEUE], callbacks=[on_message], prefetch_count=10),
    ):
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
    os.close(fd)


def read_ids(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def run_load(
    tmp_path: Path, kill_one_consumer: bool
) -> tuple[list[int], list[int], set[int], list[int]]:
    """Run the producers and consumers; return all ids, exit codes, ids of the killed one."""
    ctx = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    stop = ctx.Event()
    records = [tmp_path / f"consumer-{n}.ids" for n in range(CONSUMERS)]
    consumers = [ctx.Process(target=consume, args=(url, str(record), stop)) for record in records]
    share = MESSAGES // PRODUCERS
    producers = [
        ctx.Process(target=produce, args=(url, n * share, share)) for n in range(PRODUCERS)
    ]
    for process in consumers + producers:
        process.start()

    killed: set[int] = set()
    deadline = time.monotonic() + DEADLINE
    try:
        while time.monotonic() < deadline:
            received = sum(len(read_ids(record)) for record in records)
            if kill_one_consumer and not killed and received >= MESSAGES // 4:
                os.kill(consumers[0].pid, signal.SIGKILL)
                consumers[0].join(5)
                killed = set(read_ids(records[0])) or {-1}
            if len(set().union(*(read_ids(record) for record in records))) >= MESSAGES:
                break
            time.sleep(0.2)
    finally:
        stop.set()
        for process in producers + consumers:
            process.join(15)
            if process.is_alive():
                process.kill()
    all_ids = [n for record in records for n in read_ids(record)]
    exit_codes = [process.exitcode for process in producers + consumers]
    return all_ids, exit_codes, killed, read_ids(records[0])


@pytest.mark.slow
def test_processes_deliver_each_once(tmp_path: Path) -> None:
    ids, exit_codes, _, _ = run_load(tmp_path, kill_one_consumer=False)
    counts = Counter(ids)
    assert set(counts) == set(range(MESSAGES))
    assert [n for n, count in counts.items() if count > 1] == []
    assert exit_codes == [0] * (PRODUCERS + CONSUMERS)


@pytest.mark.slow
def test_processes_survive_consumer_kill(tmp_path: Path) -> None:
    ids, exit_codes, killed_ids, _ = run_load(tmp_path, kill_one_consumer=True)
    counts = Counter(ids)
    duplicates = {n for n, count in counts.items() if count > 1}
    assert killed_ids
    assert set(counts) == set(range(MESSAGES))
    # Only a message the killed consumer received and did not ack may arrive twice.
    assert duplicates <= killed_ids
    assert exit_codes[:PRODUCERS] == [0] * PRODUCERS
    assert exit_codes[PRODUCERS] == -signal.SIGKILL
    assert exit_codes[PRODUCERS + 1 :] == [0] * (CONSUMERS - 1)
