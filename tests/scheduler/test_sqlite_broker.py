"""Tests of the SQLite transport through kombu, against real database files.

Processes that must die or compete run as real subprocesses; the rest run in the test process
with several kombu connections to one file.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub
from kombu.transport import TRANSPORT_ALIASES

from scheduler.sqlite_broker import TRANSPORT_PATH, register
from scheduler.sqlite_broker.deadletter import match_bindings
from scheduler.sqlite_broker.keeper import LeaseKeeper
from scheduler.sqlite_broker.liveness import HOSTNAME, owner_is_dead
from scheduler.sqlite_broker.settings import BrokerSettings
from scheduler.sqlite_broker.store import Store, StoreError, resolve_path
from scheduler.sqlite_broker.transport import MessageTooLarge

REPO_ROOT = Path(__file__).resolve().parents[2]

register()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "broker.sqlite3"


@pytest.fixture
def url(db_path: Path) -> str:
    return f"sqlite:///{db_path}"


def connect(url: str, **options: object) -> Connection:
    return Connection(url, transport_options={"polling_interval": 0.01, **options})


def row_count(db_path: Path, table: str = "messages") -> int:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def file_size(db_path: Path) -> int:
    wal = db_path.with_name(db_path.name + "-wal")
    return db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


# URLs and settings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/broker.sqlite3", Path("var/broker.sqlite3")),
        ("sqlite:////srv/app/broker.sqlite3", Path("/srv/app/broker.sqlite3")),
        ("SQLITE:///b.db", Path("b.db")),
    ],
)
def test_resolve_path_valid(url: str, expected: Path) -> None:
    assert resolve_path(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite://", "no file path"),
        ("sqlite:///", "no file path"),
        ("sqlite:///b.db?timeout=3", "broker_transport_options"),
        ("sqlite:///:memory:", "in-memory"),
        ("amqp://localhost//", "expected sqlite:///"),
    ],
)
def test_resolve_path_invalid(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        resolve_path(url)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("visibility_timeout", 0),
        ("visibility_timeout", "soon"),
        ("max_message_size", -1),
        ("fanout_ttl", None),
        ("busy_timeout", 0),
        ("polling_interval", 0),
    ],
)
def test_settings_invalid_option(option: str, value: object) -> None:
    with pytest.raises(StoreError, match=option):
        BrokerSettings.from_options("sqlite:///b.db", {option: value})


def test_settings_invalid_synchronous(url: str) -> None:
    with (
        pytest.raises(StoreError, match="synchronous"),
        connect(url, synchronous="sometimes") as conn,
    ):
        conn.connect()


def test_register_alias() -> None:
    register()
    assert TRANSPORT_ALIASES["sqlite"] == TRANSPORT_PATH


def test_register_conflict() -> None:
    TRANSPORT_ALIASES["sqlite"] = "elsewhere:Transport"
    try:
        with pytest.raises(RuntimeError, match="elsewhere"):
            register()
    finally:
        TRANSPORT_ALIASES["sqlite"] = TRANSPORT_PATH


def test_connection_creates_wal_database(tmp_path: Path) -> None:
    db_path = tmp_path / "new" / "folder" / "broker.sqlite3"
    with connect(f"sqlite:///{db_path}") as conn:
        conn.connect()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_newer_schema_rejected(db_path: Path, url: str) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"), connect(url) as conn:
        conn.connect()


# Publishing and consuming


def test_roundtrip_body_and_headers(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("roundtrip")
        queue.put({"n": 1, "text": "héllo"}, headers={"h": "v"})
        message = queue.get(timeout=2)
        message.ack()
    assert message.payload == {"n": 1, "text": "héllo"}
    assert message.headers == {"h": "v"}


def test_fifo_within_queue(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("fifo")
        for n in range(50):
            queue.put(n)
        received = []
        for _ in range(50):
            message = queue.get(timeout=2)
            received.append(message.payload)
            message.ack()
    assert received == list(range(50))


def test_priority_order(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("priority")
        for n, priority in enumerate([0, 5, 9, 5, 0]):
            queue.put(n, priority=priority)
        received = []
        for _ in range(5):
            message = queue.get(timeout=2)
            received.append(message.payload)
            message.ack()
    assert received == [2, 1, 3, 0, 4]


def test_ack_deletes_row(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("ack")
        queue.put("x")
        queue.get(timeout=2).ack()
        assert row_count(db_path) == 0


def test_unacked_row_kept(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("unacked")
        queue.put("x")
        queue.get(timeout=2)
        assert row_count(db_path) == 1


def test_reject_deletes_row(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("reject")
        queue.put("x")
        queue.get(timeout=2).reject()
        assert row_count(db_path) == 0


def test_requeue_redelivers_at_once(url: str) -> None:
    with connect(url, visibility_timeout=60) as conn:
        queue = conn.SimpleQueue("requeue")
        queue.consumer.qos(prefetch_count=1)
        queue.put("first")
        queue.put("second")
        queue.get(timeout=2).requeue()
        again = queue.get(timeout=0.5)
        again.ack()
    assert again.payload == "first"
    assert again.delivery_info["redelivered"] is True


def test_first_delivery_not_redelivered(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("fresh")
        queue.put("x")
        message = queue.get(timeout=2)
        message.ack()
    assert not message.delivery_info.get("redelivered")


def test_claimed_message_hidden(url: str) -> None:
    with connect(url) as first, connect(url) as second:
        first.SimpleQueue("hidden").put("x")
        first.SimpleQueue("hidden").get(timeout=2)
        with pytest.raises(second.SimpleQueue("hidden").Empty):
            second.SimpleQueue("hidden").get(timeout=0.3)


def test_close_releases_unacked(url: str) -> None:
    first = connect(url, visibility_timeout=60)
    queue = first.SimpleQueue("close")
    queue.put("x")
    queue.get(timeout=2)
    first.release()
    with connect(url) as second:
        message = second.SimpleQueue("close").get(timeout=1)
        message.ack()
    assert message.payload == "x"


def test_close_releases_prefetched(url: str) -> None:
    first = connect(url, visibility_timeout=60)
    queue = first.SimpleQueue("batch")
    queue.consumer.qos(prefetch_count=10)
    for n in range(5):
        queue.put(n)
    queue.get(timeout=2)  # claims all five in one statement, delivers one
    first.release()
    with connect(url) as second:
        other = second.SimpleQueue("batch")
        received = []
        for _ in range(5):
            message = other.get(timeout=1)
            received.append(message.payload)
            message.ack()
    assert sorted(received) == [0, 1, 2, 3, 4]


# Event loop (Celery's worker runs the transport on a kombu hub)


def run_hub(hub: Hub, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Turn the hub's loop until ``done()`` returns True or ``timeout`` seconds pass."""
    loop = hub.create_loop()
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        next(loop)


