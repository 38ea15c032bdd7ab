"""Typed readers for configuration taken from environment variables.

Every service reads its settings once, in its own ``config`` module, through these helpers.
``load_env()`` loads a ``.env`` file first (python-dotenv); variables already set in the
environment win over the file. Each reader raises ``ConfigError`` naming the variable, the
invalid value and the expected form, so a typo stops the service at start-up instead of
surfacing as a strange failure later.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from dotenv import load_dotenv

__all__ = [
    "ConfigError",
    "env_bool",
    "env_checked",
    "env_float",
    "env_int",
    "env_list",
    "env_str",
    "load_env",
    "repo_root",
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(ValueError):
    """A configuration variable has a value that cannot be used."""


def repo_root() -> Path:
    """Return the repository root: the folder that contains ``pyproject.toml``."""
    return Path(__file__).resolve().parent.parent


def load_env(path: str | os.PathLike[str] | None = None) -> bool:
    """Load variables from a ``.env`` file without overriding ones already set.

    :param path: the file to read. The default is ``.env`` at the repository root, so the
        same file applies whether a service starts from the root or from its own folder.
    :return: ``True`` when a file was found and read.
    """
    env_file = Path(path) if path is not None else repo_root() / ".env"
    return load_dotenv(env_file, override=False)


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    """Return the variable as a string, or ``default`` when it is unset or blank."""
    value = _raw(name, environ)
    return default if value is None else value


def env_checked(
    name: str,
    default: str,
    check: Callable[[str], object],
    environ: Mapping[str, str] | None = None,
) -> str:
    """Return the variable as a string once ``check`` accepts it, or ``default`` when unset.

    ``check`` is a parser such as ``ratelimiter.parse_policies`` that raises ``ValueError`` on
    invalid text; its result is dropped. The default is not checked.

    :raises ConfigError: naming the variable and its value, followed by the parser's message.
    """
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        check(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is invalid: {exc}") from None
    return value


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Return the variable as an integer within ``[minimum, maximum]``.

    :raises ConfigError: when the value is not an integer or is out of range.
    """
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not an integer; set a whole number") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_float(
    name: str,
    default: float,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    """Return the variable as a float within ``[minimum, maximum]``.

    :raises ConfigError: when the value is not a number or is out of range.
    """
    value = _raw(name, environ)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number; set a decimal number") from None
    _check_range(name, number, minimum, maximum)
    return number


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """Return the variable as a boolean: 1/true/yes/on or 0/false/no/off, any case.

    :raises ConfigError: for any other value.
    """
    value = _raw(name, environ)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use one of 1, 0, true, false")


def env_list(name: str, default: list[str], environ: Mapping[str, str] | None = None) -> list[str]:
    """Return the variable split on commas, with blanks and surrounding spaces dropped."""
    value = _raw(name, environ)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def _check_range(name: str, number: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} is below the minimum {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}={number} is above the maximum {maximum}")
