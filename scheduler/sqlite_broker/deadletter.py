"""Dead-lettering as RabbitMQ does it, applied to messages stored as kombu JSON payloads.

A queue declared with the argument ``x-dead-letter-exchange`` sends each message that is
rejected without requeue, or that expires, to that exchange, with the routing key of
``x-dead-letter-routing-key`` or else the message's own. The message keeps its body, headers
and properties and gains an ``x-death`` header, a list with one entry per queue and reason
that dead-lettered it, newest first, in the format of RabbitMQ 3.8 and later:
``{"queue", "reason", "count", "time", "exchange", "routing-keys"}``.

The functions here only build payloads and match bindings; :mod:`.store` runs them inside the
transaction that deletes the original message.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

DEAD_LETTER_EXCHANGE = "x-dead-letter-exchange"
DEAD_LETTER_ROUTING_KEY = "x-dead-letter-routing-key"

logger = logging.getLogger(__name__)

REJECTED = "rejected"
EXPIRED = "expired"


@dataclass(frozen=True)
class DeadLetterTarget:
    """The exchange and routing key that receive the dead-lettered messages of one queue."""

    exchange: str  # "" is the default exchange, which routes to the queue named by the key
    routing_key: str | None  # None keeps the routing key the message was published with


@dataclass(frozen=True)
class DeadLettered:
    """The outcome of removing one message from ``queue`` by a reject or its expiry."""

    queue: str
    target: DeadLetterTarget | None  # None: the queue has no dead-letter exchange
    routing_key: str  # the routing key used for the dead-letter exchange
    destinations: list[str]  # queues that received the copy; empty when it was dropped


def target_of(arguments: Mapping[str, Any]) -> DeadLetterTarget | None:
    """Return the dead-letter target of a queue's arguments, or None when it has none."""
    exchange = arguments.get(DEAD_LETTER_EXCHANGE)
    if exchange is None:
        return None
    routing_key = arguments.get(DEAD_LETTER_ROUTING_KEY)
    return DeadLetterTarget(str(exchange), None if routing_key is None else str(routing_key))


def dead_letter_message(
    message: dict[str, Any], queue: str, reason: str, target: DeadLetterTarget, now: float
) -> tuple[dict[str, Any], str]:
    """Return the copy of ``message`` to publish to ``target`` and its routing key.

    The copy gets a new delivery tag, an updated ``x-death`` header and the
    ``x-first-death-*`` headers. Its ``expiration`` moves to the ``original-expiration``
    header, as RabbitMQ does, so it does not expire again in the dead-letter queue.
    """
    properties = dict(message.get("properties") or {})
    delivery_info = dict(properties.get("delivery_info") or {})
    headers = dict(message.get("headers") or {})
    original_exchange = str(delivery_info.get("exchange") or "")
    original_key = str(delivery_info.get("routing_key") or "")
    routing_key = original_key if target.routing_key is None else target.routing_key

    deaths = [dict(death) for death in headers.get("x-death") or [] if isinstance(death, dict)]
    previous = next(
        (d for d in deaths if d.get("queue") == queue and d.get("reason") == reason), None
    )
    if previous is not None:
        deaths.remove(previous)
    count = int(previous.get("count", 0)) + 1 if previous is not None else 1
    death = {
        "count": count,
        "reason": reason,
        "queue": queue,
        "time": int(now),
        "exchange": original_exchange,
        "routing-keys": [original_key],
    }
    if "expiration" in properties:
        expiration = properties.pop("expiration")
        death["original-expiration"] = expiration
        headers["original-expiration"] = expiration
    headers["x-death"] = [death, *deaths]
    headers.setdefault("x-first-death-queue", queue)
    headers.setdefault("x-first-death-reason", reason)
    headers.setdefault("x-first-death-exchange", original_exchange)

    delivery_info.update(exchange=target.exchange, routing_key=routing_key)
    properties.update(delivery_info=delivery_info, delivery_tag=str(uuid.uuid4()))
    return {**message, "headers": headers, "properties": properties}, routing_key


def match_bindings(
    exchange_type: str, bindings: Iterable[tuple[str, str | None, str]], routing_key: str
) -> list[str]:
    """Return the queues of ``bindings`` (routing key, topic pattern, queue) that match.

    Direct exchanges compare the routing key, topic exchanges match the pattern that kombu
    stored at bind time, and fanout exchanges take every bound queue.
    """
    queues: list[str] = []
    for key, pattern, queue in bindings:
        if exchange_type == "fanout":
            matched = True
        elif exchange_type == "topic":
            matched = pattern is not None and _compile(pattern).match(routing_key) is not None
        else:
            matched = key == routing_key
        if matched and queue not in queues:
            queues.append(queue)
    return queues


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def log_dead_letter(outcome: DeadLettered, delivery_tag: str | None) -> None:
    """Log where a rejected or expired message went."""
    target = outcome.target
    if target is None:
        logger.debug(
            "sqlite broker: message %s removed from queue %r, which has no dead-letter exchange",
            delivery_tag,
            outcome.queue,
        )
    elif outcome.destinations:
        logger.info(
            "sqlite broker: dead-lettered message %s from queue %r to exchange %r with "
            "routing key %r, into queues %s",
            delivery_tag,
            outcome.queue,
            target.exchange,
            outcome.routing_key,
            outcome.destinations,
        )
    else:
        logger.warning(
            "sqlite broker: message %s from queue %r dropped: its dead-letter exchange %r "
            "routes routing key %r to no queue; declare and bind the dead-letter queue",
            delivery_tag,
            outcome.queue,
            target.exchange,
            outcome.routing_key,
        )


def log_expired_dead_letters(outcomes: list[DeadLettered]) -> None:
    """Log one line per source queue for the expired messages of a maintenance run."""
    counts: dict[tuple[str, str, tuple[str, ...]], int] = {}
    for outcome in outcomes:
        if outcome.target is None:
            continue
        key = (outcome.queue, outcome.target.exchange, tuple(outcome.destinations))
        counts[key] = counts.get(key, 0) + 1
    for (queue, exchange, destinations), count in counts.items():
        if destinations:
            logger.info(
                "sqlite broker: dead-lettered %d expired messages from queue %r to exchange %r, "
                "into queues %s",
                count,
                queue,
                exchange,
                list(destinations),
            )
        else:
            logger.warning(
                "sqlite broker: dropped %d expired messages from queue %r: its dead-letter "
                "exchange %r routes them to no queue; declare and bind the dead-letter queue",
                count,
                queue,
                exchange,
            )
