"""A durable kombu transport on SQLite, the broker used when no other one is configured.

Call :func:`register` once, then use a broker URL such as ``sqlite:////srv/app/broker.sqlite3``.
Producers and workers in any number of processes on one machine share the file.
See docs/sqlite-broker.md for guarantees, options and limits.
"""

from .registration import SCHEME, TRANSPORT_PATH, register

__all__ = ["SCHEME", "TRANSPORT_PATH", "register"]
