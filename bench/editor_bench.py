"""Editor benchmark: CodeCollab against @y/websocket-server 0.1.1, side by side in one run.

Run from the repository root after ``npm ci`` in ``bench/editor``::

    .venv/bin/python bench/editor_bench.py            # the full run, about 5 minutes
    .venv/bin/python bench/editor_bench.py --quick    # 10 and 100 clients only
    .venv/bin/python bench/editor_bench.py --pin      # server on CPU 0, load on the others

For each client count N (10, 100, 500), each server starts fresh on a free loopback port. N
Node.js clients (``bench/editor/load.mjs``, the same Yjs code for both servers) join one
session: a typist alone in one Node.js process, and the N - 1 peers spread evenly over
``--load-processes`` other processes (4 by default). Once every client has synced, the typist
appends 20 characters per second for 10 seconds. Each peer records the receipt time of every
character: the moment its message event fires, before the update is decoded and applied, so
one process's backlog of Yjs work does not count as latency. Send and receipt times are read
from ``CLOCK_MONOTONIC`` (``process.hrtime`` in Node.js), which all processes of the machine
share. Latency is receipt minus send, over every character and peer. A character that has not
reached a peer 2 s after the last keystroke counts as missing instead. Every peer that is still
connected must then have the typist's text within 60 s, or the run fails. A peer the server
disconnected (for Socket.IO, a heartbeat timeout when its load process lags) does not
reconnect: it is counted, and its remaining characters are missing.

This script samples the server process from ``/proc``: CPU time from the first keystroke to
the end of the drain, and resident memory before the clients connect and once they are synced.
Then 1,000 idle clients measure memory per connection, and newcomers to a 1 MB document measure
connect-to-synced time.

The peer server keeps documents in memory only. CodeCollab also commits every update to SQLite
before acknowledging it, so its figures include that work. With ``--pin`` each server runs alone
on CPU 0 and every load process on the remaining CPUs, the same for both servers, so the load
generator does not take the server's CPU. Results go to stdout as a Markdown
table and to ``bench/results/editor-<UTC time>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
LOAD_DIR = REPO_ROOT / "bench" / "editor"
RESULTS_DIR = REPO_ROOT / "bench" / "results"
PEER_SERVER = LOAD_DIR / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Seconds after the last keystroke within which a character counts as delivered.
DRAIN_SECONDS = 2.0
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Placement:
    """CPUs the server and the load processes may run on; ``None`` leaves the kernel to choose."""

    server: set[int] | None = None
    clients: set[int] | None = None


# Set once by ``main`` from ``--pin``; both servers and all load processes use the same one.
PLACEMENT = Placement()


def on_cpus(cpus: set[int] | None) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that confines the child to ``cpus`` before it starts any thread."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


# Rate limits far above what the benchmark sends: every client shares 127.0.0.1.
CODECOLLAB_ENV = {
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


def cpu_seconds(pid: int) -> float:
    """Return user plus system CPU time of ``pid``, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    """Return the resident memory of ``pid``, in MiB."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * PAGE_SIZE / (1024 * 1024)


@dataclass
class Server:
    """A benchmarked server process."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def url(self) -> str:
        """Base URL of the server."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """Stop the server and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


def start_server(kind: str) -> Server:
    """Start a fresh server of ``kind`` (``codecollab`` or ``peer``) and wait until it responds."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    log = (workdir / "server.log").open("wb")
    if kind == "codecollab":
        env = {
            **os.environ,
            **CODECOLLAB_ENV,
            "CODECOLLAB_HOST": "127.0.0.1",
            "CODECOLLAB_PORT": str(port),
            "CODECOLLAB_DATABASE_PATH": str(workdir / "bench.db"),
        }
        command = [sys.executable, "app.py"]
        cwd = REPO_ROOT / "codecollab"
        health = f"http://127.0.0.1:{port}/healthz"
    else:
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
        command = ["node", str(PEER_SERVER)]
        cwd = LOAD_DIR
        health = f"http://127.0.0.1:{port}/"
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=log,
        preexec_fn=on_cpus(PLACEMENT.server),
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=1):
                return Server(kind, port, process, workdir)
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"{kind} exited; see {workdir / 'server.log'}") from None
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{kind} did not respond within 30 s; see {workdir / 'server.log'}")


def run_load(
    server: Server, options: dict[str, object], session: str | None = None
) -> subprocess.Popen[str]:
    """Start a Node.js load process against ``server``; it reads commands on stdin."""
    payload = {
        "server": server.kind,
        "url": server.url,
        "session": session or secrets.token_urlsafe(16),
    }
    return subprocess.Popen(
        ["node", "load.mjs", json.dumps({**payload, **options})],
        cwd=LOAD_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=on_cpus(PLACEMENT.clients),
    )


def read_result(load: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    """Read the next JSON line of the load process."""
    assert load.stdout is not None
    line = load.stdout.readline()
    if not line:
        load.wait(timeout=timeout)
        raise RuntimeError(f"the load clients exited with {load.returncode} and no result")
    return json.loads(line)


def send_command(load: subprocess.Popen[str], command: str) -> None:
    """Send one command line (``go``, ``report`` or ``close``) to a load process."""
    assert load.stdin is not None
    load.stdin.write(command + "\n")
    load.stdin.flush()


def percentile(ordered: list[float], p: float) -> float:
    """Return the nearest-rank ``p``-th percentile of the sorted list ``ordered``."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass
