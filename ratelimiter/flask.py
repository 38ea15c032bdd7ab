"""Flask extension: an app-wide default limit, per-route limits and exemptions.

::

    limiter = Limiter(default_limits="100/minute, burst 100", storage="redis://127.0.0.1:6379/0")
    limiter.init_app(app)

    @app.post("/process-video")
    @limiter.limit("5/minute, burst 5")
    def process_video(): ...

    @app.get("/healthz")
    @limiter.exempt
    def healthz(): ...

A request is checked once, after the ``before_request`` hooks and before its view runs,
against the route's limits and the default limit together: it is admitted only when all of
them admit it, and a rejected request takes nothing from any of them. ``OPTIONS`` (CORS
preflight) is exempt by default. ``HEAD`` is counted like ``GET``, once, in the same buckets
as ``GET``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from flask import Flask, Response, current_app, request

from .decision import Decision
from .keys import ClientIP, KeySource
from .limiter import RateLimiter, RateLimitEvent
from .policy import Policy, parse_policies
from .responses import rate_limit_headers, rejection
from .storage import Bucket, Storage

__all__ = ["Limiter", "RouteLimit"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
KeyFunc = Callable[[], str] | KeySource

_DECISION_KEY = "ratelimiter.decision"
# A one-item list that the header wrapper puts into the environ and the check fills in.
# Middleware between the wrapper and Flask, such as Flask-SocketIO's, may hand Flask a shallow
# copy of the environ. The copy refers to the same list, so the decision reaches the wrapper
# whichever of the two was installed first.
_DECISION_SLOT_KEY = "ratelimiter.decision_slot"


@dataclass(frozen=True)
class RouteLimit:
    """One ``@limiter.limit(...)`` on a view."""

    policies: tuple[Policy, ...]
    #: Zero-argument callable or key source; ``None`` means the limiter's default key.
    key_func: KeyFunc | None
    #: Tokens each request takes, or a zero-argument callable returning them.
    cost: int | Callable[[], int]
    #: Upper-case methods the limit applies to; ``None`` means every method.
    methods: frozenset[str] | None
    #: Bucket scope; ``None`` means the view's endpoint name.
    scope: str | None


class Limiter:
    """Rate limiting for a Flask application.

    :param app: the application; or call :meth:`init_app` later.
    :param default_limits: policies applied to every route not marked ``@limiter.exempt``,
        in one bucket per client shared by all routes. ``None`` (the default) applies none.
    :param storage: ``"memory://"`` (default), ``"redis://host:6379/0"`` or a storage object.
    :param key_func: the client key: a zero-argument callable reading ``flask.request``, or a
        key source such as ``APIKeyHeader()``. Default: the peer IP address via ``client_ip``.
    :param client_ip: the :class:`ClientIP` used by the default key; set it to trust reverse
        proxies. Default ``ClientIP()``, which trusts none.
    :param headers_enabled: add ``RateLimit-Policy`` and ``RateLimit`` to responses (default
        true). ``Retry-After`` is always sent on 429 and 503.
    :param exempt_methods: methods never counted (default ``{"OPTIONS"}``).
    :param enabled: false turns every check off, for tests or maintenance.
    :param on_storage_error: ``"allow"`` (default) or ``"deny"`` (answer 503) while storage fails.
    :param timeout: seconds one storage call may take (default 0.1).
    :param dry_run: count and log requests that would be rejected, but let them through.
    :param key_prefix: prefix of every storage key (default ``"ratelimit"``).
    :param on_event: callback receiving a :class:`RateLimitEvent` after each check.
    :param clock: integer-nanosecond monotonic clock for ``memory://``; tests inject a fake.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        default_limits: str | Policy | Sequence[str | Policy] | None = None,
        storage: str | Storage = "memory://",
        key_func: KeyFunc | None = None,
        client_ip: ClientIP | None = None,
        headers_enabled: bool = True,
        exempt_methods: Iterable[str] = ("OPTIONS",),
        enabled: bool = True,
        on_storage_error: Literal["allow", "deny"] = "allow",
        timeout: float = 0.1,
        dry_run: bool = False,
        key_prefix: str = "ratelimit",
        on_event: Callable[[RateLimitEvent], object] | None = None,
        clock: Callable[[], int] | None = None,
    ) -> None:
        self.default_policies: tuple[Policy, ...] = (
            tuple(parse_policies(default_limits)) if default_limits is not None else ()
        )
        #: The engine that checks buckets; its ``counters`` count every outcome.
        self.limiter = RateLimiter(
            None,
            storage,
            on_storage_error=on_storage_error,
            timeout=timeout,
            dry_run=dry_run,
            key_prefix=key_prefix,
            on_event=on_event,
            clock=clock,
        )
        # The default limit's bucket key is "<key_prefix>:default:<client key>".
        self._default_prefix = f"{key_prefix}:default:"
        self._check_default = (
            self.limiter.bucket_check_function(self.default_policies)
            if self.default_policies
            else None
        )
        self.client_ip = client_ip or ClientIP()
        # REMOTE_ADDR -> (client key, default bucket key) while the key is the peer address
        # alone: the same as client_ip's own cache, without a call and a string concatenation.
        self._peer_keys: dict[str, tuple[str, str]] | None = (
            {} if key_func is None and not self.client_ip.trusts_proxies else None
        )
        self.key_func = key_func
        self.headers_enabled = headers_enabled
        self.exempt_methods = frozenset(method.upper() for method in exempt_methods)
        self.enabled = enabled
        self._route_limits: dict[Callable[..., Any], list[RouteLimit]] = {}
        self._exempt_views: set[Callable[..., Any]] = set()
        # id(URL rule) -> (rule, its route limits, whether it is exempt); filled on first use.
        self._rule_cache: dict[int, tuple[Any, list[RouteLimit], bool]] = {}
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Check every request of ``app`` before its view runs and add headers after.

        The check runs after all ``before_request`` hooks, so ``key_func`` can read what they
        set, such as the signed-in user. A request that a hook responds to itself, or aborts
        with an exception, is counted too, and gets the 429 response instead when it is
        rejected. The check runs in a wrapper around ``app.preprocess_request``, because a
        ``before_request`` hook of its own would cost Flask an ``ensure_sync`` call per
        request.

        The ``RateLimit-Policy`` and ``RateLimit`` headers are added where the response leaves
        ``app.wsgi_app``, which ``init_app`` wraps: the WSGI header list costs less to extend
        than ``response.headers`` in an ``after_request`` hook. So they are absent from the
        ``Response`` objects that ``after_request`` hooks see, and present on the wire.
        """
        app.extensions["ratelimiter"] = self
        app.preprocess_request = self._preprocess_then_check(app.preprocess_request)  # type: ignore[method-assign]
        app.wsgi_app = self._wsgi_app_with_headers(app.wsgi_app)  # type: ignore[method-assign]

    def limit(
        self,
        policies: str | Policy | Sequence[str | Policy],
        *,
        key_func: KeyFunc | None = None,
        cost: int | Callable[[], int] = 1,
        methods: Iterable[str] | None = None,
        scope: str | None = None,
    ) -> Callable[[F], F]:
        """Decorate a view with a limit on top of the default one.

        :param policies: such as ``"5/minute, burst 5"`` or ``"10/second; 1000/hour"``.
        :param key_func: the client key for this limit (default: the limiter's key).
        :param cost: tokens per request, or a zero-argument callable returning them.
        :param methods: count only these methods (``HEAD`` counts as ``GET``); default all.
        :param scope: a name shared by views that should draw from one bucket; the default is
            the view's endpoint, so each route has its own bucket.
        :raises ValueError: for a malformed policy, or a fixed cost above a policy's capacity.
        """
        parsed = tuple(parse_policies(policies))
        if not callable(cost):
            if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
                raise ValueError(f"cost={cost!r} is invalid; use a whole number >= 0")
            for policy in parsed:
                if cost > policy.capacity:
                    raise ValueError(
                        f"cost={cost} exceeds the capacity {policy.capacity} of {policy.name}; "
                        "no request could ever be admitted"
                    )
        route_limit = RouteLimit(
            parsed,
            key_func,
            cost,
            frozenset(method.upper() for method in methods) if methods is not None else None,
            scope,
        )

        def decorator(view: F) -> F:
            self._route_limits.setdefault(view, []).append(route_limit)
            self._rule_cache.clear()
            return view

        return decorator

    def exempt(self, view: F) -> F:
        """Decorate a view so that the default limit does not apply to it.

        Limits added with :meth:`limit` on the same view still apply.
        """
        self._exempt_views.add(view)
        self._rule_cache.clear()
        return view

    def current_decision(self) -> Decision | None:
        """Return the decision made for the current request, if any."""
        return request.environ.get(_DECISION_KEY)

    # Request checks

    def _preprocess_then_check(self, preprocess_request: Callable[[], Any]) -> Callable[[], Any]:
        """Wrap ``app.preprocess_request`` so that the request is checked after its hooks.

        The wrapper returns what ``preprocess_request`` returned or raised, unless the check
        rejects the request: then it returns the rejection response instead.
        """

        def preprocess_request_then_check() -> Any:
            try:
                response = preprocess_request()
                error = None
            except Exception as raised:
                response = None
                error = raised

            # The check, written out here because it runs on every request.
            decision = None
            if self.enabled:
                # One proxy lookup: werkzeug's LocalProxy costs a little on every access.
                req = request._get_current_object()  # type: ignore[attr-defined]
                environ = req.environ
                method = environ.get("REQUEST_METHOD", "GET")
                if method not in self.exempt_methods:
                    if self._route_limits or self._exempt_views:
                        rule = req.url_rule
                        # Rules are unhashable, so the cache is keyed by id() and keeps the rule.
                        cached = self._rule_cache.get(id(rule))
                        if cached is None or cached[0] is not rule:
                            cached = self._cache_rule(rule)
                        _, route_limits, exempt = cached
                    else:
                        # No view has a limit or an exemption of its own: skip the rule lookup.
                        route_limits = None
                        exempt = False
                    if route_limits:
                        decision = self._check_route(req, environ, method, route_limits, exempt)
                    elif not exempt and self._check_default is not None:
                        peer_keys = self._peer_keys
                        if peer_keys is None:
                            key = self._key(None, environ)
                            storage_key = self._default_prefix + key
                        else:
                            keys = peer_keys.get(environ.get("REMOTE_ADDR") or "")
                            if keys is None:
                                keys = self._peer_keys_of(environ)
                            key, storage_key = keys
                        decision = self._check_default(storage_key, 1, key)

            if decision is not None:
                environ[_DECISION_KEY] = decision
                slot = environ.get(_DECISION_SLOT_KEY)
                if slot is not None:
                    slot[0] = decision
                if not decision.allowed:
                    return _rejection_response(decision)
            if error is not None:
                try:
                    raise error
                finally:
                    # The exception's traceback refers to this frame.
                    error = None
            return response

        return preprocess_request_then_check

    def _peer_keys_of(self, environ: dict[str, Any]) -> tuple[str, str]:
        """Derive the keys of the peer address and cache them, in at most 4,096 entries."""
        peer_keys = self._peer_keys
        assert peer_keys is not None
        key = self.client_ip.from_environ(environ)
        keys = (key, self._default_prefix + key)
        if len(peer_keys) >= 4096:
            peer_keys.clear()
        peer_keys[environ.get("REMOTE_ADDR") or ""] = keys
        return keys

    def _check_route(
        self,
        req: Any,
        environ: dict[str, Any],
        method: str,
        route_limits: list[RouteLimit],
        exempt: bool,
    ) -> Decision | None:
        if method == "HEAD":
            method = "GET"
        buckets: list[Bucket] = []
        cost = 1
        label = None
        for route_limit in route_limits:
            if route_limit.methods is not None and method not in route_limit.methods:
                continue
            key = self._key(route_limit.key_func, environ)
            scope = route_limit.scope or f"route:{req.endpoint}"
            buckets.extend(self.limiter.buckets(key, scope, route_limit.policies))
            cost = route_limit.cost() if callable(route_limit.cost) else route_limit.cost
            label = label or key
        if self.default_policies and not exempt:
            key = self._key(None, environ)
            buckets.extend(self.limiter.buckets(key, "default", self.default_policies))
            label = label or key
        if not buckets:
            return None
        return self.limiter.check_buckets(buckets, label, cost)

    def _cache_rule(self, rule: Any) -> tuple[Any, list[RouteLimit], bool]:
        """Look up and cache the route limits and the exemption of a URL rule."""
        view = current_app.view_functions.get(rule.endpoint) if rule is not None else None
        cached = (rule, self._route_limits.get(view, []), view in self._exempt_views)
        self._rule_cache[id(rule)] = cached
        return cached

    def _wsgi_app_with_headers(self, wsgi_app: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap ``wsgi_app`` so that responses carry the headers of the request's decision."""

        def app_with_headers(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            if not self.headers_enabled:
                return wsgi_app(environ, start_response)
            slot = environ[_DECISION_SLOT_KEY] = [None]
            # A partial costs less to build per request than a closure.
            return wsgi_app(environ, functools.partial(_start_response, slot, start_response))

        return app_with_headers

    def _key(self, key_func: KeyFunc | None, environ: dict[str, Any]) -> str:
        source = key_func or self.key_func
        if source is None:
            return self.client_ip.from_environ(environ)
        if hasattr(source, "from_environ"):
            return source.from_environ(environ)
        return str(source())


def _rejection_response(decision: Decision) -> Response:
    """Build the 429 or 503 response of a rejected request, without rate-limit headers.

    They are added with those of every other response, on the way out of ``app.wsgi_app``.
    """
    response = rejection(decision, include_rate_limit_headers=False)
    return Response(response.body, status=response.status, headers=response.headers)


def _start_response(
    slot: list[Decision | None],
    start_response: Callable[..., Any],
    status: str,
    headers: list[tuple[str, str]],
    exc_info: Any = None,
) -> Any:
    """Start the response with the rate-limit headers of the request's decision, if any."""
    # The check has run by now, because Flask starts the response last.
    decision = slot[0]
    if decision is not None:
        # Flask builds a new header list for every response, so extending it is safe.
        headers.extend(rate_limit_headers(decision))
    return start_response(status, headers, exc_info)