def test_event_loop_delivers_in_order(url: str) -> None:
    received: list[int] = []

    def on_message(body: int, message) -> None:  # noqa: ANN001
        received.append(body)
        message.ack()

    hub = Hub()
    queue = Queue("evented")
    with connect(url) as conn, Consumer(conn, [queue], callbacks=[on_message]):
        conn.transport.register_with_event_loop(conn.connection, hub)
        with connect(url) as publisher:
            producer = Producer(publisher)
            for n in range(50):
                producer.publish(n, routing_key="evented", declare=[queue])
        run_hub(hub, lambda: len(received) >= 50)
    hub.close()
    assert received == list(range(50))


def test_event_loop_close_cancels_timer(url: str) -> None:
    hub = Hub()
    with connect(url) as conn:
        conn.transport.register_with_event_loop(conn.connection, hub)
        live_before = [event for event in hub.timer.queue if not event.entry.canceled]
    live_after = [event for event in hub.timer.queue if not event.entry.canceled]
    hub.close()
    assert len(live_before) == 1
    assert live_after == []


def test_event_loop_ack_from_thread_polls(url: str) -> None:
    # The timer would poll only after 30 s, so each delivery below comes from request_poll():
    # the first from the loop's thread, the second from the ack in another thread.
    delivered: list = []
    hub = Hub()
    queue = Queue("acked")
    with (
        connect(url, polling_interval=30) as conn,
        Consumer(
            conn, [queue], callbacks=[lambda body, message: delivered.append(message)]
        ) as consumer,
    ):
        consumer.qos(prefetch_count=1)
        producer = Producer(conn)
        for n in range(2):
            producer.publish(n, routing_key="acked", declare=[queue])
        conn.transport.register_with_event_loop(conn.connection, hub)
        conn.transport.request_poll()
        run_hub(hub, lambda: len(delivered) >= 1)
        first_count = len(delivered)
        acker = threading.Thread(target=delivered[0].ack)
        acker.start()
        acker.join()
        run_hub(hub, lambda: len(delivered) >= 2)
        delivered[1].ack()
    hub.close()
    assert first_count == 1
    assert [message.payload for message in delivered] == [0, 1]