class TypingResult:
    """One typing run: N clients, one typist, on one server."""

    server: str
    clients: int
    # From the keystroke to the arrival of its WebSocket frame at each peer.
    p50_ms: float
    p99_ms: float
    max_ms: float
    # From the keystroke to the client library's event: for CodeCollab, after socket.io-client
    # has decoded the packet; for the peer, the same as the arrival.
    event_p50_ms: float
    event_p99_ms: float
    delivered: int
    missing: int
    disconnected: int
    cpu_percent: float
    cpu_ms_per_client_second: float
    rss_idle_mib: float
    rss_connected_mib: float
    rss_per_client_kib: float
    connect_s: float


def typing_run(
    kind: str, clients: int, seconds: float, rate: int, load_processes: int
) -> TypingResult:
    """Measure keystroke-to-peer latency and server cost for ``clients`` clients."""
    server = start_server(kind)
    loads: list[subprocess.Popen[str]] = []
    try:
        pid = server.process.pid
        time.sleep(1)
        rss_idle = rss_mib(pid)
        session = secrets.token_urlsafe(16)
        started = time.monotonic()
        typist = run_load(
            server, {"mode": "typist", "seconds": seconds, "rate": rate}, session=session
        )
        loads.append(typist)
        read_result(typist, timeout=180)
        peers = split_evenly(clients - 1, load_processes)
        first_index = 1
        for count in peers:
            loads.append(
                run_load(
                    server,
                    {"mode": "peers", "clients": count, "firstIndex": first_index},
                    session=session,
                )
            )
            first_index += count
        for load in loads[1:]:
            read_result(load, timeout=180)
        connect_s = time.monotonic() - started
        # Let the server settle after the joins (presence events, sync replies).
        time.sleep(1)
        rss_connected = rss_mib(pid)

        cpu_start = cpu_seconds(pid)
        typing_started = time.monotonic()
        send_command(typist, "go")
        typed = read_result(typist, timeout=seconds + 120)
        time.sleep(DRAIN_SECONDS)
        cpu_used = cpu_seconds(pid) - cpu_start
        window = time.monotonic() - typing_started
        for load in loads[1:]:
            send_command(load, f"report {typed['text']}")
        received = [read_result(load, timeout=120) for load in loads[1:]]
        for load in loads:
            send_command(load, "close")
        for load in loads:
            load.wait(timeout=30)
    finally:
        for load in loads:
            if load.poll() is None:
                load.kill()
        server.stop()

    sent = [float(t) for t in typed["sent"]]
    # Characters that reach a peer later than DRAIN_SECONDS after the last keystroke count as
    # missing, not as latency; they must still arrive for the convergence check.
    cutoff = sent[-1] + DRAIN_SECONDS * 1000
    latencies: list[float] = []
    event_latencies: list[float] = []
    missing = 0
    diverged = 0
    disconnected = 0
    for batch in received:
        for arrivals, events, text, lost in zip(
            batch["arrivals"], batch["events"], batch["texts"], batch["lost"], strict=True
        ):
            in_time = [(k, arrival) for k, arrival in enumerate(arrivals) if arrival <= cutoff]
            latencies.extend(arrival - sent[k] for k, arrival in in_time)
            event_latencies.extend(events[k] - sent[k] for k, _ in in_time)
            missing += len(sent) - len(in_time)
            if lost is not None:
                # Closed by the server (Socket.IO's heartbeat when the client process lags):
                # the bench clients do not reconnect, so the rest of its edits count as missing.
                disconnected += 1
            elif text != typed["text"]:
                diverged += 1
    if typed["disconnected"] is not None:
        raise RuntimeError(f"{kind}: the typist was disconnected ({typed['disconnected']})")
    if diverged:
        raise RuntimeError(f"{kind}: {diverged} connected peers did not converge")
    if not latencies:
        raise RuntimeError(f"{kind}: no character reached a peer within {DRAIN_SECONDS} s")
    latencies.sort()
    event_latencies.sort()
    return TypingResult(
        server=kind,
        clients=clients,
        p50_ms=round(percentile(latencies, 50), 2),
        p99_ms=round(percentile(latencies, 99), 2),
        max_ms=round(latencies[-1], 2),
        event_p50_ms=round(percentile(event_latencies, 50), 2),
        event_p99_ms=round(percentile(event_latencies, 99), 2),
        delivered=len(latencies),
        missing=missing,
        disconnected=disconnected,
        cpu_percent=round(100 * cpu_used / window, 1),
        cpu_ms_per_client_second=round(1000 * cpu_used / window / clients, 3),
        rss_idle_mib=round(rss_idle, 1),
        rss_connected_mib=round(rss_connected, 1),
        rss_per_client_kib=round((rss_connected - rss_idle) * 1024 / clients, 1),
        connect_s=round(connect_s, 2),
    )


