"""HTTP routes of the editor: pages, session API and health, against a real server process."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

import pytest

from codecollab.documents import SEED_TEXT

from .conftest import ServerProcess
from .yclient import YClient, unique_session


def request(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    reply = connection.getresponse()
    result = reply.status, dict(reply.getheaders()), reply.read()
    connection.close()
    return result


def test_healthz_ok(shared_editor: ServerProcess) -> None:
    status, _headers, body = request(shared_editor, "GET", "/healthz")
    assert status == 200
    assert json.loads(body)["status"] == "ok"


@pytest.mark.parametrize("path", ["/", "/s/abcdefghijklmnop"])
def test_editor_page_served(shared_editor: ServerProcess, path: str) -> None:
    status, headers, _body = request(shared_editor, "GET", path)
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/s/short", "/s/" + "x" * 65, "/s/abcdefghijklmno.", "/nope"])
def test_invalid_path_gets_404_page(shared_editor: ServerProcess, path: str) -> None:
    status, headers, _body = request(shared_editor, "GET", path)
    assert status == 404
    assert headers["Content-Type"].startswith("text/html")


def test_new_redirects_to_fresh_session(shared_editor: ServerProcess) -> None:
    status, headers, _body = request(shared_editor, "GET", "/new")
    assert status == 303
    assert headers["Location"].startswith("/s/")
    assert len(headers["Location"]) == len("/s/") + 22


def test_create_session_returns_url(shared_editor: ServerProcess) -> None:
    status, headers, body = request(shared_editor, "POST", "/api/sessions")
    created = json.loads(body)
    assert status == 201
    assert created["url"] == f"/s/{created['id']}"
    assert headers["Location"] == created["url"]


def test_session_info_reports_users_size_language(shared_editor: ServerProcess) -> None:
    session = unique_session()
    client = YClient(shared_editor.url, session, name="Ada").connect()
    client.set_language("go")
    client.wait_acked()
    status, _headers, body = request(shared_editor, "GET", f"/api/sessions/{session}")
    info = json.loads(body)
    assert status == 200
    assert (info["online"], info["users"][0]["name"], info["language"]) == (1, "Ada", "go")
    assert info["size"]["characters"] == len(SEED_TEXT)
    client.disconnect()


def test_unknown_session_info_404(shared_editor: ServerProcess) -> None:
    status, _headers, body = request(shared_editor, "GET", f"/api/sessions/{unique_session()}")
    assert status == 404
    assert "does not exist" in json.loads(body)["error"]


def test_put_then_get_text_round_trip(shared_editor: ServerProcess) -> None:
    session = unique_session()
    text = "fn main() {}\n// 中文 😀 e\u0301\n"
    status, _headers, body = request(
        shared_editor, "PUT", f"/api/sessions/{session}/text", text.encode()
    )
    assert status == 200
    assert json.loads(body)["size"]["characters"] == len(text)
    with urllib.request.urlopen(f"{shared_editor.url}/api/sessions/{session}/text") as reply:
        assert reply.read().decode() == text


def test_put_json_body_accepted(shared_editor: ServerProcess) -> None:
    session = unique_session()
    status, _headers, _body = request(
        shared_editor,
        "PUT",
        f"/api/sessions/{session}/text",
        json.dumps({"text": "from json"}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    with urllib.request.urlopen(f"{shared_editor.url}/api/sessions/{session}/text") as reply:
        assert reply.read() == b"from json"


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"one\r\ntwo\rthree\n", {"Content-Type": "text/plain"}),
        (
            json.dumps({"text": "one\r\ntwo\rthree\n"}).encode(),
            {"Content-Type": "application/json"},
        ),
    ],
    ids=["plain", "json"],
)
def test_put_text_line_breaks_normalized(
    shared_editor: ServerProcess, body: bytes, headers: dict[str, str]
) -> None:
    session = unique_session()
    status, _headers, reply = request(
        shared_editor, "PUT", f"/api/sessions/{session}/text", body, headers
    )
    assert status == 200
    assert json.loads(reply)["size"]["characters"] == len("one\ntwo\nthree\n")
    with urllib.request.urlopen(f"{shared_editor.url}/api/sessions/{session}/text") as text:
        assert text.read() == b"one\ntwo\nthree\n"


def test_put_json_without_text_rejected(shared_editor: ServerProcess) -> None:
    status, _headers, body = request(
        shared_editor,
        "PUT",
        f"/api/sessions/{unique_session()}/text",
        b'{"content": 1}',
        {"Content-Type": "application/json"},
    )
    assert status == 400
    assert '"text"' in json.loads(body)["error"]


def test_api_invalid_id_404_json(shared_editor: ServerProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{shared_editor.url}/api/sessions/bad!id/text")
    assert caught.value.code == 404
    assert "Invalid session id" in json.loads(caught.value.read())["error"]