def test_message_too_large(url: str, db_path: Path) -> None:
    with connect(url, max_message_size=10_000) as conn:
        queue = conn.SimpleQueue("large")
        with pytest.raises(MessageTooLarge, match="max_message_size of 10000 bytes"):
            queue.put("x" * 20_000)
        assert row_count(db_path) == 0


def test_message_expiration(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("ttl")
        queue.put("short", expiration=0.1)
        queue.put("long")
        time.sleep(0.2)
        message = queue.get(timeout=1)
        message.ack()
    assert message.payload == "long"


def test_queue_message_ttl(url: str) -> None:
    exchange = Exchange("ttl-exchange", "direct")
    queue = Queue("ttl-queue", exchange, "k", message_ttl=0.1)
    with connect(url) as conn:
        producer = Producer(conn)
        producer.publish("gone", exchange=exchange, routing_key="k", declare=[queue])
        time.sleep(0.2)
        producer.publish("kept", exchange=exchange, routing_key="k")
        message = conn.SimpleQueue(queue).get(timeout=1)
        message.ack()
    assert message.payload == "kept"


def test_queue_declare_counts_ready(url: str) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("count")
        queue.consumer.qos(prefetch_count=1)
        for n in range(3):
            queue.put(n)
        queue.get(timeout=1)
        _, ready, _ = conn.default_channel.queue_declare("count", passive=True)
    assert ready == 2


def test_purge_keeps_claimed(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        queue = conn.SimpleQueue("purge")
        queue.consumer.qos(prefetch_count=1)
        for n in range(3):
            queue.put(n)
        queue.get(timeout=1)
        purged = queue.clear()
        assert purged == 2
        assert row_count(db_path) == 1


def test_passive_declare_missing_queue(url: str) -> None:
    with connect(url) as conn, pytest.raises(conn.channel_errors):
        conn.default_channel.queue_declare("never-declared", passive=True)


# Dead-lettering


def dead_letter_setup(conn: Connection, name: str, **arguments: object) -> tuple[Queue, Queue]:
    """Declare queue ``name`` whose rejects go to ``name-dlx``, bound to ``name-dlq``."""
    dlx = Exchange(f"{name}-dlx", "direct")
    dead = Queue(f"{name}-dlq", dlx, f"{name}-dlq")
    dead(conn.default_channel).declare()
    work = Queue(
        name,
        Exchange(name, "direct"),
        name,
        queue_arguments={
            "x-dead-letter-exchange": dlx.name,
            "x-dead-letter-routing-key": dead.name,
            **arguments,
        },
    )
    work(conn.default_channel).declare()
    return work, dead


def test_reject_dead_letters(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "dl-reject")
        Producer(conn).publish(
            {"n": 1}, exchange=work.name, routing_key=work.name, headers={"h": 1}
        )
        conn.SimpleQueue(work).get(timeout=2).reject()
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
        assert row_count(db_path) == 0
    death = letter.headers["x-death"][0]
    assert letter.payload == {"n": 1}
    assert letter.headers["h"] == 1
    assert death["reason"] == "rejected"
    assert death["queue"] == "dl-reject"
    assert death["count"] == 1
    assert death["exchange"] == "dl-reject"
    assert death["routing-keys"] == ["dl-reject"]
    assert letter.headers["x-first-death-reason"] == "rejected"
    assert letter.delivery_info["routing_key"] == "dl-reject-dlq"


def test_requeue_not_dead_lettered(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "dl-requeue")
        Producer(conn).publish("x", exchange=work.name, routing_key=work.name)
        conn.SimpleQueue(work).get(timeout=2).requeue()
        ready = conn.default_channel.queue_declare(dead.name, passive=True).message_count
        assert ready == 0
        assert row_count(db_path) == 1


def test_dead_letter_keeps_routing_key(url: str) -> None:
    dlx = Exchange("keep-dlx", "topic")
    dead = Queue("keep-dlq", dlx, "jobs.#")
    work = Queue(
        "keep",
        Exchange("keep", "topic"),
        "jobs.*",
        queue_arguments={"x-dead-letter-exchange": "keep-dlx"},
    )
    with connect(url) as conn:
        dead(conn.default_channel).declare()
        work(conn.default_channel).declare()
        Producer(conn).publish("x", exchange="keep", routing_key="jobs.video")
        conn.SimpleQueue(work).get(timeout=2).reject()
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
    assert letter.delivery_info["routing_key"] == "jobs.video"


def test_dead_letter_default_exchange_counts(url: str) -> None:
    # A queue that dead-letters into itself through the default exchange: the count grows.
    work = Queue(
        "loop",
        Exchange("loop", "direct"),
        "loop",
        queue_arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "loop"},
    )
    with connect(url) as conn:
        work(conn.default_channel).declare()
        Producer(conn).publish("x", exchange="loop", routing_key="loop")
        queue = conn.SimpleQueue(work)
        queue.get(timeout=2).reject()
        queue.get(timeout=2).reject()
        letter = queue.get(timeout=2)
        letter.ack()
    assert [d["count"] for d in letter.headers["x-death"]] == [2]


def test_dead_letter_unroutable_dropped(url: str, db_path: Path, caplog) -> None:  # noqa: ANN001
    work = Queue(
        "nowhere",
        Exchange("nowhere", "direct"),
        "nowhere",
        queue_arguments={"x-dead-letter-exchange": "missing-dlx"},
    )
    with connect(url) as conn:
        work(conn.default_channel).declare()
        Producer(conn).publish("x", exchange="nowhere", routing_key="nowhere")
        conn.SimpleQueue(work).get(timeout=2).reject()
        assert row_count(db_path) == 0
    assert "routes routing key 'nowhere' to no queue" in caplog.text


def test_reject_after_lease_lost_kept(url: str, db_path: Path) -> None:
    with connect(url, visibility_timeout=0.3) as slow, connect(url) as fast:
        work, dead = dead_letter_setup(slow, "dl-late")
        Producer(slow).publish("x", exchange=work.name, routing_key=work.name)
        delivered = slow.SimpleQueue(work).get(timeout=2)
        slow.transport._keeper.stop()  # simulates a hung holder
        time.sleep(0.5)
        again = fast.SimpleQueue(work).get(timeout=2)
        delivered.reject()
        assert row_count(db_path) == 1
        again.ack()
        assert row_count(db_path) == 0


def maintain_now(db_path: Path) -> None:
    store = Store(db_path)
    store.maintain(60, time.time())
    store.close()


def test_expired_message_dead_lettered(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "dl-expiry")
        Producer(conn).publish("x", exchange=work.name, routing_key=work.name, expiration=0.1)
        time.sleep(0.2)
        maintain_now(db_path)
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
    assert letter.headers["x-death"][0]["reason"] == "expired"
    assert letter.headers["original-expiration"] == "100"
    assert "expiration" not in letter.properties


def test_queue_ttl_dead_lettered(url: str, db_path: Path) -> None:
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "dl-ttl", **{"x-message-ttl": 100})
        Producer(conn).publish("x", exchange=work.name, routing_key=work.name)
        time.sleep(0.2)
        maintain_now(db_path)
        assert conn.default_channel.queue_declare(work.name, passive=True).message_count == 0
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
    assert letter.headers["x-death"][0]["queue"] == "dl-ttl"