def split_evenly(total: int, parts: int) -> list[int]:
    """Split ``total`` into at most ``parts`` positive counts that differ by at most one."""
    parts = max(1, min(parts, total))
    return [total // parts + (i < total % parts) for i in range(parts)]


def idle_run(kind: str, clients: int) -> dict[str, float]:
    """Measure server memory with ``clients`` idle, synced connections."""
    server = start_server(kind)
    try:
        pid = server.process.pid
        time.sleep(1)
        rss_before = rss_mib(pid)
        load = run_load(server, {"mode": "idle", "clients": clients, "holdSeconds": 8})
        ready = read_result(load, timeout=180)
        time.sleep(3)
        rss_after = rss_mib(pid)
        load.wait(timeout=60)
    finally:
        server.stop()
    return {
        "clients": clients,
        "rss_before_mib": round(rss_before, 1),
        "rss_connected_mib": round(rss_after, 1),
        "rss_per_client_kib": round((rss_after - rss_before) * 1024 / clients, 1),
        "connect_s": round(float(ready["connectMs"]) / 1000, 2),
    }


def newcomer_run(kind: str, document_bytes: int, newcomers: int) -> dict[str, object]:
    """Measure connect-to-synced time of newcomers to a document of ``document_bytes``."""
    server = start_server(kind)
    try:
        load = run_load(
            server,
            {"mode": "newcomer", "documentBytes": document_bytes, "newcomers": newcomers},
        )
        result = read_result(load, timeout=180)
        load.wait(timeout=30)
    finally:
        server.stop()
    return {
        "document_characters": result["documentCharacters"],
        "median_ms": round(float(result["median"]), 1),
        "max_ms": round(float(result["max"]), 1),
        "runs_ms": [round(float(t), 1) for t in result["runs"]],
    }


@dataclass
class Report:
    """Everything one benchmark run measured, with the machine it ran on."""

    started: str
    machine: dict[str, str]
    typing: list[TypingResult] = field(default_factory=list)
    idle: dict[str, dict[str, float]] = field(default_factory=dict)
    newcomer: dict[str, dict[str, object]] = field(default_factory=dict)


def machine_info() -> dict[str, str]:
    """Describe the machine and the versions under test."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "node": node,
        "kernel": platform.release(),
        "placement": (
            f"server on CPUs {sorted(PLACEMENT.server)}, load on CPUs {sorted(PLACEMENT.clients)}"
            if PLACEMENT.server is not None and PLACEMENT.clients is not None
            else "not pinned"
        ),
    }


def markdown(report: Report) -> str:
    """Render the report as the Markdown tables of docs/benchmarks.md."""
    lines = [
        "| clients | server | p50 ms | p99 ms | max ms | event p50 / p99 ms | missing | "
        "disconnected | server CPU % | CPU ms per client-second | RSS per client KiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in report.typing:
        lines.append(
            f"| {row.clients} | {row.server} | {row.p50_ms} | {row.p99_ms} | {row.max_ms} | "
            f"{row.event_p50_ms} / {row.event_p99_ms} | "
            f"{row.missing} | {row.disconnected} | {row.cpu_percent} | "
            f"{row.cpu_ms_per_client_second} | "
            f"{row.rss_per_client_kib} |"
        )
    lines.append("")
    by_count: dict[int, dict[str, TypingResult]] = {}
    for row in report.typing:
        by_count.setdefault(row.clients, {})[row.server] = row
    lines.append(
        "| clients | p99 ratio CodeCollab / peer | event p99 ratio CodeCollab / peer | CPU ratio |"
    )
    lines.append("| --- | --- | --- | --- |")
    for clients, rows in sorted(by_count.items()):
        if {"codecollab", "peer"} <= rows.keys():
            ours, peer = rows["codecollab"], rows["peer"]
            cpu_ratio = ours.cpu_percent / peer.cpu_percent if peer.cpu_percent else float("inf")
            lines.append(
                f"| {clients} | {ours.p99_ms / peer.p99_ms:.2f} | "
                f"{ours.event_p99_ms / peer.event_p99_ms:.2f} | {cpu_ratio:.2f} |"
            )
    lines.append("")
    lines.append("| measure | CodeCollab | peer |")
    lines.append("| --- | --- | --- |")
    if report.idle:
        ours, peer = report.idle.get("codecollab", {}), report.idle.get("peer", {})
        lines.append(
            f"| RSS with {ours.get('clients')} idle clients, MiB | "
            f"{ours.get('rss_connected_mib')} | {peer.get('rss_connected_mib')} |"
        )
        lines.append(
            f"| RSS per idle client, KiB | {ours.get('rss_per_client_kib')} | "
            f"{peer.get('rss_per_client_kib')} |"
        )
    if report.newcomer:
        ours, peer = report.newcomer.get("codecollab", {}), report.newcomer.get("peer", {})
        lines.append(
            f"| newcomer sync of a 1 MB document, median ms | {ours.get('median_ms')} | "
            f"{peer.get('median_ms')} |"
        )
        lines.append(
            f"| newcomer sync of a 1 MB document, max ms | {ours.get('max_ms')} | "
            f"{peer.get('max_ms')} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run every measurement and print and store the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="10 and 100 clients only")
    parser.add_argument("--seconds", type=float, default=10.0, help="typing time per run (s)")
    parser.add_argument("--rate", type=int, default=20, help="typed characters per second")
    parser.add_argument("--idle-clients", type=int, default=1000, help="idle connections")
    parser.add_argument(
        "--load-processes", type=int, default=4, help="Node.js processes for the peers"
    )
    parser.add_argument(
        "--clients",
        type=int,
        nargs="+",
        help="client counts of the typing runs (default 10 100 500, or 10 100 with --quick)",
    )
    parser.add_argument(
        "--typing-only", action="store_true", help="skip the idle and newcomer runs"
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the server on CPU 0 and the load processes on the other CPUs",
    )
    arguments = parser.parse_args()

    if not PEER_SERVER.exists():
        sys.exit(f"{PEER_SERVER} is missing: run `npm ci` in {LOAD_DIR}")
    if arguments.pin:
        available = os.sched_getaffinity(0)
        if 0 not in available or len(available) < 2:
            sys.exit(f"--pin needs CPU 0 and one more CPU; this process may use {available}")
        PLACEMENT.server = {0}
        PLACEMENT.clients = available - {0}
    counts = arguments.clients or ([10, 100] if arguments.quick else [10, 100, 500])
    report = Report(started=datetime.now(UTC).isoformat(timespec="seconds"), machine=machine_info())

    for clients in counts:
        for kind in ("codecollab", "peer"):
            result = typing_run(
                kind, clients, arguments.seconds, arguments.rate, arguments.load_processes
            )
            print(json.dumps(asdict(result)), flush=True)
            report.typing.append(result)
    for kind in () if arguments.typing_only else ("codecollab", "peer"):
        report.idle[kind] = idle_run(kind, arguments.idle_clients)
        print(kind, "idle", json.dumps(report.idle[kind]), flush=True)
        report.newcomer[kind] = newcomer_run(kind, 1024 * 1024, newcomers=7)
        print(kind, "newcomer", json.dumps(report.newcomer[kind]), flush=True)

    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS_DIR / f"editor-{stamp}.json").write_text(json.dumps(asdict(report), indent=2))
    print()
    print(json.dumps(report.machine))
    print(markdown(report))


if __name__ == "__main__":
    main()
