"""Registration of the ``sqlite://`` URL scheme with kombu."""

from __future__ import annotations

from kombu.transport import TRANSPORT_ALIASES

SCHEME = "sqlite"
TRANSPORT_PATH = "scheduler.sqlite_broker.transport:Transport"


def register() -> None:
    """Make kombu and Celery select this transport for ``sqlite://`` broker URLs.

    Call it before the first connection is made, for example where the Celery app is created.
    Calling it again has no effect.

    :raises RuntimeError: when another transport already claimed the ``sqlite`` scheme.
    """
    current = TRANSPORT_ALIASES.get(SCHEME)
    if current not in (None, TRANSPORT_PATH):
        raise RuntimeError(
            f"the kombu transport alias {SCHEME!r} already points to {current!r}; "
            f"remove that registration to use {TRANSPORT_PATH}"
        )
    TRANSPORT_ALIASES[SCHEME] = TRANSPORT_PATH
