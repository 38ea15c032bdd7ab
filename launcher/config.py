"""Settings of the launcher, read once from the environment and ``.env``.

The launcher reads the port settings of the services it starts, so that the port check, the
readiness probes and the printed URLs follow the same variables as the services themselves.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from envconfig import env_float, env_int, env_str, load_env, repo_root

# Hosts that mean "every interface": probe and print them as loopback instead.
_WILDCARD_HOSTS = {"", "0.0.0.0", "::", "[::]"}


@dataclass(frozen=True)
class Endpoint:
    """A TCP port that one Procfile process listens on, and how to tell that it is ready."""

    process: str  # Procfile process name
    label: str  # name shown to the user
    host: str  # address the service binds
    port: int
    port_variable: str  # setting that changes the port, named in error messages
    health_path: str  # path that responds with HTTP 2xx-4xx once the service is up
    page_path: str = "/"  # path printed for a person to open

    @property
    def probe_host(self) -> str:
        """Address to connect to: loopback when the service binds every interface."""
        return "127.0.0.1" if self.host in _WILDCARD_HOSTS else self.host.strip("[]")

    @property
    def health_url(self) -> str:
        """URL polled until the service responds."""
        return f"http://{_url_host(self.probe_host)}:{self.port}{self.health_path}"

    @property
    def page_url(self) -> str:
        """URL printed for a person once everything is ready."""
        host = "localhost" if self.host in _WILDCARD_HOSTS else _url_host(self.host.strip("[]"))
        return f"http://{host}:{self.port}{self.page_path}"


@dataclass(frozen=True)
class LogReadiness:
    """Processes without a port, whose output line ``pattern`` means they are ready."""

    name_prefix: str  # applies to Procfile processes whose name starts with this
    pattern: re.Pattern[str]
    description: str  # what the line means, for the "still waiting" message


@dataclass(frozen=True)
class LauncherConfig:
    """Everything the launcher needs, with values already validated."""

    procfile: Path
    ready_timeout: float  # seconds to wait for every process to become ready
    stop_timeout: float  # seconds between SIGTERM and SIGKILL on shutdown
    endpoints: list[Endpoint]
    log_readiness: list[LogReadiness] = field(default_factory=list)
    broker_url: str = ""  # CELERY_BROKER_URL; empty means the embedded broker
    # Rate-limit storage URL by the variable that sets it; memory:// keeps buckets per process.
    ratelimit_storage: dict[str, str] = field(default_factory=dict)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def load_config(procfile: Path | None = None) -> LauncherConfig:
    """Load ``.env`` and read the launcher's settings.

    :raises envconfig.ConfigError: when a variable has an invalid value.
    """
    load_env()
    endpoints = [
        Endpoint(
            process="editor",
            label="Editor",
            host=env_str("CODECOLLAB_HOST", "127.0.0.1"),
            port=env_int("CODECOLLAB_PORT", 3000, minimum=1, maximum=65535),
            port_variable="CODECOLLAB_PORT",
            health_path="/healthz",
        ),
        Endpoint(
            process="producer",
            label="Jobs page and API",
            host=env_str("SCHEDULER_HOST", "127.0.0.1"),
            port=env_int("SCHEDULER_PORT", 5000, minimum=1, maximum=65535),
            port_variable="SCHEDULER_PORT",
            health_path="/healthz",
        ),
        Endpoint(
            process="flower",
            label="Flower, the Celery monitor",
            host=env_str("FLOWER_ADDRESS", "127.0.0.1"),
            port=env_int("FLOWER_PORT", 5555, minimum=1, maximum=65535),
            port_variable="FLOWER_PORT",
            health_path="/healthcheck",
        ),
    ]
    log_readiness = [
        LogReadiness("worker", re.compile(r"\S+@\S+ ready\."), "Celery worker ready"),
        LogReadiness("beat", re.compile(r"beat: Starting"), "celery beat started"),
    ]
    return LauncherConfig(
        procfile=procfile if procfile is not None else repo_root() / "Procfile",
        ready_timeout=env_float("STACK_READY_TIMEOUT", 90.0, minimum=1.0),
        stop_timeout=env_float("STACK_STOP_TIMEOUT", 10.0, minimum=0.0),
        endpoints=endpoints,
        log_readiness=log_readiness,
        broker_url=env_str("CELERY_BROKER_URL", ""),
        ratelimit_storage=_rate_limit_storage(),
    )


def _rate_limit_storage() -> dict[str, str]:
    """Return each service's rate-limit storage URL by the variable that sets it.

    Both services fall back to ``RATELIMIT_STORAGE_URL``; the editor's own variable wins.
    """
    shared = env_str("RATELIMIT_STORAGE_URL", "memory://")
    editor = env_str("CODECOLLAB_RATE_LIMIT_STORAGE", "")
    if editor:
        return {"CODECOLLAB_RATE_LIMIT_STORAGE": editor, "RATELIMIT_STORAGE_URL": shared}
    return {"RATELIMIT_STORAGE_URL": shared}


def environment_for_children() -> dict[str, str]:
    """Return the environment for Procfile processes: ours, with the virtualenv first on PATH.

    Procfile lines call ``python`` and ``celery`` by name, so the interpreter running the
    launcher puts its own ``bin`` folder first. Output is unbuffered so that log lines arrive
    as they are written.
    """
    env = dict(os.environ)
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([venv_bin, env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env
