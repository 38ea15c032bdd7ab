"""The Flask extension: route limits, the default limit, exemptions and responses."""

from __future__ import annotations

import pytest
from flask import Flask, abort, g, request

from ratelimiter.flask import Limiter
from ratelimiter.keys import APIKeyHeader, ClientIP, user_or_ip

from .conftest import FakeClock


def make_app(clock: FakeClock, **kwargs) -> tuple[Flask, Limiter]:
    app = Flask(__name__)
    limiter = Limiter(app, clock=clock, **kwargs)

    @app.post("/process-video")
    @limiter.limit("2/minute")
    def process_video():
        return {"queued": True}

    @app.get("/items")
    def items():
        return {"items": []}

    @app.route("/health", methods=["GET", "POST"])
    @limiter.exempt
    def health():
        return "ok"

    @app.route("/upload", methods=["GET", "POST"])
    @limiter.limit("1/minute", methods=["POST"])
    def upload():
        return "uploaded"

    @app.post("/weighted")
    @limiter.limit("10/minute", cost=4)
    def weighted():
        return "weighted"

    return app, limiter


def test_route_limit_rejects_with_429(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    statuses = [client.post("/process-video").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_rejection_body_and_headers(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    client.post("/process-video")
    client.post("/process-video")
    response = client.post("/process-video")
    assert response.get_json() == {
        "error": "rate limit of 2 per minute exceeded; retry in 30 s",
        "retry_after": 30,
    }
    assert response.headers["Retry-After"] == "30"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["RateLimit"] == '"2/60s";r=0;t=60'
    assert response.headers["RateLimit-Policy"] == '"2/60s";q=2;w=60'


def test_allowed_response_headers(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    response = app.test_client().post("/process-video")
    assert response.headers["RateLimit"] == '"2/60s";r=1;t=30'
    assert "Retry-After" not in response.headers
    assert "Cache-Control" not in response.headers


def test_headers_through_environ_copy(clock: FakeClock) -> None:
    # Middleware installed before the limiter, such as Flask-SocketIO's, may pass Flask a
    # copy of the environ; the headers must still reach the response.
    app = Flask(__name__)
    inner = app.wsgi_app
    app.wsgi_app = lambda environ, start_response: inner(dict(environ), start_response)
    limiter = Limiter(app, clock=clock)

    @app.post("/process-video")
    @limiter.limit("2/minute")
    def process_video():
        return {"queued": True}

    client = app.test_client()
    allowed = client.post("/process-video")
    client.post("/process-video")
    limited = client.post("/process-video")
    assert allowed.headers["RateLimit"] == '"2/60s";r=1;t=30'
    assert limited.status_code == 429
    assert limited.headers["RateLimit"] == '"2/60s";r=0;t=60'
    assert limited.headers["Retry-After"] == "30"


def test_headers_disabled(clock: FakeClock) -> None:
    app, _ = make_app(clock, headers_enabled=False)
    client = app.test_client()
    allowed = client.post("/process-video")
    client.post("/process-video")
    limited = client.post("/process-video")
    assert "RateLimit" not in allowed.headers
    assert "RateLimit" not in limited.headers
    assert limited.headers["Retry-After"] == "30"


def test_retry_after_admitted(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    client.post("/process-video")
    client.post("/process-video")
    retry_after = int(client.post("/process-video").headers["Retry-After"])
    clock.advance(retry_after)
    assert client.post("/process-video").status_code == 200


def test_default_limit_shared_across_routes(clock: FakeClock) -> None:
    app, _ = make_app(clock, default_limits="3/minute")
    client = app.test_client()
    statuses = [client.get("/items").status_code for _ in range(2)]
    statuses += [client.post("/process-video").status_code for _ in range(2)]
    assert statuses == [200, 200, 200, 429]


def test_route_and_default_atomic(clock: FakeClock) -> None:
    """A request the route limit rejects takes nothing from the default limit."""
    app, _ = make_app(clock, default_limits="5/minute")
    client = app.test_client()
    for _ in range(4):
        client.post("/process-video")
    statuses = [client.get("/items").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_exempt_route_skips_default(clock: FakeClock) -> None:
    app, _ = make_app(clock, default_limits="1/minute")
    client = app.test_client()
    statuses = [client.get("/health").status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_options_exempt(clock: FakeClock) -> None:
    app, _ = make_app(clock, default_limits="1/minute")
    client = app.test_client()
    statuses = [client.options("/items").status_code for _ in range(5)]
    assert statuses == [200] * 5


def test_options_counted_when_not_exempt(clock: FakeClock) -> None:
    app, _ = make_app(clock, default_limits="1/minute", exempt_methods=())
    client = app.test_client()
    statuses = [client.options("/items").status_code for _ in range(2)]
    assert statuses == [200, 429]


def test_head_counted_like_get(clock: FakeClock) -> None:
    app, _ = make_app(clock, default_limits="2/minute")
    client = app.test_client()
    statuses = [client.head("/items").status_code, client.get("/items").status_code]
    statuses.append(client.head("/items").status_code)
    assert statuses == [200, 200, 429]


def test_head_counted_once(clock: FakeClock) -> None:
    app, limiter = make_app(clock, default_limits="5/minute")
    app.test_client().head("/items")
    assert limiter.limiter.counters["allowed"] == 1


def test_method_filter(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    gets = [client.get("/upload").status_code for _ in range(3)]
    posts = [client.post("/upload").status_code for _ in range(2)]
    assert gets == [200, 200, 200]
    assert posts == [200, 429]


def test_route_cost(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    statuses = [client.post("/weighted").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]


def test_clients_keyed_by_ip(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    for _ in range(2):
        client.post("/process-video", environ_base={"REMOTE_ADDR": "198.51.100.1"})
    other = client.post("/process-video", environ_base={"REMOTE_ADDR": "198.51.100.2"})
    assert other.status_code == 200


def test_forged_forwarded_for_ignored(clock: FakeClock) -> None:
    app, _ = make_app(clock)
    client = app.test_client()
    statuses = [
        client.post("/process-video", headers={"X-Forwarded-For": f"203.0.113.{index}"}).status_code
        for index in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_trusted_proxy_rotation_limited(clock: FakeClock) -> None:
    app, _ = make_app(clock, client_ip=ClientIP(trusted_proxies=["127.0.0.1"]))
    client = app.test_client()
    statuses = [
        client.post(
            "/process-video", headers={"X-Forwarded-For": f"203.0.113.{index}, 198.51.100.9"}
        ).status_code
        for index in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_api_key_func(clock: FakeClock) -> None:
    app, _ = make_app(clock, key_func=APIKeyHeader())
    client = app.test_client()
    for _ in range(2):
        client.post("/process-video", headers={"X-API-Key": "alpha"})
    other = client.post("/process-video", headers={"X-API-Key": "beta"})
    assert other.status_code == 200


def test_user_key_func(clock: FakeClock) -> None:
    app = Flask(__name__)

    @app.before_request
    def sign_in():
        g.user_id = request.headers.get("X-User")

    limiter = Limiter(app, key_func=user_or_ip(lambda: g.get("user_id")), clock=clock)
    app.add_url_rule("/", "index", limiter.limit("2/minute")(lambda: "hi"))
    client = app.test_client()
    for _ in range(2):
        client.get("/", headers={"X-User": "ada"})
    assert client.get("/", headers={"X-User": "grace"}).status_code == 200


def test_dry_run_passes(clock: FakeClock) -> None:
    app, limiter = make_app(clock, dry_run=True)
    client = app.test_client()
    statuses = [client.post("/process-video").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
    assert limiter.limiter.counters["dry_run"] == 1


def test_disabled_limiter(clock: FakeClock) -> None:
    app, _ = make_app(clock, enabled=False)
    client = app.test_client()
    statuses = [client.post("/process-video").status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


def test_init_app_later(clock: FakeClock) -> None:
    limiter = Limiter(default_limits="1/minute", clock=clock)
    app = Flask(__name__)
    app.add_url_rule("/", "index", lambda: "hi")
    limiter.init_app(app)
    client = app.test_client()
    assert [client.get("/").status_code for _ in range(2)] == [200, 429]


def test_hook_after_init_sets_key(clock: FakeClock) -> None:
    app = Flask(__name__)
    limiter = Limiter(app, key_func=user_or_ip(lambda: g.get("user_id")), clock=clock)

    @app.before_request
    def sign_in():
        g.user_id = request.headers.get("X-User")

    app.add_url_rule("/", "index", limiter.limit("1/minute")(lambda: "hi"))
    client = app.test_client()
    client.get("/", headers={"X-User": "ada"})
    assert client.get("/", headers={"X-User": "grace"}).status_code == 200


def hook_app(clock: FakeClock, hook) -> Flask:
    """An app whose hook, registered before the limiter, responds to every request itself."""
    app = Flask(__name__)
    app.before_request(hook)
    Limiter(app, default_limits="2/minute", clock=clock)
    app.add_url_rule("/", "index", lambda: "view")
    return app


def answer_from_hook():
    return "from hook", 401


def abort_in_hook():
    abort(401)


@pytest.mark.parametrize("hook", [answer_from_hook, abort_in_hook])
def test_hook_response_counted(hook, clock: FakeClock) -> None:
    client = hook_app(clock, hook).test_client()
    statuses = [client.get("/").status_code for _ in range(3)]
    assert statuses == [401, 401, 429]


@pytest.mark.parametrize("hook", [answer_from_hook, abort_in_hook])
def test_hook_response_gets_headers(hook, clock: FakeClock) -> None:
    response = hook_app(clock, hook).test_client().get("/")
    assert response.headers["RateLimit"] == '"2/60s";r=1;t=30'


def test_view_error_gets_headers(clock: FakeClock) -> None:
    app = Flask(__name__)
    Limiter(app, default_limits="2/minute", clock=clock)
    app.add_url_rule("/", "index", lambda: abort(404))
    response = app.test_client().get("/")
    assert response.headers["RateLimit"] == '"2/60s";r=1;t=30'


def test_unknown_url_counted(clock: FakeClock) -> None:
    app = Flask(__name__)
    Limiter(app, default_limits="1/minute", clock=clock)
    client = app.test_client()
    assert [client.get("/missing").status_code for _ in range(2)] == [404, 429]


def test_peer_keys_cache_bounded(clock: FakeClock) -> None:
    app = Flask(__name__)
    limiter = Limiter(app, default_limits="1/minute", clock=clock)
    app.add_url_rule("/", "index", lambda: "hi")
    client = app.test_client()
    for index in range(4100):
        client.get("/", environ_base={"REMOTE_ADDR": f"10.0.{index >> 8}.{index & 255}"})
    assert len(limiter._peer_keys) <= 4096


@pytest.mark.parametrize("cost", [-1, 3, 1.5])
def test_limit_invalid_cost(cost, clock: FakeClock) -> None:
    limiter = Limiter(clock=clock)
    with pytest.raises(ValueError, match="cost"):
        limiter.limit("2/minute", cost=cost)


def test_limit_invalid_policy(clock: FakeClock) -> None:
    limiter = Limiter(clock=clock)
    with pytest.raises(ValueError, match="'2 a minute'"):
        limiter.limit("2 a minute")
