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
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from scheduler.sqlite_broker import register

MESSAGES = 10_000
PRODUCERS = 4
CONSUMERS = 4
DEADLINE = 120.0

EXCHANGE = Exchange("load", "direct")
QUEUE = Queue("load", EXCHANGE, "load")

# A queue with dead-letter arguments, so a first declaration writes to every routing table.
DEAD_LETTER_EXCHANGE = Exchange("load-dlx", "fanout")
DEAD_LETTER_QUEUE = Queue("load-dead", DEAD_LETTER_EXCHANGE)
LETTERED_QUEUE = Queue(
    "load", EXCHANGE, "load", queue_arguments={"x-dead-letter-exchange": "load-dlx"}
)
FIRST_PUBLISHERS = 8
FIRST_MESSAGES = 25

# Durability across power loss is not under test here; NORMAL keeps the run short on CI.
OPTIONS = {"polling_interval": 0.01, "synchronous": "NORMAL", "visibility_timeout": 2.0}


def produce(url: str, first: int, count: int) -> None:
    register()
    with Connection(url, transport_options=OPTIONS) as conn:
        producer = Producer(conn)
        producer.declare()
        for n in range(first, first + count):
            producer.publish({"id": n}, exchange=EXCHANGE, routing_key="load", declare=[QUEUE])


def consume(url: str, record: str, stop: str) -> None:
    """Consume and record each id until the file ``stop`` exists.

    A file rather than a multiprocessing Event: the test SIGKILLs a consumer, and one killed
    while it checked the Event would hold the Event's lock for good.
    """
    register()
    fd = os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def on_message(body: dict, message) -> None:
        os.write(fd, f"{body['id']}\n".encode())
        message.ack()

    with (
        Connection(url, transport_options=OPTIONS) as conn,
        Consumer(conn, [QUEUE], callbacks=[on_message], prefetch_count=10),
    ):
        while not os.path.exists(stop):
            with contextlib.suppress(TimeoutError):
                conn.drain_events(timeout=0.2)
    os.close(fd)


def publish_first(url: str, first: int, count: int, barrier: Any) -> None:
    """Connect to a broker file that may not exist yet and publish at the barrier's release.

    The connection creates the schema, and the publish declares the exchanges, the queue with
    its dead-letter arguments and the binding, so every process does each first write at once.
    """
    register()
    with Connection(url, transport_options=OPTIONS) as conn:
        producer = Producer(conn)
        barrier.wait(30)
        for n in range(first, first + count):
            producer.publish(
                {"id": n},
                exchange=EXCHANGE,
                routing_key="load",
                declare=[DEAD_LETTER_QUEUE, LETTERED_QUEUE],
            )


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
    stop = tmp_path / "stop"
    records = [tmp_path / f"consumer-{n}.ids" for n in range(CONSUMERS)]
    consumers = [
        ctx.Process(target=consume, args=(url, str(record), str(stop))) for record in records
    ]
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
        stop.touch()
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


def test_first_publishes_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    url = f"sqlite:///{tmp_path / 'broker.sqlite3'}"
    barrier = ctx.Barrier(FIRST_PUBLISHERS)
    producers = [
        ctx.Process(target=publish_first, args=(url, n * FIRST_MESSAGES, FIRST_MESSAGES, barrier))
        for n in range(FIRST_PUBLISHERS)
    ]
    for process in producers:
        process.start()
    for process in producers:
        process.join(60)
        if process.is_alive():
            process.kill()

    ids: list[int] = []
    register()
    with Connection(url, transport_options=OPTIONS) as conn:
        queue = LETTERED_QUEUE.bind(conn.default_channel)
        while (message := queue.get()) is not None:
            ids.append(message.payload["id"])
            message.ack()
    counts = Counter(ids)
    assert [process.exitcode for process in producers] == [0] * FIRST_PUBLISHERS
    assert set(counts) == set(range(FIRST_PUBLISHERS * FIRST_MESSAGES))
    assert [n for n, count in counts.items() if count > 1] == []
