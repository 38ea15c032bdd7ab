"""Protocol-level tests of the Socket.IO transport against a real server process."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import urllib.request

import pytest

from codecollab.documents import SEED_TEXT
from codecollab.yprotocol import AwarenessEntry, decode_awareness_update, encode_awareness_update

from .conftest import ServerProcess
from .rawsocket import RawSocketIOClient
from .yclient import YClient, unique_session, wait_until


def server_text(server: ServerProcess, session: str) -> str:
    with urllib.request.urlopen(f"{server.url}/api/sessions/{session}/text", timeout=5) as reply:
        return reply.read().decode("utf-8")


def presence_count(client: YClient) -> int | None:
    presence = client.last_presence()
    return None if presence is None else presence["count"]


def test_newcomer_receives_full_state(shared_editor: ServerProcess) -> None:
    session = unique_session()
    writer = YClient(shared_editor.url, session).connect()
    writer.insert(0, "héllo 😀 中文\n")
    writer.set_language("rust")
    writer.wait_acked()

    newcomer = YClient(shared_editor.url, session).connect()
    assert newcomer.value() == "héllo 😀 中文\n" + SEED_TEXT
    assert newcomer.meta.get("language") == "rust"
    writer.disconnect()
    newcomer.disconnect()


def test_update_relayed_to_peer(shared_editor: ServerProcess) -> None:
    session = unique_session()
    first = YClient(shared_editor.url, session).connect()
    second = YClient(shared_editor.url, session).connect()
    first.insert(0, "👋 ")
    wait_until(lambda: second.value() == first.value(), 5, "the peer did not get the edit")
    first.disconnect()
    second.disconnect()


def test_update_acknowledged_after_commit(shared_editor: ServerProcess) -> None:
    session = unique_session()
    client = YClient(shared_editor.url, session).connect()
    client.insert(0, "durable")
    client.wait_acked()
    with sqlite3.connect(shared_editor.database_path) as connection:
        rows = connection.execute(
            "SELECT count(*) FROM updates WHERE session_id = ?", (session,)
        ).fetchone()[0]
    assert client.acks[-1] == {"ok": True}
    assert rows >= 1
    client.disconnect()


def test_step1_gets_seed_once(shared_editor: ServerProcess) -> None:
    session = unique_session()
    clients = [YClient(shared_editor.url, session) for _ in range(4)]
    threads = [threading.Thread(target=client.connect) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [client.value().count("Welcome to CodeCollab") for client in clients] == [1] * 4
    for client in clients:
        client.disconnect()


def test_presence_counts_joins_and_leaves(shared_editor: ServerProcess) -> None:
    session = unique_session()
    first = YClient(shared_editor.url, session, name="Ada").connect()
    second = YClient(shared_editor.url, session, name="Bob").connect()
    wait_until(lambda: presence_count(first) == 2, 2, "first does not see 2 users")
    names = [user["name"] for user in first.last_presence()["users"]]
    assert names == ["Ada", "Bob"]
    second.disconnect()
    wait_until(lambda: presence_count(first) == 1, 1, "first does not see the leave")
    first.disconnect()


def test_presence_reloaded_tab_counts_once(shared_editor: ServerProcess) -> None:
    session = unique_session()
    observer = YClient(shared_editor.url, session).connect()
    tab_id = "reloading-tab"
    previous = None
    for _ in range(5):
        tab = YClient(shared_editor.url, session, client_id=tab_id).connect()
        if previous is not None:
            previous.disconnect()
        previous = tab
    started = time.monotonic()
    wait_until(lambda: presence_count(observer) == 2, 2, "the reloaded tab does not count once")
    assert time.monotonic() - started < 2
    assert max(p["count"] for p in observer.presence) == 2
    previous.disconnect()
    observer.disconnect()


def test_presence_closed_tab_gone_within_one_second(shared_editor: ServerProcess) -> None:
    session = unique_session()
    observer = YClient(shared_editor.url, session).connect()
    tab = RawSocketIOClient(
        shared_editor.port, {"session": session, "clientId": "closing-tab", "name": "Tab"}
    )
    wait_until(lambda: presence_count(observer) == 2, 2, "the tab did not join")
    closed_at = time.monotonic()
    tab.vanish()
    wait_until(lambda: presence_count(observer) == 1, 1, "the closed tab is still counted")
    assert time.monotonic() - closed_at < 1
    observer.disconnect()


def test_presence_silent_drop_gone_after_ping_timeout(shared_editor: ServerProcess) -> None:
    # The shared editor pings every 1 s with a 1 s timeout: gone within 1 + 2 * 1 s.
    session = unique_session()
    observer = YClient(shared_editor.url, session).connect()
    silent = RawSocketIOClient(
        shared_editor.port, {"session": session, "clientId": "silent-tab", "name": "Silent"}
    )
    wait_until(lambda: presence_count(observer) == 2, 2, "the silent client did not join")
    dropped_at = time.monotonic()
    wait_until(lambda: presence_count(observer) == 1, 6, "the silent client is still counted")
    assert time.monotonic() - dropped_at <= 3.5
    silent.close()
    observer.disconnect()


def test_awareness_newcomer_sees_existing_users(shared_editor: ServerProcess) -> None:
    session = unique_session()
    first = YClient(shared_editor.url, session).connect()
    state = json.dumps({"user": {"name": "Ada", "color": "#30bced"}, "cursor": None})
    ack = first.send_awareness(encode_awareness_update([AwarenessEntry(4242, 1, state)]))
    assert ack == {"ok": True}

    newcomer = YClient(shared_editor.url, session).connect()
    wait_until(lambda: newcomer.awareness, 2, "the newcomer got no awareness")
    entries = decode_awareness_update(newcomer.awareness[0])
    assert [(e.client_id, e.state) for e in entries] == [(4242, json.loads(state))]
    first.disconnect()
    newcomer.disconnect()


def test_awareness_removed_on_disconnect(shared_editor: ServerProcess) -> None:
    session = unique_session()
    first = YClient(shared_editor.url, session).connect()
    second = YClient(shared_editor.url, session).connect()
    first.send_awareness(encode_awareness_update([AwarenessEntry(77, 3, '{"user":{}}')]))
    wait_until(lambda: len(second.awareness) == 1, 2, "the awareness was not relayed")
    first.disconnect()
    wait_until(lambda: len(second.awareness) == 2, 2, "no removal after the disconnect")
    assert decode_awareness_update(second.awareness[1]) == [AwarenessEntry(77, 3, "null")]
    second.disconnect()


def test_awareness_name_renames_presence(shared_editor: ServerProcess) -> None:
    session = unique_session()
    client = YClient(shared_editor.url, session, name="Old").connect()
    state = json.dumps({"user": {"name": "New name", "color": "#112233"}})
    client.send_awareness(encode_awareness_update([AwarenessEntry(5, 1, state)]))
    wait_until(lambda: client.last_presence()["users"][0]["name"] == "New name", 2, "no rename")
    assert client.last_presence()["users"][0]["color"] == "#112233"
    client.disconnect()


def test_offline_edits_merge_after_reconnect(shared_editor: ServerProcess) -> None:
    session = unique_session()
    online = YClient(shared_editor.url, session).connect()
    offline = YClient(shared_editor.url, session).connect()
    offline.disconnect()
    offline.insert(0, "offline 😀\n")
    online.insert(len(online.value()), "online 中\n")
    online.wait_acked()
    offline.connect()
    offline.wait_acked()
    wait_until(lambda: online.value() == offline.value(), 5, "no convergence")
    text = server_text(shared_editor, session)
    assert text == online.value()
    assert (text.count("offline 😀"), text.count("online 中")) == (1, 1)
    online.disconnect()
    offline.disconnect()


def test_http_put_relayed_without_duplication(shared_editor: ServerProcess) -> None:
    session = unique_session()
    client = YClient(shared_editor.url, session).connect()
    request = urllib.request.Request(
        f"{shared_editor.url}/api/sessions/{session}/text",
        data="print('replaced') 😀\n".encode(),
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 200
    wait_until(lambda: client.value() == "print('replaced') 😀\n", 5, "PUT not relayed")
    client.disconnect()


EMOJI_ALPHABET = "abc xyz\n😀🎉中文é\u0301👨‍👩‍👧"


def random_edit(client: YClient, rng: random.Random) -> None:
    length = len(client.value())
    if length > 0 and rng.random() < 0.4:
        start = rng.randrange(length)
        client.delete(start, min(rng.randint(1, 4), length - start))
    else:
        piece = "".join(rng.choice(EMOJI_ALPHABET) for _ in range(rng.randint(1, 5)))
        client.insert(rng.randint(0, length), piece)


@pytest.mark.slow
def test_five_clients_converge_with_reconnects(shared_editor: ServerProcess) -> None:
    session = unique_session()
    clients = [YClient(shared_editor.url, session, name=f"c{i}").connect() for i in range(5)]
    failures: list[BaseException] = []

    def work(client: YClient, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(60):
                if rng.random() < 0.08:
                    client.disconnect()
                    for _ in range(rng.randint(1, 4)):
                        random_edit(client, rng)  # offline edits
                    time.sleep(rng.random() * 0.05)
                    client.connect()
                random_edit(client, rng)
                time.sleep(rng.random() * 0.01)
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [
        threading.Thread(target=work, args=(client, seed)) for seed, client in enumerate(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []

    for client in clients:
        client.wait_acked()
    expected = server_text(shared_editor, session)
    for client in clients:
        wait_until(lambda c=client: c.value() == expected, 10, f"{client.name} diverged")
    assert all(ack.get("ok") for client in clients for ack in client.acks)
    for client in clients:
        client.disconnect()
