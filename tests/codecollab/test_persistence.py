"""Persistence across restarts, SIGKILL, compaction and unloading, with real server processes."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from pathlib import Path

from codecollab.documents import SEED_TEXT

from .conftest import ServerFactory, ServerProcess
from .yclient import YClient, unique_session, wait_until


def server_text(server: ServerProcess, session: str) -> str:
    with urllib.request.urlopen(f"{server.url}/api/sessions/{session}/text", timeout=5) as reply:
        return reply.read().decode("utf-8")


def stored_update_count(database: Path, session: str) -> int:
    with sqlite3.connect(database) as connection:
        return connection.execute(
            "SELECT count(*) FROM updates WHERE session_id = ?", (session,)
        ).fetchone()[0]


def sessions_loaded(server: ServerProcess) -> int:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as reply:
        return json.loads(reply.read())["sessions_loaded"]


def type_text(client: YClient, text: str) -> None:
    for char in text:
        client.insert(len(client.value()), char)


def test_text_survives_clean_restart(start_editor: ServerFactory) -> None:
    server = start_editor()
    session = unique_session()
    client = YClient(server.url, session).connect()
    type_text(client, "kept 😀\n")
    client.wait_acked()
    expected = client.value()
    client.disconnect()
    assert server.stop() == 0

    restarted = start_editor(database_path=server.database_path)
    assert server_text(restarted, session) == expected


def test_acknowledged_updates_survive_sigkill(start_editor: ServerFactory) -> None:
    server = start_editor()
    session = unique_session()
    client = YClient(server.url, session).connect()
    type_text(client, "every acked keystroke 中文 🎉")
    client.wait_acked()
    expected = client.value()
    server.kill()  # no shutdown hook runs: only what was committed before each ack remains

    restarted = start_editor(database_path=server.database_path)
    assert server_text(restarted, session) == expected


def test_reconnecting_tab_after_sigkill_does_not_duplicate(start_editor: ServerFactory) -> None:
    server = start_editor()
    session = unique_session()
    tab = YClient(server.url, session).connect()
    type_text(tab, "abc")
    tab.wait_acked()
    server.kill()
    wait_until(lambda: not tab.sio.connected, 5, "the tab did not notice the crash")

    restarted = start_editor(database_path=server.database_path)
    tab.url = restarted.url
    tab.connect()
    tab.wait_acked()
    text = server_text(restarted, session)
    assert text == tab.value()
    assert (text.count("Welcome to CodeCollab"), text.count("abc")) == (1, 1)


def test_unacknowledged_offline_edits_arrive_after_restart(start_editor: ServerFactory) -> None:
    server = start_editor()
    session = unique_session()
    tab = YClient(server.url, session).connect()
    server.kill()
    wait_until(lambda: not tab.sio.connected, 5, "the tab did not notice the crash")
    tab.disconnect()
    tab.insert(0, "written while the server was down\n")

    restarted = start_editor(database_path=server.database_path)
    tab.url = restarted.url
    tab.connect()
    tab.wait_acked()
    assert server_text(restarted, session) == "written while the server was down\n" + SEED_TEXT


def test_compaction_replaces_updates(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_COMPACT_AFTER_UPDATES="5", CODECOLLAB_SWEEP_INTERVAL="0.1")
    session = unique_session()
    client = YClient(server.url, session).connect()
    type_text(client, "0123456789")
    client.wait_acked()
    wait_until(lambda: stored_update_count(server.database_path, session) < 5, 5, "no compaction")
    expected = client.value()
    client.disconnect()
    server.kill()

    restarted = start_editor(database_path=server.database_path)
    assert server_text(restarted, session) == expected


def test_idle_session_unloaded_and_reloaded(start_editor: ServerFactory) -> None:
    server = start_editor(CODECOLLAB_IDLE_UNLOAD_AFTER="0.3", CODECOLLAB_SWEEP_INTERVAL="0.1")
    session = unique_session()
    client = YClient(server.url, session).connect()
    type_text(client, "unload me")
    client.wait_acked()
    expected = client.value()
    client.disconnect()
    wait_until(lambda: sessions_loaded(server) == 0, 5, "the idle session stayed loaded")
    assert f"session {session}: unloaded" in server.log_text()

    newcomer = YClient(server.url, session).connect()
    assert newcomer.value() == expected
    newcomer.disconnect()
