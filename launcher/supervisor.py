"""Supervisor that starts Procfile processes, waits for readiness and stops them all.

Each process runs under ``/bin/sh -c`` in a new session, so it leads its own process group
and everything it forks stays in that group unless it calls ``setsid`` itself.

Stopping sends SIGTERM to the top of each group: the shell and the command it started. The
command then stops its own children, as a Celery worker does with its pool (a SIGTERM to
every pool child would kill running tasks mid-frame). Members left once the top of their
group has exited get SIGTERM next, and whatever still runs after ``stop_timeout`` seconds
gets SIGKILL, so that no child, grandchild or pool worker outlives the launcher.

NOTE: a launcher killed with SIGKILL cannot clean up. Its process groups keep running, and
the next ``make run`` reports their ports as taken, with their pids.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from .config import Endpoint, LauncherConfig, LogReadiness
from .output import PrefixedOutput
from .procfile import ProcessSpec

_PROC = Path("/proc")
_POLL_INTERVAL = 0.25  # seconds between readiness and liveness checks
_KILL_WAIT = 3.0  # seconds to wait for groups to vanish after SIGKILL
_SETTLE_TIME = 2.0  # seconds a process without a probe must run before it counts as ready
_TAIL_LINES = 15  # lines of output kept per process, shown when it fails to start

EXIT_OK = 0
EXIT_PROCESS_FAILED = 1


@dataclass
class ManagedProcess:
    """A started Procfile process and what is known of its readiness."""

    spec: ProcessSpec
    popen: subprocess.Popen[bytes]
    endpoint: Endpoint | None
    log_readiness: LogReadiness | None
    ready: threading.Event = field(default_factory=threading.Event)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=_TAIL_LINES))
    reader: threading.Thread | None = None
    last_probe_error: str = ""
    started_at: float = field(default_factory=time.monotonic)

    def uptime(self) -> float:
        """Seconds since the process was started."""
        return time.monotonic() - self.started_at

    @property
    def pgid(self) -> int:
        """Process group id: the pid of the shell that leads the group."""
        return self.popen.pid


def group_alive(pgid: int, proc: Path = Path("/proc")) -> bool:
    """Return whether process group ``pgid`` has a member that is not a zombie.

    On Linux this reads ``/proc``, because an unreaped zombie would otherwise keep
    the group "alive" for ``killpg(pgid, 0)``.
    """
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return bool(group_members(pgid, proc))


def group_members(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Return the pids of the live, non-zombie processes in process group ``pgid`` (Linux)."""
    return [pid for pid, _parent in _group_processes(pgid, proc)]


def group_top(pgid: int, proc: Path = Path("/proc")) -> list[int]:
    """Return the group leader and its direct children, if alive (Linux)."""
    return [pid for pid, parent in _group_processes(pgid, proc) if pgid in (pid, parent)]


