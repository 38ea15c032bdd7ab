"""Two editor processes on different ports sharing PostgreSQL and a Redis message queue."""

from __future__ import annotations

import random
import signal
import threading
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.codecollab.cluster_support import (
    ClusterClient,
    EditorProcess,
    editor_env,
    free_port,
    wait_until,
)

pytestmark = pytest.mark.slow

CONVERGE_TIMEOUT = 20.0
# Text that is one code point in Python but several UTF-8 bytes or UTF-16 units.
EXTRAS = ("é", "😀", "中文", "e\u0301", "👩‍💻", "x")

Cluster = Callable[[int], list[EditorProcess]]


def cluster_settings(postgres_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    """Environment shared by the processes of one test cluster."""
    return {
        "CODECOLLAB_DATABASE_URL": postgres_url,
        "CODECOLLAB_DATABASE_SCHEMA": prefix.replace("-", "_"),
        "CODECOLLAB_MESSAGE_QUEUE": redis_url,
        "CODECOLLAB_CLUSTER_CHANNEL": prefix,
        "CODECOLLAB_CLUSTER_HEARTBEAT": "0.5",
        "CODECOLLAB_SWEEP_INTERVAL": "0.5",
        "CODECOLLAB_COMPACT_INTERVAL": "1",
        "CODECOLLAB_COMPACT_AFTER_UPDATES": "20",
    }


def cleanup(postgres_url: str, redis_url: str, prefix: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {prefix.replace('-', '_')} CASCADE")
    connection = redis.Redis.from_url(redis_url)
    keys = list(connection.scan_iter(f"{prefix}:*"))
    if keys:
        connection.delete(*keys)
    connection.close()


def start_processes(
    count: int, settings: dict[str, str], folder: Path, started: list[EditorProcess]
) -> list[EditorProcess]:
    processes = []
    for _ in range(count):
        port = free_port()
        log = folder / f"editor-{len(started)}.log"
        process = EditorProcess(port, log, editor_env(port, settings))
        started.append(process)
        processes.append(process.start())
    return processes


@pytest.fixture(scope="module")
def shared_pair(
    postgres_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[EditorProcess]]:
    """Two processes for the tests that do not stop them; each test uses its own session."""
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    started: list[EditorProcess] = []
    settings = cluster_settings(postgres_url, redis_url, prefix)
    yield start_processes(2, settings, tmp_path_factory.mktemp("cluster"), started)
    for process in started:
        process.stop()
    cleanup(postgres_url, redis_url, prefix)


@pytest.fixture
def cluster(
    postgres_url: str, redis_url: str, unique_prefix: str, tmp_path: Path
) -> Iterator[Cluster]:
    """Start processes of a cluster of the test's own; all are stopped afterwards."""
    started: list[EditorProcess] = []
    settings = cluster_settings(postgres_url, redis_url, unique_prefix)
    yield lambda count: start_processes(count, settings, tmp_path, started)
    for process in started:
        process.stop()
    cleanup(postgres_url, redis_url, unique_prefix)


def new_session() -> str:
    return f"cluster-{uuid.uuid4().hex}"


def spread_clients(processes: list[EditorProcess], session: str, count: int) -> list[ClusterClient]:
    """Connect ``count`` clients, alternating between the processes."""
    return [
        ClusterClient(processes[i % len(processes)].url, session, f"client-{i}").connect()
        for i in range(count)
    ]


def edit_concurrently(
    clients: list[ClusterClient], edits: int, *, deletes: bool, seed: int
) -> list[str]:
    """Make every client edit at once from its own thread; return every inserted token.

    Tokens contain the seed, so tokens of two calls with different seeds never collide.
    """
    tokens: list[str] = []
    failures: list[BaseException] = []

    def run(client: ClusterClient, rng: random.Random) -> None:
        try:
            for index in range(edits):
                token = f"<{client.client_id}:{seed}.{index}{rng.choice(EXTRAS)}>"
                tokens.append(token)
                client.insert_token(token, rng.random())
                if deletes and rng.random() < 0.3:
                    client.delete_range(rng.random(), rng.randint(1, 4))
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=(client, random.Random(seed * 100 + i)))
        for i, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    return tokens


def wait_converged(clients: list[ClusterClient], processes: list[EditorProcess], session: str):
    """Wait until every client and every process holds the same text; return it."""

    def converged() -> bool:
        values = {client.value() for client in clients}
        values |= {process.get_text(session) for process in processes}
        return len(values) == 1

    wait_until(converged, CONVERGE_TIMEOUT, "clients and processes hold different texts")
    return clients[0].value()


def close_all(clients: list[ClusterClient]) -> None:
    for client in clients:
        client.close()


def test_random_edits_converge(shared_pair: list[EditorProcess]) -> None:
    session = new_session()
    clients = spread_clients(shared_pair, session, 6)
    try:
        edit_concurrently(clients, 30, deletes=True, seed=1)
        text = wait_converged(clients, shared_pair, session)
    finally:
        close_all(clients)
    for client in clients:
        assert client.value() == text
    assert len(text) > 0


@pytest.mark.parametrize("newcomer_process", [0, 1])
def test_newcomer_gets_whole_document(
    shared_pair: list[EditorProcess], newcomer_process: int
) -> None:
    session = new_session()
    clients = spread_clients(shared_pair, session, 4)
    try:
        tokens = edit_concurrently(clients, 15, deletes=False, seed=2)
        text = wait_converged(clients, shared_pair, session)
        newcomer = ClusterClient(shared_pair[newcomer_process].url, session, "newcomer")
        newcomer.connect()
        clients.append(newcomer)
        received = newcomer.value()
    finally:
        close_all(clients)
    assert received == text
    for token in tokens:
        assert token in received, token


def test_counter_right_on_both(shared_pair: list[EditorProcess]) -> None:
    session = new_session()
    first, second = shared_pair
    clients = [
        ClusterClient(first.url, session, "tab-a").connect(),
        ClusterClient(first.url, session, "tab-b").connect(),
        ClusterClient(second.url, session, "tab-c").connect(),
        # The same tab reconnected to the other process while its old connection is open.
        ClusterClient(second.url, session, "tab-a").connect(),
    ]
    try:
        wait_until(
            lambda: all(c.presence and c.presence["count"] == 3 for c in clients),
            10,
            "every client sees 3 users",
        )
        online = [process.get_json(f"/api/sessions/{session}")["online"] for process in shared_pair]
        clients[2].close()
        wait_until(
            lambda: all(c.presence and c.presence["count"] == 2 for c in clients if c.online),
            10,
            "every remaining client sees 2 users",
        )
        online_after = [
            process.get_json(f"/api/sessions/{session}")["online"] for process in shared_pair
        ]
    finally:
        close_all(clients)
    assert online == [3, 3]
    assert online_after == [2, 2]


def test_kill_loses_no_acknowledged_update(cluster: Cluster) -> None:
    victim, survivor = cluster(2)
    session = new_session()
    clients = spread_clients([victim, survivor], session, 6)
    on_victim = clients[0::2]
    try:
        edit_concurrently(clients, 10, deletes=False, seed=3)
        stop_edits = threading.Event()

        def kill_midway() -> None:
            stop_edits.wait(0.3)
            victim.stop(signal.SIGKILL)

        killer = threading.Thread(target=kill_midway)
        killer.start()
        tokens = edit_concurrently(clients, 40, deletes=False, seed=4)
        killer.join(timeout=30)
        wait_until(lambda: not any(c.online for c in on_victim), 10, "victim's clients see it die")

        for client in on_victim:
            client.connect(survivor.url)
        text = wait_converged(clients, [survivor], session)
        acked = set().union(*(client.acked_tokens for client in clients))
        wait_until(
            lambda: all(c.presence and c.presence["count"] == 6 for c in clients),
            10,
            "every client sees 6 users on the survivor",
        )
        # A process started afterwards loads the document from PostgreSQL alone.
        (fresh,) = cluster(1)
        newcomer = ClusterClient(fresh.url, session, "newcomer").connect()
        clients.append(newcomer)
        reloaded = newcomer.value()
    finally:
        close_all(clients)

    assert victim.process is not None and victim.process.returncode == -signal.SIGKILL
    for token in acked:
        assert token in text, token
    for token in tokens:
        assert text.count(token) == 1, token
    assert reloaded == text


def test_http_edit_reaches_other_process(cluster: Cluster) -> None:
    """A process that only served HTTP requests still receives the other's updates."""
    first, second = cluster(2)
    session = new_session()
    put_text(first, session, "before\n")
    assert second.get_text(session) == "before\n"

    put_text(first, session, "after\n")

    wait_until(lambda: second.get_text(session) == "after\n", 5, "second process sees the PUT")


def put_text(process: EditorProcess, session: str, text: str) -> None:
    request = urllib.request.Request(
        f"{process.url}/api/sessions/{session}/text", data=text.encode(), method="PUT"
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_crashed_process_users_expire(cluster: Cluster) -> None:
    """Users of a killed process who do not reconnect leave the count after its heartbeat."""
    victim, survivor = cluster(2)
    session = new_session()
    stranded = ClusterClient(victim.url, session, "stranded").connect()
    watcher = ClusterClient(survivor.url, session, "watcher").connect()
    try:
        wait_until(lambda: watcher.presence and watcher.presence["count"] == 2, 10, "2 users")
        victim.stop(signal.SIGKILL)
        # 0.5 s heartbeats: expiry after 3 missed beats, noticed at the next beat.
        wait_until(lambda: watcher.presence["count"] == 1, 5, "the stranded user leaves")
        users = watcher.presence["users"]
        online = survivor.get_json(f"/api/sessions/{session}")["online"]
    finally:
        close_all([stranded, watcher])
    assert [user["clientId"] for user in users] == ["watcher"]
    assert online == 1
