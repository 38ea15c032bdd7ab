import os
import socket
from pathlib import Path

import pytest

from launcher.config import Endpoint, LauncherConfig
from launcher.preflight import (
    check_broker,
    check_ports,
    find_port_owner,
    port_in_use,
    rate_limit_warnings,
    redact_url,
)


@pytest.fixture
def listening_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server
    server.close()


def _endpoint(port: int) -> Endpoint:
    return Endpoint(
        process="editor",
        label="Editor",
        host="127.0.0.1",
        port=port,
        port_variable="CODECOLLAB_PORT",
        health_path="/healthz",
    )


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_port_in_use_sees_listener(listening_socket: socket.socket) -> None:
    assert port_in_use("127.0.0.1", listening_socket.getsockname()[1])


def test_port_in_use_free_port() -> None:
    assert not port_in_use("127.0.0.1", _closed_port())


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_find_port_owner_names_this_process(listening_socket: socket.socket) -> None:
    owner = find_port_owner(listening_socket.getsockname()[1])
    assert owner is not None
    assert owner.pid == os.getpid()


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")
def test_check_ports_message_names_pid_and_variable(listening_socket: socket.socket) -> None:
    port = listening_socket.getsockname()[1]
    [message] = check_ports([_endpoint(port)], {"editor"})
    assert f"Port {port}, for editor (Editor), is already in use" in message
    assert f"pid {os.getpid()}" in message
    assert "set CODECOLLAB_PORT" in message


def test_check_ports_skips_process_not_in_procfile(listening_socket: socket.socket) -> None:
    assert check_ports([_endpoint(listening_socket.getsockname()[1])], {"producer"}) == []


def test_check_broker_reports_closed_port_without_password() -> None:
    [message] = check_broker(f"amqp://user:secret@127.0.0.1:{_closed_port()}//", timeout=1.0)
    assert "is not reachable" in message
    assert "secret" not in message


def test_check_broker_accepts_open_port(listening_socket: socket.socket) -> None:
    url = f"redis://127.0.0.1:{listening_socket.getsockname()[1]}/0"
    assert check_broker(url) == []


@pytest.mark.parametrize("url", ["", "sqlite-broker:///var/broker.db", "memory://"])
def test_check_broker_ignores_embedded_transport(url: str) -> None:
    assert check_broker(url) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("amqp://guest:guest@host:5672//", "amqp://guest:***@host:5672//"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url_hides_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(("storage", "warnings"), [("memory://", 1), ("redis://h:6379/0", 0)])
def test_rate_limit_warnings_for_memory_storage(storage: str, warnings: int) -> None:
    config = LauncherConfig(
        procfile=Path("Procfile"),
        ready_timeout=1.0,
        stop_timeout=1.0,
        endpoints=[],
        ratelimit_storage={"RATELIMIT_STORAGE_URL": storage},
    )
    assert len(rate_limit_warnings(config)) == warnings