def _group_processes(pgid: int, proc: Path) -> list[tuple[int, int]]:
    """Return ``(pid, parent pid)`` of the live, non-zombie processes in group ``pgid``."""
    processes = []
    for pid_dir in proc.iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            stat = (pid_dir / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name: state, ppid, pgrp, ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            processes.append((int(pid_dir.name), int(fields[1])))
    return processes


class Supervisor:
    """Runs the Procfile processes until a signal or a failure, then stops all of them."""

    def __init__(
        self,
        specs: list[ProcessSpec],
        config: LauncherConfig,
        env: dict[str, str],
        cwd: Path,
        output: PrefixedOutput,
    ) -> None:
        self._specs = specs
        self._config = config
        self._env = env
        self._cwd = cwd
        self._out = output
        self._processes: list[ManagedProcess] = []
        # Set by the signal handler, read by the loops that poll every _POLL_INTERVAL. A
        # threading.Event would deadlock: its set() takes a lock that the interrupted main
        # thread may hold inside wait().
        self._stop_requested = False
        self._signals_received = 0
        self._killed_by_signal = False

    # Signals

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only flags and system calls here: printing could wait for the output's lock.
        self._signals_received += 1
        self._stop_requested = True
        if self._signals_received > 1:
            self._killed_by_signal = True
            self._kill_all(signal.SIGKILL)

    def _install_signal_handlers(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    # Start

    def _start(self, spec: ProcessSpec) -> ManagedProcess:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", spec.command],
            cwd=self._cwd,
            env=self._env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        managed = ManagedProcess(
            spec=spec,
            popen=popen,
            endpoint=self._endpoint_for(spec.name),
            log_readiness=self._log_readiness_for(spec.name),
        )
        managed.reader = threading.Thread(
            target=self._relay_output, args=(managed,), name=f"output-{spec.name}", daemon=True
        )
        managed.reader.start()
        self._out.note(f"started {spec.name} (pid {popen.pid}): {spec.command}")
        return managed

    def _endpoint_for(self, name: str) -> Endpoint | None:
        return next((e for e in self._config.endpoints if e.process == name), None)

    def _log_readiness_for(self, name: str) -> LogReadiness | None:
        return next((r for r in self._config.log_readiness if name.startswith(r.name_prefix)), None)

    def _relay_output(self, managed: ManagedProcess) -> None:
        assert managed.popen.stdout is not None
        pattern = managed.log_readiness.pattern if managed.log_readiness else None
        for raw in iter(managed.popen.stdout.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            managed.tail.append(text)
            self._out.line(managed.spec.name, text)
            if pattern is not None and not managed.ready.is_set() and pattern.search(text):
                managed.ready.set()
        managed.popen.stdout.close()

    # Readiness

    def _probe(self, managed: ManagedProcess) -> bool:
        """Return whether ``managed`` is ready now; HTTP probes accept any status below 500."""
        if managed.ready.is_set():
            return True
        endpoint = managed.endpoint
        if endpoint is None:
            if managed.log_readiness is None and managed.uptime() >= _SETTLE_TIME:
                managed.ready.set()  # no probe: still running after the settle time is ready
            return managed.ready.is_set()

        connection = http.client.HTTPConnection(endpoint.probe_host, endpoint.port, timeout=1.0)
        try:
            connection.request("GET", endpoint.health_path)
            status = connection.getresponse().status
        except OSError as error:
            managed.last_probe_error = str(error)
            return False
        finally:
            connection.close()
        if status >= 500:
            managed.last_probe_error = f"{endpoint.health_url} answered HTTP {status}"
            return False
        managed.ready.set()
        return True

    def _wait_until_ready(self) -> bool:
        """Wait for every process to be ready; return ``False`` when one exits or times out."""
        started = time.monotonic()
        deadline = started + self._config.ready_timeout
        pending = list(self._processes)
        while pending and not self._stop_requested:
            for managed in list(pending):
                if managed.popen.poll() is not None:
                    self._report_exit(managed, during_start=True)
                    return False
                if self._probe(managed):
                    pending.remove(managed)
                    where = f" at {managed.endpoint.page_url}" if managed.endpoint else ""
                    elapsed = time.monotonic() - started
                    self._out.note(f"{managed.spec.name} is ready{where} ({elapsed:.1f} s)")

            if time.monotonic() > deadline:
                return self._handle_ready_timeout(pending)
            time.sleep(_POLL_INTERVAL)
        return not self._stop_requested

    def _handle_ready_timeout(self, pending: list[ManagedProcess]) -> bool:
        ok = True
        for managed in pending:
            if managed.endpoint is not None:
                ok = False
                self._out.note(
                    f"{managed.spec.name} did not answer {managed.endpoint.health_url} within "
                    f"{self._config.ready_timeout:g} s (last error: {managed.last_probe_error}). "
                    "Raise STACK_READY_TIMEOUT if the machine is slow."
                )
            else:
                assert managed.log_readiness is not None
                self._out.note(
                    f"{managed.spec.name} is running but printed no "
                    f"'{managed.log_readiness.description}' line within "
                    f"{self._config.ready_timeout:g} s; carrying on"
                )
        return ok

    def _report_exit(self, managed: ManagedProcess, during_start: bool) -> None:
        code = managed.popen.returncode
        outcome = (
            f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with {code}"
        )
        when = "while starting" if during_start else "unexpectedly"
        self._out.note(f"{managed.spec.name} {outcome} {when}; stopping every process")
        if managed.reader is not None:
            managed.reader.join(timeout=2.0)
        if managed.tail:
            self._out.note(f"last lines of {managed.spec.name}:")
            for text in managed.tail:
                self._out.note(f"  {text}")

    def _print_banner(self) -> None:
        self._out.note("everything is ready:")
        endpoints = [m.endpoint for m in self._processes if m.endpoint is not None]
        width = max((len(e.label) for e in endpoints), default=0) + 1
        for endpoint in endpoints:
            self._out.note(f"  {endpoint.label + ':':<{width}} {endpoint.page_url}")
        self._out.note("press Ctrl-C to stop every process")

    # Stop

    def _kill_all(self, sig: signal.Signals) -> list[ManagedProcess]:
        """Send ``sig`` to every group that still has members; return those groups."""
        signalled = []
        for managed in self._processes:
            managed.popen.poll()  # reap the leader, so a zombie does not count as alive
            if not group_alive(managed.pgid):
                continue
            try:
                os.killpg(managed.pgid, sig)
                signalled.append(managed)
            except ProcessLookupError:
                pass
        return signalled

    def _signal_tops(self, sig: signal.Signals) -> dict[int, set[int]]:
        """Send ``sig`` to the top of every group (see the module docs).

        :return: the signalled pids by process group id.
        """
        tops: dict[int, set[int]] = {}
        for managed in self._processes:
            managed.popen.poll()
            pids = group_top(managed.pgid) if _PROC.is_dir() else [managed.pgid]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if pids:
                tops[managed.pgid] = set(pids)
        return tops

    def _wait_for_groups(self, timeout: float, tops: dict[int, set[int]]) -> list[ManagedProcess]:
        """Wait until every group is empty or ``timeout`` passes; return those still alive.

        Once every top process of a group has exited, the members it left behind get SIGTERM.
        """
        deadline = time.monotonic() + timeout
        while True:
            for managed in self._processes:
                managed.popen.poll()
            alive = [m for m in self._processes if group_alive(m.pgid)]
            for managed in alive:
                top = tops.get(managed.pgid)
                if top and not (top & set(group_members(managed.pgid))):
                    del tops[managed.pgid]
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(managed.pgid, signal.SIGTERM)
            if not alive or time.monotonic() >= deadline:
                return alive
            time.sleep(0.1)

    def _shutdown(self) -> None:
        running = [m.spec.name for m in self._processes if group_alive(m.pgid)]
        if running:
            self._out.note(
                f"stopping {', '.join(running)} "
                f"(SIGTERM, SIGKILL after {self._config.stop_timeout:g} s)"
            )
        tops = self._signal_tops(signal.SIGTERM)
        alive = self._wait_for_groups(self._config.stop_timeout, tops)
        if alive:
            self._out.note(
                "still running after SIGTERM, sending SIGKILL: "
                + ", ".join(m.spec.name for m in alive)
            )
            self._kill_all(signal.SIGKILL)
            alive = self._wait_for_groups(_KILL_WAIT, tops={})
        for managed in self._processes:
            if managed.reader is not None:
                managed.reader.join(timeout=2.0)
        if self._killed_by_signal:
            self._out.note("a second signal killed every process with SIGKILL")
        if alive:
            leftovers = {m.spec.name: group_members(m.pgid) for m in alive}
            self._out.note(f"could not stop these processes (pids by name): {leftovers}")
        else:
            self._out.note("every process has stopped")

    # Main loop

    def run(self) -> int:
        """Start every process, wait for a signal or a failure, stop everything.

        :return: 0 after a stop by signal, 1 when a process exited or never became ready.
        """
        self._install_signal_handlers()
        exit_code = EXIT_OK
        try:
            for spec in self._specs:
                self._processes.append(self._start(spec))

            if self._wait_until_ready():
                self._print_banner()
                exit_code = self._watch()
            elif not self._stop_requested:
                exit_code = EXIT_PROCESS_FAILED
        finally:
            self._stop_requested = True
            self._shutdown()
        return exit_code

    def _watch(self) -> int:
        while True:
            time.sleep(_POLL_INTERVAL)
            if self._stop_requested:
                return EXIT_OK
            for managed in self._processes:
                if managed.popen.poll() is not None:
                    self._report_exit(managed, during_start=False)
                    return EXIT_PROCESS_FAILED
