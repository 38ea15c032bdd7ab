"""Settings of the SQLite transport, read once from the broker URL and transport options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .store import StoreError, resolve_path

DEFAULT_VISIBILITY_TIMEOUT = 30.0
DEFAULT_MAX_MESSAGE_SIZE = 4 * 1024 * 1024
DEFAULT_FANOUT_TTL = 60.0
DEFAULT_BUSY_TIMEOUT = 60.0
DEFAULT_MAINTENANCE_INTERVAL = 30.0
DEFAULT_POLLING_INTERVAL = 0.05
# NORMAL in WAL mode loses no commit when a process crashes, and matches the scheduler's task
# store and result backend. FULL adds an fsync per publish, claim and ack.
DEFAULT_SYNCHRONOUS = "NORMAL"


@dataclass(frozen=True)
class BrokerSettings:
    """Options of one broker connection; each comes from ``broker_transport_options``.

    path: the database file named by the URL.
    visibility_timeout: seconds a claimed message stays invisible to other consumers without a
        renewal. The holder renews its leases every third of this while its process lives, so
        the value only bounds how long the messages of a killed consumer wait before redelivery.
    max_message_size: largest accepted message in bytes, as stored (JSON, body in base64).
        A larger message is rejected at publish with :class:`MessageTooLarge`.
    fanout_ttl: seconds a fanout message (Celery remote control) stays readable. A consumer that
        polls less often than this misses broadcasts.
    busy_timeout: seconds a statement keeps retrying while other processes hold the write lock.
    maintenance_interval: seconds between clean-up runs (expired rows, free pages, WAL checkpoint).
        One consumer process on the machine performs each run.
    synchronous: SQLite ``synchronous`` setting, FULL (survives power loss) or NORMAL (survives
        process crashes, faster).
    polling_interval: seconds between polls of the consumed queues while they are empty, which
        bounds the added delivery latency.
    """

    path: Path
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    fanout_ttl: float = DEFAULT_FANOUT_TTL
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT
    maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL
    synchronous: str = DEFAULT_SYNCHRONOUS
    polling_interval: float = DEFAULT_POLLING_INTERVAL

    @property
    def renew_interval(self) -> float:
        """Seconds between lease renewals, a third of the visibility timeout."""
        return self.visibility_timeout / 3

    @classmethod
    def from_options(cls, url: str, options: Mapping[str, Any]) -> BrokerSettings:
        """Build the settings from a ``sqlite://`` URL and kombu transport options.

        Unknown option names are left to kombu, which also reads ``body_encoding``.

        :raises StoreError: naming the option and its invalid value.
        """
        return cls(
            path=resolve_path(url),
            visibility_timeout=_positive(options, "visibility_timeout", DEFAULT_VISIBILITY_TIMEOUT),
            max_message_size=int(_positive(options, "max_message_size", DEFAULT_MAX_MESSAGE_SIZE)),
            fanout_ttl=_positive(options, "fanout_ttl", DEFAULT_FANOUT_TTL),
            busy_timeout=_positive(options, "busy_timeout", DEFAULT_BUSY_TIMEOUT),
            maintenance_interval=_positive(
                options, "maintenance_interval", DEFAULT_MAINTENANCE_INTERVAL
            ),
            synchronous=str(options.get("synchronous", DEFAULT_SYNCHRONOUS)).upper(),
            polling_interval=_positive(options, "polling_interval", DEFAULT_POLLING_INTERVAL),
        )


def _positive(options: Mapping[str, Any], name: str, default: float) -> float:
    value = options.get(name, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = -1.0
    if not number > 0:
        raise StoreError(
            f"invalid sqlite broker option {name}={value!r}: expected a positive number"
        )
    return number