def test_redeclare_keeps_first_arguments(url: str, db_path: Path, caplog) -> None:  # noqa: ANN001
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "dl-redeclare")
        conn.default_channel.queue_declare(work.name, arguments={})
        Producer(conn).publish("x", exchange=work.name, routing_key=work.name)
        conn.SimpleQueue(work).get(timeout=2).reject()
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
    assert letter.payload == "x"
    assert "keeps the arguments" in caplog.text


SCHEMA_V1_QUEUES = """
CREATE TABLE queues (
    name TEXT PRIMARY KEY, expires REAL, message_ttl REAL, last_used REAL NOT NULL
) WITHOUT ROWID;
INSERT INTO queues VALUES ('old', NULL, NULL, 0);
PRAGMA user_version = 1;
"""


def test_schema_v1_upgraded(url: str, db_path: Path) -> None:
    with sqlite3.connect(db_path) as raw:
        raw.executescript(SCHEMA_V1_QUEUES)
    with connect(url) as conn:
        work, dead = dead_letter_setup(conn, "old")
        Producer(conn).publish("x", exchange=work.name, routing_key=work.name)
        conn.SimpleQueue(work).get(timeout=2).reject()
        letter = conn.SimpleQueue(dead).get(timeout=2)
        letter.ack()
    with sqlite3.connect(db_path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == 2
    assert letter.headers["x-death"][0]["queue"] == "old"


@pytest.mark.parametrize(
    ("exchange_type", "routing_key", "expected"),
    [
        ("direct", "a", ["qa"]),
        ("direct", "z", []),
        ("topic", "jobs.video", ["qa", "qt"]),
        ("topic", "jobs.video.hd", ["qt"]),
        ("fanout", "anything", ["qa", "qt", "qz"]),
    ],
)
def test_match_bindings(exchange_type: str, routing_key: str, expected: list[str]) -> None:
    bindings = [
        ("a", r"^jobs\.[^.]+$", "qa"),
        ("jobs.#", r"^jobs\..*?$", "qt"),
        ("z.*", r"^z\.[^.]+$", "qz"),
    ]
    assert match_bindings(exchange_type, bindings, routing_key) == expected


# Routing across connections


def test_binding_shared_between_connections(url: str) -> None:
    exchange = Exchange("tasks", "direct")
    queue = Queue("work", exchange, "work.key")
    with connect(url) as worker, connect(url) as producer:
        queue(worker.default_channel).declare()
        # The producer never declared the queue; it learns the binding from the database.
        Producer(producer).publish("routed", exchange="tasks", routing_key="work.key")
        message = worker.SimpleQueue(queue).get(timeout=2)
        message.ack()
    assert message.payload == "routed"


def test_topic_routing(url: str) -> None:
    exchange = Exchange("topics", "topic")
    queue = Queue("eu-events", exchange, "events.eu.*")
    with connect(url) as worker, connect(url) as producer:
        queue(worker.default_channel).declare()
        Producer(producer).publish("us", exchange="topics", routing_key="events.us.paris")
        Producer(producer).publish("eu", exchange="topics", routing_key="events.eu.paris")
        message = worker.SimpleQueue(queue).get(timeout=2)
        message.ack()
    assert message.payload == "eu"


def test_queue_deleted_mid_publish(url: str, db_path: Path) -> None:
    # A remote-control client deletes its reply queue while a worker publishes a late reply:
    # the worker has read the binding, and the queue is gone before the insert.
    queue = Queue("reply-1", Exchange("replies", "direct"), "reply-1")
    with connect(url) as client, connect(url) as worker:
        queue(client.default_channel).declare()
        channel = worker.default_channel
        lookup = channel._lookup

        def lookup_then_delete(exchange: str, routing_key: str, default: str | None = None):
            queues = lookup(exchange, routing_key, default)
            queue(client.default_channel).delete()
            return queues

        channel._lookup = lookup_then_delete
        Producer(channel).publish("late", exchange="replies", routing_key="reply-1")
        assert row_count(db_path, "queues") == 0
        # A message to the default exchange names its queue and needs no binding.
        Producer(channel).publish("direct", exchange="", routing_key="undeclared")
    assert row_count(db_path) == 1


def test_fanout_reaches_every_connection(url: str) -> None:
    exchange = Exchange("broadcast", "fanout")
    connections = [connect(url) for _ in range(3)]
    received: list[list[object]] = [[] for _ in connections]
    consumers = []
    try:
        for n, conn in enumerate(connections):
            consumer = Consumer(
                conn,
                [Queue(f"node-{n}", exchange)],
                callbacks=[lambda body, message, n=n: received[n].append(body)],
                no_ack=True,
            )
            consumer.consume()
            consumers.append(consumer)
        Producer(connections[0]).publish({"cmd": "ping"}, exchange=exchange, routing_key="")
        for conn in connections:
            conn.drain_events(timeout=2)
    finally:
        for conn in connections:
            conn.release()
    assert received == [[{"cmd": "ping"}]] * 3


def test_fanout_skips_older_broadcasts(url: str) -> None:
    exchange = Exchange("late", "fanout")
    with connect(url) as producer, connect(url) as late:
        Producer(producer).publish("before", exchange=exchange, routing_key="", declare=[exchange])
        received: list[object] = []
        with Consumer(
            late,
            [Queue("late-node", exchange)],
            callbacks=[lambda body, message: received.append(body)],
            no_ack=True,
        ):
            Producer(producer).publish("after", exchange=exchange, routing_key="")
            late.drain_events(timeout=2)
            with pytest.raises(TimeoutError):
                late.drain_events(timeout=0.2)
    assert received == ["after"]


# Leases


KILLED_CONSUMER = textwrap.dedent(
    """
    import os, signal, sys
    from kombu import Connection
    from scheduler.sqlite_broker import register
    register()
    conn = Connection(sys.argv[1], transport_options={"visibility_timeout": 0.5})
    message = conn.SimpleQueue("lease").get(timeout=5)
    print(message.payload, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_expired_lease_redelivers(url: str) -> None:
    with connect(url) as conn:
        conn.SimpleQueue("lease").put("survives")
    result = subprocess.run(
        [sys.executable, "-c", KILLED_CONSUMER, url],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO_ROOT,
    )
    assert result.returncode == -signal.SIGKILL
    assert result.stdout.strip() == "survives"
    with connect(url) as conn:
        message = conn.SimpleQueue("lease").get(timeout=3)
        message.ack()
    assert message.payload == "survives"
    assert message.delivery_info["redelivered"] is True


def test_dead_holder_released_before_timeout(url: str) -> None:
    with connect(url) as conn:
        conn.SimpleQueue("lease").put("back early")
    script = KILLED_CONSUMER.replace('"visibility_timeout": 0.5', '"visibility_timeout": 600')
    result = subprocess.run(
        [sys.executable, "-c", script, url], capture_output=True, timeout=30, cwd=REPO_ROOT
    )
    assert result.returncode == -signal.SIGKILL
    started = time.monotonic()
    with connect(url, visibility_timeout=600) as conn:
        message = conn.SimpleQueue("lease").get(timeout=5)
        message.ack()
    assert message.payload == "back early"
    assert time.monotonic() - started < 5


def exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("owner", "dead"),
    [
        (f"{HOSTNAME}:{os.getpid()}:abc", False),
        (f"other-host:{exited_pid()}:abc", False),
        (f"{HOSTNAME}:{exited_pid()}:abc", True),
        ("no-pid-here", False),
        (f"{HOSTNAME}:0:abc", False),
    ],
)
def test_owner_is_dead(owner: str, dead: bool) -> None:
    assert owner_is_dead(owner) is dead


def test_live_lease_renewed(url: str) -> None:
    """A message delivered longer than the visibility timeout stays with its live holder."""
    with connect(url, visibility_timeout=0.4) as holder, connect(url) as other:
        queue = holder.SimpleQueue("renewed")
        queue.put("eta task")
        delivered = queue.get(timeout=2)
        time.sleep(1.5)
        with pytest.raises(queue.Empty):
            other.SimpleQueue("renewed").get(timeout=0.3)
        delivered.ack()
        with pytest.raises(queue.Empty):
            other.SimpleQueue("renewed").get(timeout=0.6)


def test_late_ack_ignored_after_redelivery(url: str, db_path: Path) -> None:
    with connect(url, visibility_timeout=0.3) as slow, connect(url) as fast:
        slow.SimpleQueue("late-ack").put("x")
        delivered = slow.SimpleQueue("late-ack").get(timeout=2)
        slow.transport._keeper.stop()  # simulates a hung holder
        time.sleep(0.5)
        again = fast.SimpleQueue("late-ack").get(timeout=2)
        delivered.ack()
        assert row_count(db_path) == 1
        again.ack()
        assert row_count(db_path) == 0


# Concurrency and disk use


def test_locked_database_waits(url: str, db_path: Path) -> None:
    with connect(url, busy_timeout=10) as conn:
        queue = conn.SimpleQueue("locked")
        queue.put("warm-up")
        blocker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        blocker.execute("BEGIN EXCLUSIVE")
        timer = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
        timer.start()
        started = time.monotonic()
        queue.put("after the lock")
        waited = time.monotonic() - started
        timer.join()
        blocker.close()
    assert waited >= 0.4


def test_file_size_returns_after_10k(url: str, db_path: Path) -> None:
    body = "x" * 1000
    # Durability settings do not change the file size, and NORMAL keeps the test short.
    with connect(url, maintenance_interval=0.5, synchronous="NORMAL") as conn:
        queue = conn.SimpleQueue("disk")
        queue.put("warm-up")
        queue.get(timeout=2).ack()
        start_size = file_size(db_path)

        for n in range(10_000):
            queue.put({"n": n, "body": body})
        peak_size = file_size(db_path)
        for _ in range(10_000):
            queue.get(timeout=2).ack()

        deadline = time.monotonic() + 10
        while file_size(db_path) > start_size + 64 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        end_size = file_size(db_path)
    assert peak_size > 10_000_000
    assert end_size <= start_size + 64 * 1024


def test_keeper_deletes_idle_expiring_queue(db_path: Path, url: str) -> None:
    with connect(url) as conn:
        conn.default_channel.queue_declare("reply", arguments={"x-expires": 10})
        conn.SimpleQueue("reply").put("late reply")
    settings = BrokerSettings.from_options(url, {"maintenance_interval": 0.1})
    store = Store(db_path)
    # Pretends the queue has been idle for two minutes, past the 60-second floor.
    store.run(lambda c: c.execute("UPDATE queues SET last_used = last_used - 120"))
    store.run(lambda c: c.execute("UPDATE meta SET value = 0"))
    keeper = LeaseKeeper(settings, "test-owner", lambda: ())
    keeper.tick()
    keeper.stop()
    store.close()
    assert row_count(db_path) == 0
    assert row_count(db_path, "queues") == 0


def test_consumed_expiring_queue_kept(db_path: Path, url: str) -> None:
    # A consumer that has received nothing yet still marks its queue as used, as a worker's
    # remote-control queue needs from the moment the worker starts.
    with connect(url, visibility_timeout=0.3) as conn:
        queue = Queue("control", arguments={"x-expires": 10})
        store = Store(db_path)
        with Consumer(conn, [queue], callbacks=[lambda body, message: None]):
            # Pretends the queue was declared two minutes ago, past the 60-second floor.
            store.run(lambda c: c.execute("UPDATE queues SET last_used = last_used - 120"))
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=0.5)
        idle_seconds = store.run(
            lambda c: c.execute("SELECT ? - last_used FROM queues", (time.time(),)).fetchone()[0]
        )
        store.close()
    assert idle_seconds < 5


def test_pid_reconnect_after_fork(db_path: Path) -> None:
    store = Store(db_path)
    store.initialize()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            store.publish("forked", 0, "{}", None, time.time())
            os.write(write, b"ok")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 2) == b"ok"
    assert store.size("forked", time.time()) == 1
    store.close()


def test_expired_leases_reported_once(url: str, db_path: Path, caplog) -> None:  # noqa: ANN001
    with connect(url) as conn:
        conn.SimpleQueue("left").put("unacked")
    # A holder whose lease has ended without an ack.
    store = Store(db_path)
    now = time.time()
    store.claim("left", "gone", now - 1, now)
    store.close()

    with caplog.at_level("WARNING", logger="scheduler.sqlite_broker.transport"):
        for _ in range(3):
            with connect(url) as conn:
                conn.connect()
    reports = [r for r in caplog.records if "were left unacknowledged" in r.getMessage()]
    assert len(reports) == 1
