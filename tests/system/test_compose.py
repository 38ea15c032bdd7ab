"""Wiring of docker-compose.yml and the Dockerfile, checked without a Docker engine.

The compose file is parsed with PyYAML (merge keys resolved) and each service is checked
against the repository: the files its commands run exist, its ports are the ones the README
documents, every variable it sets is documented in .env.example, and the paths it writes
lie on volumes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path, PurePosixPath

import pytest
import yaml

from envconfig import repo_root

ROOT = repo_root()
APP_DIR = PurePosixPath("/app")  # WORKDIR of the image, where the repository is copied
APP_SERVICES = ["editor", "producer", "worker", "worker-io", "beat", "flower"]
ALL_SERVICES = ["rabbitmq", "redis", *APP_SERVICES]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def documented_ports() -> dict[str, set[int]]:
    """Ports by service, from the README table whose first column names compose services."""
    ports: dict[str, set[int]] = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.match(r"\|\s*`([\w-]+)`\s*\|\s*([\d, ]+)\s*\|", line)
        if match:
            ports[match[1]] = {int(port) for port in match[2].replace(" ", "").split(",")}
    return ports


@pytest.fixture(scope="module")
def documented_variables() -> set[str]:
    """Variables listed in .env.example, set (NAME=...) or commented out (# NAME=...)."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _command(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def _repo_path(container_path: str, working_dir: str) -> Path:
    path = PurePosixPath(working_dir) / container_path
    return ROOT / path.relative_to(APP_DIR)


def _healthcheck_words(service: dict) -> list[str]:
    test = service["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        return shlex.split(test[1])
    return list(test[1:])


def test_compose_lists_every_service(services: dict) -> None:
    assert sorted(services) == sorted(ALL_SERVICES)


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_uses_repository_image(services: dict, name: str) -> None:
    assert services[name]["build"] == "."
    assert services[name]["image"] == "codecollab-stack:latest"


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_command_files_exist(services: dict, name: str) -> None:
    service = services[name]
    command = _command(service)
    working_dir = service["working_dir"]

    if command[0] == "python":
        assert _repo_path(command[1], working_dir).is_file(), command
    else:
        assert command[:2] == ["celery", "-A"], command
        module, attribute = command[2].split(".")
        entry_point = _repo_path(f"{module}.py", working_dir)
        assert entry_point.is_file(), entry_point
        assert re.search(rf"\b{attribute}\b", entry_point.read_text()), attribute


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_service_has_healthcheck(services: dict, name: str) -> None:
    assert services[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_healthcheck_files_exist(services: dict, name: str) -> None:
    service = services[name]
    for word in _healthcheck_words(service):
        # /app/var is written at run time; everything else under /app comes from the repository.
        if word.startswith(f"{APP_DIR}/") and not word.startswith(f"{APP_DIR}/var"):
            assert _repo_path(word, service["working_dir"]).is_file(), word


@pytest.mark.parametrize("name", ALL_SERVICES)
def test_published_ports_are_documented(
    services: dict, documented_ports: dict[str, set[int]], name: str
) -> None:
    published = set()
    for mapping in services[name].get("ports", []):
        *_, host_port, container_port = str(mapping).split(":")
        assert host_port == container_port, mapping
        published.add(int(container_port))
    assert published == documented_ports.get(name, set())


@pytest.mark.parametrize(
    ("name", "variable"),
    [("editor", "CODECOLLAB_PORT"), ("producer", "SCHEDULER_PORT")],
)
def test_app_port_matches_its_setting(services: dict, name: str, variable: str) -> None:
    [mapping] = services[name]["ports"]
    assert str(services[name]["environment"][variable]) == mapping.split(":")[-1]


def test_flower_port_matches_command(services: dict) -> None:
    assert "--port=5555" in _command(services["flower"])


def test_scaled_worker_has_no_fixed_name_or_port(services: dict) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker


@pytest.mark.parametrize("name", APP_SERVICES)
def test_environment_variables_are_documented(
    services: dict, documented_variables: set[str], name: str
) -> None:
    undocumented = set(services[name].get("environment", {})) - documented_variables
    assert undocumented == set()


def test_interpolated_variables_are_documented(documented_variables: set[str]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{?([A-Z][A-Z0-9_]*)", text))
    assert interpolated - documented_variables - {"HOSTNAME"} == set()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_service_reads_dotenv(services: dict, name: str) -> None:
    assert services[name]["env_file"] == [{"path": ".env", "required": False}]


@pytest.mark.parametrize("name", APP_SERVICES)
def test_depends_on_healthy_services(services: dict, name: str) -> None:
    for dependency, rule in services[name]["depends_on"].items():
        assert rule == {"condition": "service_healthy"}
        assert "healthcheck" in services[dependency]


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("rabbitmq", "/var/lib/rabbitmq"),
        ("redis", "/data"),
        ("editor", "/app/var/data"),
        ("producer", "/app/var/media"),
        ("worker", "/app/var/media"),
    ],
)
def test_data_lives_on_named_volume(compose: dict, name: str, target: str) -> None:
    mounts = dict(reversed(mount.split(":")[:2]) for mount in compose["services"][name]["volumes"])
    assert mounts[target] in compose["volumes"]


@pytest.mark.parametrize(
    "variable",
    ["CODECOLLAB_DATABASE_PATH", "SCHEDULER_STATE_DIR", "SCHEDULER_OUTBOX", "MEDIA_ROOT"],
)
def test_data_paths_lie_on_volumes(services: dict, variable: str) -> None:
    for name in APP_SERVICES:
        service = services[name]
        targets = [mount.split(":")[1] for mount in service["volumes"]]
        path = service["environment"][variable]
        assert any(path == target or path.startswith(target + "/") for target in targets)


def test_bind_mounts_exist(services: dict) -> None:
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source


def test_worker_queues_match_scheduler_defaults(services: dict) -> None:
    from scheduler.config import load_settings

    settings = load_settings({})
    assert "--queues=" + settings.video_queue in _command(services["worker"])
    assert "--queues=" + settings.io_queue in _command(services["worker-io"])


def test_rabbitmq_consumer_timeout_exceeds_time_limits() -> None:
    from scheduler.config import load_settings

    settings = load_settings({})
    conf = (ROOT / "docker/rabbitmq/20-stack.conf").read_text()
    timeout_ms = int(re.search(r"^consumer_timeout\s*=\s*(\d+)", conf, re.MULTILINE)[1])
    assert timeout_ms == settings.consumer_timeout * 1000
    assert timeout_ms > settings.video_time_limit * 1000
    assert timeout_ms > settings.io_time_limit * 1000


# Dockerfile


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def test_dockerfile_runs_as_non_root(dockerfile: str) -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile, flags=re.MULTILINE)
    assert users
    assert users[-1] not in {"root", "0"}


def test_dockerfile_builds_assets_in_node_stage(dockerfile: str) -> None:
    assert re.search(r"^FROM node:\S+ AS assets", dockerfile, flags=re.MULTILINE)
    assert "COPY --from=assets" in dockerfile


def test_dockerfile_copy_sources_exist(dockerfile: str) -> None:
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, flags=re.MULTILINE):
        *sources, _destination = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".env", ".venv", "var", "**/node_modules"):
        assert entry in ignored
