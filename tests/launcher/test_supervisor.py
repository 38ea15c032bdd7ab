"""The launcher as a user runs it: real subprocesses, real signals, no orphans left behind."""

from __future__ import annotations

import io
import os
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from launcher.config import load_config
from launcher.output import PrefixedOutput
from launcher.supervisor import Supervisor, group_members

from .harness import free_port

pytestmark = pytest.mark.skipif(not Path("/proc/1/stat").exists(), reason="needs Linux /proc")

# A worker that forks a grandchild, prints its pid, and logs "ready" the way Celery does.
FAKE_WORKER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("grandchild", child.pid, flush=True)
print("celery@test ready.", flush=True)
time.sleep(600)
"""

# A process that ignores SIGTERM, so only SIGKILL stops it.
STUBBORN = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ignoring SIGTERM", flush=True)
time.sleep(600)
"""

# A parent that stops its child itself on SIGTERM, as a Celery worker stops its pool. The
# child reports a SIGTERM of its own, which only a signal to the whole group would send.
POOL_CHILD = """
import signal, sys, time
def on_term(*_):
    print("child got SIGTERM", flush=True)
    sys.exit(1)
def on_usr1(*_):
    print("child stopped by parent", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGUSR1, on_usr1)
print("child ready", flush=True)
time.sleep(600)
"""

POOL = """
import pathlib, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, str(pathlib.Path(__file__).with_name("child.py"))])
def on_term(*_):
    child.send_signal(signal.SIGUSR1)
    child.wait(timeout=10)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
time.sleep(600)
"""

FAILING = """
import sys
print("cannot open the database", flush=True)
sys.exit(3)
"""


def _write_procfile(tmp_path: Path, lines: dict[str, str]) -> Path:
    scripts = {
        "worker.py": FAKE_WORKER,
        "stubborn.py": STUBBORN,
        "failing.py": FAILING,
        "pool.py": POOL,
        "child.py": POOL_CHILD,
    }
    for name, source in scripts.items():
        (tmp_path / name).write_text(textwrap.dedent(source))
    procfile = tmp_path / "Procfile"
    procfile.write_text("".join(f"{name}: {command}\n" for name, command in lines.items()))
    return procfile


def _editor_line(port: int) -> str:
    return f"{sys.executable} -m http.server --bind 127.0.0.1 {port}"


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_launcher_sigint_leaves_no_process(tmp_path: Path, launch) -> None:
    port = free_port()
    procfile = _write_procfile(
        tmp_path,
        {"editor": _editor_line(port), "worker": f"{sys.executable} {tmp_path}/worker.py"},
    )
    run = launch(["-f", str(procfile)], {"CODECOLLAB_PORT": str(port), "CELERY_BROKER_URL": ""})
    grandchild = int(run.wait_for(r"worker\s+\| grandchild (\d+)", timeout=20)[1])
    run.wait_for(r"everything is ready", timeout=20)
    run.wait_for(rf"Editor:\s+http://127\.0\.0\.1:{port}/", timeout=5)

    run.popen.send_signal(signal.SIGINT)
    code = run.drain(timeout=20)

    assert code == 0
    assert not _pid_alive(grandchild)
    assert {name: group_members(pgid) for name, pgid in run.started_groups().items()} == {
        "editor": [],
        "worker": [],
    }


def test_launcher_sigkills_process_ignoring_sigterm(tmp_path: Path, launch) -> None:
    procfile = _write_procfile(tmp_path, {"stubborn": f"{sys.executable} {tmp_path}/stubborn.py"})
    run = launch(["-f", str(procfile)], {"STACK_STOP_TIMEOUT": "1", "CELERY_BROKER_URL": ""})
    run.wait_for(r"stubborn\s+\| ignoring SIGTERM", timeout=20)
    run.wait_for(r"everything is ready", timeout=20)

    run.popen.send_signal(signal.SIGTERM)
    code = run.drain(timeout=20)

    assert code == 0
    assert any("sending SIGKILL: stubborn" in line for line in run.lines)
    assert group_members(run.started_groups()["stubborn"]) == []


def test_launcher_lets_parent_stop_its_pool(tmp_path: Path, launch) -> None:
    procfile = _write_procfile(tmp_path, {"pool": f"{sys.executable} {tmp_path}/pool.py"})
    run = launch(["-f", str(procfile)], {"CELERY_BROKER_URL": ""})
    run.wait_for(r"pool\s+\| child ready", timeout=20)
    run.wait_for(r"everything is ready", timeout=20)

    run.popen.send_signal(signal.SIGINT)
    code = run.drain(timeout=20)

    assert code == 0
    assert any("child stopped by parent" in line for line in run.lines)
    assert not any("child got SIGTERM" in line for line in run.lines)
    assert group_members(run.started_groups()["pool"]) == []


def test_launcher_process_failing_at_start_stops_all(tmp_path: Path, launch) -> None:
    port = free_port()
    procfile = _write_procfile(
        tmp_path,
        {"editor": _editor_line(port), "failing": f"{sys.executable} {tmp_path}/failing.py"},
    )
    run = launch(["-f", str(procfile)], {"CODECOLLAB_PORT": str(port), "CELERY_BROKER_URL": ""})

    code = run.drain(timeout=30)

    assert code == 1
    assert any("failing exited with 3 while starting" in line for line in run.lines)
    assert any("  cannot open the database" in line for line in run.lines)
    assert group_members(run.started_groups()["editor"]) == []


def test_launcher_port_taken_starts_nothing(tmp_path: Path, launch) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        procfile = _write_procfile(tmp_path, {"editor": _editor_line(port)})
        run = launch(["-f", str(procfile)], {"CODECOLLAB_PORT": str(port)})
        code = run.drain(timeout=20)

    assert code == 2
    assert any(f"pid {os.getpid()}" in line for line in run.lines)
    assert run.started_groups() == {}


def test_signal_handler_takes_no_lock(tmp_path: Path) -> None:
    # A handler that printed or set a threading.Event could wait for a lock that the main
    # thread holds where the signal interrupted it, and hang the launcher for good.
    output = PrefixedOutput(["editor"], stream=io.StringIO())
    supervisor = Supervisor([], load_config(), {}, tmp_path, output)
    holder_ready = threading.Event()
    release = threading.Event()

    def hold_lock() -> None:
        with output._lock:
            holder_ready.set()
            release.wait(10)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    holder_ready.wait(5)
    started = time.monotonic()
    supervisor._on_signal(signal.SIGINT, None)
    supervisor._on_signal(signal.SIGINT, None)
    elapsed = time.monotonic() - started
    release.set()
    holder.join(5)
    assert elapsed < 1
