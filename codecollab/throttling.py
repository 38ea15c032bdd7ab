"""Rate limits of the editor, built on the ``ratelimiter`` package.

Four limits apply, each from its own setting:

- every HTTP route but the static files, per client IP (``ratelimiter.flask.Limiter``);
- the static files (scripts, styles, fonts), per client IP, in a bucket of their own: one page
  load fetches about a dozen of them, so under the routes' limit a few quick reloads would
  leave the page without its code;
- Socket.IO connection attempts, per client IP, checked in the connect handler because
  Socket.IO's own HTTP requests never reach Flask's routing;
- Socket.IO messages, per connection, checked in each event handler.

Client IPs come from ``ClientIP``: the peer address, or with ``CODECOLLAB_PROXY_COUNT`` set to
N, the address the N nearest reverse proxies report in ``X-Forwarded-For``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from codecollab.config import Settings
from ratelimiter import RateLimiter, parse_policies
from ratelimiter.flask import Limiter
from ratelimiter.keys import ClientIP


@dataclass(frozen=True)
class Limits:
    """The limiters of one editor process."""

    http: Limiter
    connect: RateLimiter
    messages: RateLimiter
    client_ip: ClientIP


def build_limits(app: Flask, settings: Settings) -> Limits:
    """Build the limiters and guard every route of ``app`` with the HTTP one.

    :raises ValueError: when a policy setting does not parse, so a typo stops start-up.
    """
    client_ip = ClientIP(trusted_proxies=settings.proxy_count or None)
    http = Limiter(
        default_limits=settings.http_rate_limit,
        storage=settings.rate_limit_storage,
        client_ip=client_ip,
        key_prefix="codecollab:http",
    )
    http.init_app(app)
    static_files = app.view_functions.get("static")
    if static_files is not None:
        http.exempt(static_files)
        http.limit(settings.static_rate_limit, scope="static")(static_files)
    connect = RateLimiter(
        parse_policies(settings.connect_rate_limit),
        storage=settings.rate_limit_storage,
        key_prefix="codecollab:connect",
    )
    messages = RateLimiter(
        parse_policies(settings.socket_rate_limit),
        storage=settings.rate_limit_storage,
        key_prefix="codecollab:socket",
    )
    return Limits(http=http, connect=connect, messages=messages, client_ip=client_ip)
