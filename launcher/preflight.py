"""Checks run before anything starts: free ports, a reachable broker, per-process rate limits.

Each check returns plain messages for a person, so that ``make run`` stops with a clear
reason ("port 5000 is in use by pid 4242: python app.py") instead of a traceback from a
service that failed to bind.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .config import Endpoint, LauncherConfig

_DEFAULT_BROKER_PORTS = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672, "redis": 6379, "rediss": 6379}
_TCP_LISTEN = "0A"  # socket state LISTEN in /proc/net/tcp


@dataclass(frozen=True)
class PortOwner:
    """A process with a listening socket."""

    pid: int
    command: str  # its command line, arguments joined by spaces
    under_launcher: bool  # one of its ancestors is another launcher


def port_in_use(host: str, port: int) -> bool:
    """Return whether binding ``host:port`` fails because another socket is bound to it.

    The probe binds with ``SO_REUSEADDR`` as the services do, so a port in TIME_WAIT counts
    as free.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def find_port_owner(port: int, proc: Path = Path("/proc")) -> PortOwner | None:
    """Find the process listening on TCP ``port`` through Linux's ``/proc``.

    :return: ``None`` when the owner cannot be seen: on another OS, in another container, or
        owned by another user while the launcher is not root.
    """
    inodes = _listening_inodes(port, proc)
    if not inodes:
        return None

    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        if inodes & _socket_links(pid_dir / "fd"):
            pid = int(pid_dir.name)
            return PortOwner(pid, _command_line(pid, proc), _has_launcher_ancestor(pid, proc))
    return None


def _socket_links(fd_dir: Path) -> set[str]:
    """Return the ``socket:[inode]`` targets of a process's file descriptors."""
    links: set[str] = set()
    try:
        entries = list(fd_dir.iterdir())
    except OSError:
        return links
    for entry in entries:
        try:
            # A descriptor can close between listing and reading, the listing's own included.
            links.add(str(entry.readlink()))
        except OSError:
            continue
    return links


def _listening_inodes(port: int, proc: Path) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == _TCP_LISTEN:
                inodes.add(f"socket:[{fields[9]}]")
    return inodes


def _command_line(pid: int, proc: Path) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def _parent_pid(pid: int, proc: Path) -> int:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return 0
    # The command name in brackets may contain spaces, so split after its closing bracket.
    return int(stat.rsplit(")", 1)[1].split()[1])


def _has_launcher_ancestor(pid: int, proc: Path) -> bool:
    current = _parent_pid(pid, proc)
    for _ in range(64):
        if current <= 1:
            return False
        if "-m launcher" in _command_line(current, proc):
            return True
        current = _parent_pid(current, proc)
    return False


def describe_taken_port(endpoint: Endpoint) -> str:
    """Return the message for a port that is already in use, naming its owner when visible."""
    head = f"Port {endpoint.port}, for {endpoint.process} ({endpoint.label}), is already in use"
    fix = (
        f"Stop that process, or set {endpoint.port_variable} to a free port "
        "in .env or the environment."
    )
    owner = find_port_owner(endpoint.port)
    if owner is None:
        return f"{head} by a process the launcher cannot see. {fix}"
    if owner.under_launcher:
        return (
            f"{head} by pid {owner.pid} ({owner.command}), started by another `make run`. "
            "Press Ctrl-C in that terminal first, or pick other ports."
        )
    return f"{head} by pid {owner.pid} ({owner.command}). {fix}"


def check_ports(endpoints: list[Endpoint], process_names: set[str]) -> list[str]:
    """Return one message per port that a Procfile process needs and another program uses."""
    problems = []
    for endpoint in endpoints:
        if endpoint.process in process_names and port_in_use(endpoint.host, endpoint.port):
            problems.append(describe_taken_port(endpoint))
    return problems


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``, for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_broker(broker_url: str, timeout: float = 3.0) -> list[str]:
    """Return a message when a networked broker in ``broker_url`` does not accept connections.

    Only AMQP and Redis URLs are checked, for each ``;``-separated failover address. Other
    transports, and an empty URL (the embedded broker), need no server.
    """
    if not broker_url:
        return []

    problems = []
    for url in broker_url.split(";"):
        parts = urlsplit(url.strip())
        scheme = parts.scheme.split("+")[0]
        if scheme not in _DEFAULT_BROKER_PORTS:
            continue
        host = parts.hostname or "localhost"
        port = parts.port or _DEFAULT_BROKER_PORTS[scheme]
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as error:
            reason = error.strerror or str(error)
            problems.append(
                f"The broker at {redact_url(url.strip())} is not reachable ({reason}). "
                "Start it (for RabbitMQ: `docker compose up -d rabbitmq`), or leave "
                "CELERY_BROKER_URL unset to use the embedded broker."
            )
    return problems


def rate_limit_warnings(config: LauncherConfig) -> list[str]:
    """Return a warning when a service keeps its rate-limit buckets in process memory."""
    in_memory = [name for name, url in config.ratelimit_storage.items() if url.startswith("memory")]
    if not in_memory:
        return []
    subject = " and ".join(in_memory) + (" use" if len(in_memory) > 1 else " uses")
    return [
        f"{subject} memory://, so each process keeps its own rate-limit buckets and a client "
        "gets the full limit from every process. Set redis://127.0.0.1:6379/0 to share them."
    ]
