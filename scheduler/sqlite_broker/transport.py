"""kombu transport that keeps its queues in an SQLite database file.

It builds on kombu's virtual transport, which emulates AMQP exchanges and queues in the client,
and stores everything that must outlive a process or be seen by other processes in SQLite:

- Messages. A publish is one INSERT, so a message is fully visible or absent.
- Claims. A consumer leases a message with one UPDATE ... RETURNING. An ack deletes the row, a
  reject with requeue clears the lease, and a reject without requeue deletes the row and
  publishes it to the queue's dead-letter exchange in the same transaction. A lease that ends
  with none of these (the consumer was killed) makes the message ready again. :mod:`.keeper`
  renews the leases of a live consumer.
- Routing. Exchange types and bindings live in the database, so a producer routes to queues
  declared only by a worker, and fanout exchanges reach consumers in every process. A message
  routed through an exchange is stored only if its binding still exists at the insert, so a
  queue deleted in the middle of a publish leaves no message behind.

The transport declares itself asynchronous, so a Celery worker runs its non-blocking event loop
(a kombu hub) on it, as on RabbitMQ. SQLite has no socket to watch, so
:meth:`Transport.register_with_event_loop` polls the consumed queues from a hub timer every
``polling_interval`` seconds, and again right after an ack or reject frees room for a message.
For the prefork pool this matters beyond speed: only with the event loop does Celery use
billiard's ``AsynPool``, which gives each pool process its own pipe. The blocking pool that
Celery uses otherwise makes its idle processes share one lock on the task pipe, and a process
killed while it holds that lock stops the whole pool.

Usage::

    from scheduler.sqlite_broker import register

    register()
    app = Celery(broker="sqlite:////srv/app/var/broker.sqlite3")
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections import deque
from queue import Empty
from typing import Any

from kombu.transport import virtual
from kombu.transport.base import to_rabbitmq_queue_arguments
from kombu.utils.json import dumps, loads

from .deadletter import log_dead_letter
from .emptypolls import EmptyPolls
from .keeper import LeaseKeeper, release_dead_owners
from .liveness import new_owner
from .settings import DEFAULT_POLLING_INTERVAL, BrokerSettings
from .store import Claim, Store, StoreError

logger = logging.getLogger(__name__)

# Maximum number of messages that one claim statement leases to a consumer with room for more.
MAX_CLAIM_BATCH = 16

# Paths whose start-up was already logged at INFO level by this process. Celery opens several
# connections per worker, and one line per file is enough for an operator.
_announced: set[str] = set()
# Paths whose messages left unacknowledged were already counted in a warning by this process.
# Each new connection finds the same messages until a consumer claims them again.
_expiry_reported: set[str] = set()
_announced_lock = threading.Lock()


class MessageTooLarge(ValueError):
    """A message exceeds the ``max_message_size`` transport option."""


class QoS(virtual.QoS):
    """Unacknowledged-message state of a channel, with acks and rejects applied to the database."""

    def ack(self, delivery_tag: str) -> None:
        self.channel.ack_claim(delivery_tag)
        super().ack(delivery_tag)
        self._request_poll()

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        # kombu's base class would re-publish a requeued message as a copy at the tail.
        # Clearing the lease instead keeps the one row, its position and its delivery count.
        if requeue:
            self.channel.release_claim(delivery_tag)
        else:
            self.channel.reject_claim(delivery_tag)
        self._quick_ack(delivery_tag)
        self._request_poll()

    def _request_poll(self) -> None:
        # The consumer has room for another message now. A closed channel has no connection.
        transport = self.channel.connection
        if transport is not None:
            transport.request_poll()


class Channel(virtual.Channel):
    """A virtual channel backed by one SQLite connection."""

    QoS = QoS
    supports_fanout = True

    def __init__(self, connection: Transport, **kwargs: Any):
        super().__init__(connection, **kwargs)
        self.settings: BrokerSettings = connection.settings
        self.owner: str = connection.owner
        self.store = Store(
            self.settings.path,
            busy_timeout=self.settings.busy_timeout,
            synchronous=self.settings.synchronous,
        )
        # delivery tag -> (row id, queue) of each message leased through this channel
        self._claims: dict[str, tuple[int, str]] = {}
        # queue -> messages claimed in a batch and not delivered yet
        self._prefetched: dict[str, deque[Claim]] = {}
        # queue -> fanout exchange it is bound to, and the id of the last broadcast read
        self._fanout_queues: dict[str, str] = {}
        self._fanout_cursors: dict[str, int] = {}
        self._no_ack_queues: set[str] = set()
        self._exchange_type_cache: dict[str, str] = {}
        self._unroutable_exchanges: set[str] = set()
        self._empty_polls = EmptyPolls()

    # Publishing

    def _encode(self, message: dict[str, Any], destination: str) -> str:
        payload = dumps(message)
        size = len(payload.encode("utf-8"))
        if size > self.settings.max_message_size:
            raise MessageTooLarge(
                f"message of {size} bytes for {destination} exceeds the sqlite broker's "
                f"max_message_size of {self.settings.max_message_size} bytes; pass large data "
                "by reference (a file path or URL) or raise "
                "broker_transport_options['max_message_size']"
            )
        return payload

    def basic_publish(
        self, message: dict[str, Any], exchange: str, routing_key: str, **kwargs: Any
    ) -> None:
        # kombu routes by the bindings it read a moment earlier. So the exchange travels on to
        # _put, which stores the message only if the binding still exists, as AMQP does.
        if exchange:
            kwargs["bound_from"] = exchange
        super().basic_publish(message, exchange, routing_key, **kwargs)

    def _put(
        self,
        queue: str,
        message: dict[str, Any],
        bound_from: str | None = None,
        **kwargs: Any,
    ) -> None:
        now = time.time()
        payload = self._encode(message, f"queue {queue!r}")
        expiration = message["properties"].get("expiration")
        expires_at = now + float(expiration) / 1000 if expiration is not None else None
        priority = self._get_message_priority(message, reverse=True)
        if not self.store.publish(queue, priority, payload, expires_at, now, bound_from):
            logger.debug(
                "sqlite broker: queue %r was unbound from exchange %r while a message was "
                "routed to it; message dropped",
                queue,
                bound_from,
            )

    def _put_fanout(
        self, exchange: str, message: dict[str, Any], routing_key: str, **kwargs: Any
    ) -> None:
        payload = self._encode(message, f"fanout exchange {exchange!r}")
        self.store.publish_fanout(exchange, payload, time.time())

    def _lookup(self, exchange: str, routing_key: str, default: str | None = None) -> list[str]:
        queues = super()._lookup(exchange, routing_key, default)
        if not queues:
            # AMQP brokers drop unroutable messages too, and Celery's events are unroutable
            # whenever no monitor listens, so only the first drop per exchange is logged at INFO.
            first = exchange not in self._unroutable_exchanges
            self._unroutable_exchanges.add(exchange)
            logger.log(
                logging.INFO if first else logging.DEBUG,
                "sqlite broker: no queue is bound to exchange %r with routing key %r; "
                "message dropped",
                exchange,
                routing_key,
            )
        return queues

    # Consuming

    def _get(self, queue: str, timeout: float | None = None) -> dict[str, Any]:
        prefetched = self._prefetched.get(queue)
        if prefetched:
            return self._deliver(queue, prefetched.popleft())
        token = self.store.change_token()
        now = time.time()
        if self._empty_polls.unchanged(queue, token, now):
            raise Empty()
        message = self._poll_queue(queue, now)
        if message is None:
            next_lease_end = self.store.next_lease_end(queue, now)
            self._empty_polls.record(queue, token, next_lease_end, now)
            raise Empty()
        return message

    def _poll_queue(self, queue: str, now: float) -> dict[str, Any] | None:
        # Broadcasts first, then the queue's own messages.
        exchange = self._fanout_queues.get(queue)
        if exchange is not None:
            row = self.store.read_fanout(exchange, self._fanout_cursors[queue])
            if row is not None:
                self._fanout_cursors[queue] = row[0]
                return loads(row[1])

        if queue in self._no_ack_queues:
            payload = self.store.take(queue, now)
            return None if payload is None else loads(payload)

        claims = self.store.claim(
            queue,
            self.owner,
            now + self.settings.visibility_timeout,
            now,
            self._claim_limit(queue),
        )
        if not claims:
            return None
        if len(claims) > 1:
            self._prefetched[queue] = deque(claims[1:])
        self.connection.start_keeper()
        return self._deliver(queue, claims[0])

    def _deliver(self, queue: str, claim: Claim) -> dict[str, Any]:
        message = loads(claim.payload)
        properties = message["properties"]
        if claim.deliveries > 1:
            message["redelivered"] = True
            properties.setdefault("delivery_info", {})["redelivered"] = True
        if claim.previous_owner is not None:
            logger.warning(
                "sqlite broker: redelivering message %s from queue %r (delivery %d): "
                "the lease of %s ended without an ack",
                properties.get("delivery_tag"),
                queue,
                claim.deliveries,
                claim.previous_owner,
            )
        self._claims[properties["delivery_tag"]] = (claim.row_id, queue)
        return message

    def _claim_limit(self, queue: str) -> int:
        # A consumer with room for several unacked messages claims them in one statement;
        # the surplus waits in _prefetched, leased to this connection, until delivered.
        if queue not in self._active_queues:
            return 1
        room = self.qos.can_consume_max_estimate()
        return MAX_CLAIM_BATCH if room is None else max(1, min(room, MAX_CLAIM_BATCH))

    def _release_prefetched(self, queue: str | None = None) -> None:
        queues = list(self._prefetched) if queue is None else [queue]
        for name in queues:
            claims = self._prefetched.pop(name, None)
            if claims:
                self.store.release_many([claim.row_id for claim in claims], self.owner)

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_queues.add(queue)
        else:
            self._no_ack_queues.discard(queue)
        self.connection.consumed_queues.add(queue)
        # The keeper marks consumed queues as used, so a queue declared with x-expires, such as
        # a worker's remote-control queue, is not deleted as idle while nothing arrives on it.
        self.connection.start_keeper()
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        queue = self._tag_to_queue.get(consumer_tag)
        result = super().basic_cancel(consumer_tag)
        if queue is not None and queue not in self._active_queues:
            self.connection.consumed_queues.discard(queue)
            self._release_prefetched(queue)
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        if not no_ack:
            return super().basic_get(queue, no_ack=False, **kwargs)
        payload = self.store.take(queue, time.time())
        return None if payload is None else self.Message(loads(payload), channel=self)

    def ack_claim(self, delivery_tag: str) -> None:
        """Delete the leased message behind ``delivery_tag``; broadcasts need no action."""
        claim = self._claims.pop(delivery_tag, None)
        if claim is None:
            return
        row_id, queue = claim
        if not self.store.ack(row_id, self.owner):
            logger.warning(
                "sqlite broker: ack of message %s from queue %r came after its lease ended; "
                "another consumer may have received it again",
                delivery_tag,
                queue,
            )

    def reject_claim(self, delivery_tag: str) -> None:
        """Delete the leased message behind ``delivery_tag`` and dead-letter it."""
        claim = self._claims.pop(delivery_tag, None)
        if claim is None:
            return
        row_id, queue = claim
        outcome = self.store.reject(row_id, self.owner, time.time())
        if outcome is None:
            logger.warning(
                "sqlite broker: reject of message %s from queue %r came after its lease "
                "ended; another consumer may have received it again",
                delivery_tag,
                queue,
            )
            return
        log_dead_letter(outcome, delivery_tag)

    def release_claim(self, delivery_tag: str) -> None:
        """Make the leased message behind ``delivery_tag`` ready again at once."""
        claim = self._claims.pop(delivery_tag, None)
        if claim is not None:
            self.store.release(claim[0], self.owner)

    def _restore(self, message: Any) -> None:
        # Called for every unacked message when the channel closes or recovers.
        self.release_claim(message.delivery_tag)

    def _restore_at_beginning(self, message: Any) -> None:
        self.release_claim(message.delivery_tag)

    # Queues, exchanges and bindings

    def prepare_queue_arguments(self, arguments: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # Turns Queue(expires=..., message_ttl=...) into x-expires and x-message-ttl.
        return to_rabbitmq_queue_arguments(arguments, **kwargs)

    def _new_queue(self, queue: str, **kwargs: Any) -> None:
        arguments = kwargs.get("arguments") or {}
        expires = arguments.get("x-expires")
        message_ttl = arguments.get("x-message-ttl")
        stored = self.store.declare_queue(
            queue,
            float(expires) / 1000 if expires is not None else None,
            float(message_ttl) / 1000 if message_ttl is not None else None,
            arguments,
            time.time(),
        )
        # RabbitMQ closes the channel with PRECONDITION_FAILED here; kombu's virtual
        # transports have no such error, so the first arguments stay and the mismatch is logged.
        if stored != json.loads(json.dumps(dict(arguments), default=str)):
            logger.warning(
                "sqlite broker: queue %r declared with arguments %s keeps the arguments %s "
                "of its first declaration; delete the queue to change them",
                queue,
                dict(arguments),
                stored,
            )

    def _has_queue(self, queue: str, **kwargs: Any) -> bool:
        return self.store.has_queue(queue)

    def _size(self, queue: str) -> int:
        return self.store.size(queue, time.time())

    def _purge(self, queue: str) -> int:
        return self.store.purge(queue, time.time())

    def queue_delete(
        self, queue: str, if_unused: bool = False, if_empty: bool = False, **kwargs: Any
    ) -> None:
        if if_empty and self._size(queue):
            return
        self.state.queue_bindings_delete(queue)
        self._fanout_queues.pop(queue, None)
        self._fanout_cursors.pop(queue, None)
        self.store.delete_queue(queue)

    def exchange_declare(
        self,
        exchange: str | None = None,
        type: str = "direct",
        durable: bool = False,
        auto_delete: bool = False,
        arguments: dict[str, Any] | None = None,
        nowait: bool = False,
        passive: bool = False,
    ) -> None:
        type = type or "direct"
        exchange = exchange or f"amq.{type}"
        if passive and exchange not in self.state.exchanges:
            # Another process may have declared it; adopt its type.
            stored_type = self.store.exchange_type(exchange)
            if stored_type is not None:
                type, passive = stored_type, False
        super().exchange_declare(exchange, type, durable, auto_delete, arguments, nowait, passive)
        if not passive:
            self.store.declare_exchange(exchange, type)

    def _queue_bind(self, exchange: str, routing_key: str, pattern: Any, queue: str) -> None:
        fanout = self.typeof(exchange).type == "fanout" and queue not in self._fanout_queues
        # The cursor is read before the binding exists, so that no broadcast published in
        # between is skipped.
        cursor = self.store.fanout_cursor(exchange) if fanout else 0
        self.store.bind(exchange, routing_key or "", pattern, queue)
        if fanout:
            self._fanout_queues[queue] = exchange
            self._fanout_cursors[queue] = cursor

    def queue_unbind(
        self,
        queue: str,
        exchange: str | None = None,
        routing_key: str = "",
        arguments: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().queue_unbind(queue, exchange, routing_key, arguments, **kwargs)
        self.store.unbind(exchange or "amq.direct", routing_key or "", queue)
        if self._fanout_queues.get(queue) == exchange:
            del self._fanout_queues[queue]
            del self._fanout_cursors[queue]

    def get_table(self, exchange: str) -> list[tuple[str, Any, str]]:
        return self.store.bindings(exchange)

    def typeof(self, exchange: str, default: str = "direct") -> Any:
        declared = self.state.exchanges.get(exchange)
        if declared is not None:
            return self.exchange_types[declared["type"]]
        type_ = self._exchange_type_cache.get(exchange)
        if type_ is None:
            type_ = self.store.exchange_type(exchange)
            if type_ is None:
                return self.exchange_types[default]
            self._exchange_type_cache[exchange] = type_
        return self.exchange_types[type_]

    def close(self) -> None:
        # The base class cancels the consumers, which releases prefetched messages, and
        # releases the unacked messages through _restore.
        super().close()
        self._release_prefetched()
        self.store.close()


class Transport(virtual.Transport):
    """kombu transport for ``sqlite://`` URLs; see :func:`scheduler.sqlite_broker.register`."""

    Channel = Channel

    # Seconds between polls of an idle queue, which bounds the delivery latency; set from the
    # ``polling_interval`` transport option (BrokerSettings) for each connection.
    polling_interval = DEFAULT_POLLING_INTERVAL
    can_parse_url = True
    default_port = None
    driver_type = "sqlite"
    driver_name = "sqlite3"

    implements = virtual.Transport.implements.extend(
        asynchronous=True,
        exchange_type=frozenset(["direct", "topic", "fanout"]),
    )
    # A database that stays locked beyond busy_timeout is handled like a lost connection:
    # kombu and Celery retry and reconnect instead of failing the task.
    connection_errors = virtual.Transport.connection_errors + (sqlite3.OperationalError,)
    channel_errors = virtual.Transport.channel_errors + (StoreError,)
    recoverable_connection_errors = (sqlite3.OperationalError,)
    # A StoreError is a configuration error, which no retry can fix.
    recoverable_channel_errors = ()

    def __init__(self, client: Any, **kwargs: Any):
        super().__init__(client, **kwargs)
        self.settings = BrokerSettings.from_options(
            client.hostname or "", client.transport_options or {}
        )
        self.polling_interval = self.settings.polling_interval
        self.owner = new_owner()
        self.consumed_queues: set[str] = set()
        self._keeper: LeaseKeeper | None = None
        self._keeper_lock = threading.Lock()
        # Set while a kombu hub polls this connection; see register_with_event_loop.
        self._loop: Any = None
        self._loop_connection: Any = None
        self._loop_thread: int | None = None
        self._poll_timer: Any = None
        self._poll_requested = False
        self._poll_requested_lock = threading.Lock()
        self._polling = False  # True while _poll() delivers, in the loop's thread

    def establish_connection(self) -> Any:
        store = Store(
            self.settings.path,
            busy_timeout=self.settings.busy_timeout,
            synchronous=self.settings.synchronous,
        )
        try:
            expired = store.initialize()
            release_dead_owners(store, time.time())
        finally:
            store.close()
        self._log_start(expired)
        return super().establish_connection()

    def _log_start(self, expired_leases: int) -> None:
        path = str(self.settings.path.resolve())
        with _announced_lock:
            # A connection made before logging is configured (at import time, say) must not
            # use up the one INFO line.
            first = path not in _announced and logger.isEnabledFor(logging.INFO)
            if first:
                _announced.add(path)
            report_expired = expired_leases > 0 and path not in _expiry_reported
            if report_expired:
                _expiry_reported.add(path)
        logger.log(
            logging.INFO if first else logging.DEBUG,
            "sqlite broker: opened %s (SQLite %s, WAL, synchronous=%s, visibility timeout "
            "%.0f s, max message size %d bytes); one machine only",
            path,
            sqlite3.sqlite_version,
            self.settings.synchronous,
            self.settings.visibility_timeout,
            self.settings.max_message_size,
        )
        if report_expired:
            logger.warning(
                "sqlite broker %s: %d messages were left unacknowledged by consumers that "
                "stopped; they are delivered again",
                path,
                expired_leases,
            )

    def start_keeper(self) -> None:
        """Start lease renewal for this connection, once."""
        if self._keeper is not None:
            return
        with self._keeper_lock:
            if self._keeper is None:
                keeper = LeaseKeeper(self.settings, self.owner, lambda: tuple(self.consumed_queues))
                keeper.start()
                self._keeper = keeper

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        """Poll the consumed queues from ``loop``, a kombu hub such as a Celery worker's.

        A timer polls every ``polling_interval`` seconds, and :meth:`request_poll` adds a poll
        as soon as the loop is free. Messages are delivered through the consumers' callbacks
        in the loop's thread.
        """
        self.unregister_from_event_loop(connection, loop)
        self._loop, self._loop_connection = loop, connection
        self._loop_thread = threading.get_ident()
        self._poll_timer = loop.call_repeatedly(self.polling_interval, self._poll)

    def unregister_from_event_loop(self, connection: Any, loop: Any) -> None:
        """Stop polling from the event loop; :meth:`close_connection` calls this too."""
        timer, self._poll_timer = self._poll_timer, None
        if timer is not None:
            timer.cancel()
        self._loop = self._loop_connection = None

    def request_poll(self) -> None:
        """Poll once more as soon as the event loop is free; safe to call from any thread.

        Does nothing without an event loop, where ``drain_events`` polls in its own loop.
        """
        loop = self._loop
        if loop is None:
            return
        if self._polling and threading.get_ident() == self._loop_thread:
            # An ack in a consumer's callback during a poll: that poll goes on delivering.
            return
        with self._poll_requested_lock:
            if self._poll_requested:
                return
            self._poll_requested = True
        if threading.get_ident() == self._loop_thread:
            # kombu's hub runs call_soon() callbacks only after its next wait for file
            # descriptors, while a due timer runs before that wait.
            loop.call_later(0, self._on_poll_request)
        else:
            # call_soon() is the hub's thread-safe entry, and it wakes the loop.
            loop.call_soon(self._on_poll_request)

    def _on_poll_request(self) -> None:
        with self._poll_requested_lock:
            self._poll_requested = False
        self._poll()

    def _poll(self) -> None:
        # Runs in the event loop's thread. A connection error propagates out of the loop,
        # and Celery reconnects, as when the socket of another transport fails.
        connection = self._loop_connection
        if connection is None or self._polling:
            return
        # Celery's prefetch limit ends a poll after a few deliveries. A consumer that acks in
        # its callback could keep one poll going while producers publish, so a poll stops
        # after polling_interval seconds and requests the next one, which lets the hub's other
        # due timers run in between.
        deadline = time.monotonic() + self.polling_interval
        self._polling = True
        try:
            while time.monotonic() < deadline:
                try:
                    self.drain_events(connection, timeout=0)
                except TimeoutError:
                    return
        finally:
            self._polling = False
        self.request_poll()

    def close_connection(self, connection: Any) -> None:
        self.unregister_from_event_loop(connection, self._loop)
        # Channels close first, so their unacked messages are released while the leases hold.
        super().close_connection(connection)
        with self._keeper_lock:
            keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.stop()

    def driver_version(self) -> str:
        return sqlite3.sqlite_version

    def as_uri(self, uri: str, include_password: bool = False, mask: str = "**") -> str:
        return uri
