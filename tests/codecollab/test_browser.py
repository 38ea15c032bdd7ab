"""End-to-end tests of the editor page in headless Chromium, driven by Playwright.

Each test module run starts the real editor (``cd codecollab && python app.py``) on a free
loopback port with a temporary SQLite file, and drives Debian's Chromium through Playwright's
``executable_path``, so no browser is downloaded. The built assets must exist: ``make test``
builds them first. Screenshots go to ``test-artifacts/`` at the repository root.
"""

from __future__ import annotations

import collections
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.codecollab.blocking_proxy import WebSocketBlockingProxy

playwright_api = pytest.importorskip("playwright.sync_api")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_DIR = REPO_ROOT / "codecollab"
BUNDLE = APP_DIR / "static" / "dist" / "app.js"
ARTIFACTS = REPO_ROOT / "test-artifacts"

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# The production default document cap, so the paste tests exercise real sizes.
DOC_MAX_BYTES = 2 * 1024 * 1024
LARGE_PASTE_CHARS = 1_200_000
SERVER_START_TIMEOUT_S = 30.0
READY_TIMEOUT_MS = 15_000
CONVERGE_TIMEOUT_MS = 15_000
# A closed tab must leave the counter within 1 s; the margin covers a loaded CI machine.
TAB_CLOSE_TIMEOUT_MS = 3_000


@dataclass(frozen=True)
class EditorServer:
    """A running editor process and the URL it serves."""

    base_url: str
    process: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        """Return the last lines of the server's output, for failure messages."""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(server: EditorServer, timeout: float) -> None:
    """Poll ``/healthz`` until it returns 200, or fail with the server's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(
                f"editor server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(f"{server.base_url}/healthz", timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    pytest.fail(f"editor server did not become healthy in {timeout}s:\n{server.log_tail()}")


def start_server(workdir: Path, port: int, **settings: str) -> EditorServer:
    """Start ``cd codecollab && python app.py`` on ``port`` with its database in ``workdir``,
    and wait until it is healthy. A restart with the same arguments reopens the same database.
    ``settings`` are extra environment variables."""
    env = {
        **os.environ,
        "CODECOLLAB_HOST": "127.0.0.1",
        "CODECOLLAB_PORT": str(port),
        "CODECOLLAB_DATABASE_PATH": str(workdir / "codecollab.db"),
        "CODECOLLAB_DOC_MAX_BYTES": str(DOC_MAX_BYTES),
        # Every test shares 127.0.0.1, and one page load fetches about ten static files.
        "CODECOLLAB_HTTP_RATE_LIMIT": "6000/minute, burst 1000",
        "CODECOLLAB_CONNECT_RATE_LIMIT": "600/minute, burst 100",
        **settings,
    }
    log_path = workdir / "server.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "app.py"], cwd=APP_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    server = EditorServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_for_health(server, SERVER_START_TIMEOUT_S)
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: EditorServer) -> None:
    """Stop the server with SIGTERM, or SIGKILL when it does not exit within 10 s."""
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture(scope="module")
def editor_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EditorServer]:
    """The real editor on a free port, with its own database and a 2 MiB document cap."""
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: build the frontend with `make assets`")

    server = start_server(tmp_path_factory.mktemp("codecollab-browser"), free_port())
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[playwright_api.Browser]:
    """One headless Chromium for the module; each test opens its own contexts."""
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def session_url(editor_server: EditorServer) -> str:
    """URL of a fresh session, so tests never see each other's text."""
    return f"{editor_server.base_url}/s/{secrets.token_urlsafe(16)}"


@pytest.fixture
def open_tab(browser: playwright_api.Browser) -> Iterator:
    """Return ``open_tab(url, name=None, **context_options)``, which opens ``url`` in a new
    browser context (a separate user) and waits until the editor is editable. Every context
    closes when the test ends."""
    contexts: list[playwright_api.BrowserContext] = []

    def open_editor(url: str, *, name: str | None = None, **context_options) -> playwright_api.Page:
        context = browser.new_context(**context_options)
        contexts.append(context)
        if name is not None:
            context.add_init_script(f"localStorage.setItem('codecollab.name', {name!r})")
        page = context.new_page()
        page.goto(url)
        page.wait_for_selector("#editor[data-ready='true']", timeout=READY_TIMEOUT_MS)
        return page

    yield open_editor
    for context in contexts:
        context.close()


def editor_text(page: playwright_api.Page) -> str:
    """Return the text CodeMirror shows (its state, not the DOM, which hides long lines)."""
    return page.evaluate("window.codecollab.editor.view.state.doc.toString()")


def start_typing_in_page(page: playwright_api.Page, text: str, interval_ms: int) -> None:
    """Type ``text`` at the end of the document from a timer inside the page, without waiting.

    Two pages typing this way run at the same time in two renderer processes, which the
    synchronous Playwright API cannot do with real key presses.
    """
    page.evaluate(
        """([text, interval]) => {
            const view = window.codecollab.editor.view
            const chars = [...text]
            window.typingDone = false
            const timer = setInterval(() => {
                const char = chars.shift()
                if (char === undefined) {
                    clearInterval(timer)
                    window.typingDone = true
                    return
                }
                const end = view.state.doc.length
                view.dispatch({ changes: { from: end, insert: char }, userEvent: 'input.type' })
            }, interval)
        }""",
        [text, interval_ms],
    )


def paste_text(page: playwright_api.Page, text: str) -> None:
    """Paste ``text`` at the cursor through CodeMirror's paste handler, as Ctrl+V does.

    Playwright's ``insert_text`` goes through contenteditable editing instead, which did not
    finish within two minutes for 100 KB of short lines in this Chromium.
    """
    page.evaluate(
        """(text) => {
            const data = new DataTransfer()
            data.setData('text/plain', text)
            const paste = new ClipboardEvent('paste', {
                clipboardData: data, bubbles: true, cancelable: true,
            })
            document.querySelector('.cm-content').dispatchEvent(paste)
        }""",
        text,
    )


def wait_for_same_text(pages: list[playwright_api.Page]) -> list[str]:
    """Wait until every page shows the same text; return the texts seen last."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_MS / 1000
    texts = [editor_text(page) for page in pages]
    while len(set(texts)) > 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        texts = [editor_text(page) for page in pages]
    return texts


def save_screenshot(page: playwright_api.Page, name: str) -> Path:
    """Save a screenshot under test-artifacts/ and return its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


def fetch_server_text(editor_server: EditorServer, url: str) -> str:
    """Return the session's text from the HTTP API, as curl would see it."""
    session_id = url.rsplit("/", 1)[1]
    api = f"{editor_server.base_url}/api/sessions/{session_id}/text"
    with urllib.request.urlopen(api, timeout=5) as response:
        return response.read().decode("utf-8")


def test_two_tabs_converge(open_tab, session_url, editor_server):
    first = open_tab(session_url, name="Ada")
    second = open_tab(session_url, name="Grace")
    initial = editor_text(first)

    # A marker both tabs have seen splits the document, so "start" and "end" differ even when
    # the session starts empty.
    first.click(".cm-content")
    first.keyboard.press("Control+End")
    first.keyboard.type("|")
    second.wait_for_function(
        "window.codecollab.editor.view.state.doc.toString().endsWith('|')",
        timeout=CONVERGE_TIMEOUT_MS,
    )
    middle = initial + "|"

    # Phase 1: real key presses, interleaved, at opposite ends of the document.
    first.keyboard.press("Control+Home")
    second.click(".cm-content")
    second.keyboard.press("Control+End")
    first_words = ["alpha ", "beta ", "gamma ", "delta "]
    second_words = [" one", " two", " three", " four"]
    for first_word, second_word in zip(first_words, second_words, strict=True):
        first.keyboard.type(first_word)
        second.keyboard.type(second_word)

    # Phase 2: both pages type at the same time at the same place, the end of the document.
    first_burst = "x" * 30 + "é🙂"
    second_burst = "y" * 30 + "字👍"
    start_typing_in_page(first, first_burst, 15)
    start_typing_in_page(second, second_burst, 15)
    for page in (first, second):
        page.wait_for_function("window.typingDone === true", timeout=CONVERGE_TIMEOUT_MS)

    texts = wait_for_same_text([first, second])
    save_screenshot(first, "codecollab-two-tabs.png")

    assert texts[0] == texts[1], f"tabs diverged:\n{texts[0]!r}\n{texts[1]!r}"
    head = "".join(first_words) + middle + "".join(second_words)
    assert texts[0].startswith(head)
    typed = collections.Counter(first_burst + second_burst)
    tail = texts[0][len(head) :]
    assert collections.Counter(tail) == typed, f"burst characters lost or duplicated: {tail!r}"
    assert fetch_server_text(editor_server, session_url) == texts[0]


def test_typing_after_crlf_put(open_tab, session_url, editor_server):
    # CodeMirror counts "\r\n" as one line break and Yjs as two characters, so a "\r" in the
    # shared text would shift the tab's edits against the server's copy.
    session_id = session_url.rsplit("/", 1)[1]
    put = urllib.request.Request(
        f"{editor_server.base_url}/api/sessions/{session_id}/text",
        data=b"one\r\ntwo\r\nthree\rfour",
        method="PUT",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(put, timeout=5) as response:
        assert response.status == 200
    page = open_tab(session_url)
    page.click(".cm-content")
    page.keyboard.press("Control+End")
    page.keyboard.type("!")
    page.wait_for_function(
        "window.codecollab.editor.view.state.doc.toString().endsWith('four!')",
        timeout=CONVERGE_TIMEOUT_MS,
    )
    deadline = time.monotonic() + CONVERGE_TIMEOUT_MS / 1000
    server_text = fetch_server_text(editor_server, session_url)
    while server_text != editor_text(page) and time.monotonic() < deadline:
        time.sleep(0.1)
        server_text = fetch_server_text(editor_server, session_url)
    assert server_text == "one\ntwo\nthree\nfour!"
    assert editor_text(page) == server_text


def test_counter_two_then_one(open_tab, session_url):
    first = open_tab(session_url, name="Ada")
    second = open_tab(session_url, name="Grace")

    first.wait_for_function(
        "document.getElementById('user-count').textContent === '2'", timeout=READY_TIMEOUT_MS
    )
    assert first.locator("#avatars > li").count() == 2
    assert second.text_content("#user-count") == "2"

    second.context.close()
    started = time.monotonic()
    first.wait_for_function(
        "document.getElementById('user-count').textContent === '1'", timeout=TAB_CLOSE_TIMEOUT_MS
    )
    elapsed = time.monotonic() - started

    assert first.locator("#avatars > li").count() == 1
    assert elapsed < TAB_CLOSE_TIMEOUT_MS / 1000


def test_reloads_count_once(open_tab, session_url):
    viewer = open_tab(session_url)
    reloader = open_tab(session_url)
    viewer.wait_for_function(
        "document.getElementById('user-count').textContent === '2'", timeout=READY_TIMEOUT_MS
    )
    viewer.evaluate(
        """() => {
            const counter = document.getElementById('user-count')
            window.maxCount = Number(counter.textContent)
            new MutationObserver(() => {
                window.maxCount = Math.max(window.maxCount, Number(counter.textContent))
            }).observe(counter, { childList: true, characterData: true, subtree: true })
        }"""
    )

    for _ in range(5):
        reloader.reload()
    reloader.wait_for_selector("#editor[data-ready='true']", timeout=READY_TIMEOUT_MS)
    viewer.wait_for_function(
        "document.getElementById('user-count').textContent === '2'", timeout=2_000
    )

    assert viewer.evaluate("window.maxCount") == 2
    assert viewer.locator("#avatars > li").count() == 2


def test_name_shown_as_text(open_tab, session_url):
    hostile = '<img src=x onerror="window.injected=1">'
    viewer = open_tab(session_url, name="Viewer")
    open_tab(session_url, name=hostile)

    avatar = viewer.locator("#avatars > li", has_text=hostile)
    avatar.wait_for(timeout=READY_TIMEOUT_MS)

    assert viewer.locator("#avatars img").count() == 0
    assert viewer.evaluate("window.injected === undefined")
    assert hostile in avatar.get_attribute("title")


def test_rename_reaches_peers(open_tab, session_url):
    renamer = open_tab(session_url, name="Before Rename")
    viewer = open_tab(session_url, name="Viewer")

    renamer.fill("#display-name", "After Rename")
    renamer.press("#display-name", "Enter")
    viewer.locator("#avatars > li[title='After Rename']").wait_for(timeout=CONVERGE_TIMEOUT_MS)

    assert viewer.locator("#avatars > li[title='Before Rename']").count() == 0
    # The page's init script sets the name on every load, so storage is checked, not a reload.
    assert renamer.evaluate("localStorage.getItem('codecollab.name')") == "After Rename"


def test_toolbar_actions(open_tab, session_url):
    page = open_tab(session_url)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    session_id = session_url.rsplit("/", 1)[1]

    page.click("#copy-link")
    page.locator("#notices [role='status']").wait_for(timeout=READY_TIMEOUT_MS)
    copied = page.evaluate("navigator.clipboard.readText()")

    page.select_option("#language", "go")
    text = editor_text(page)
    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    downloaded = Path(download.path()).read_text(encoding="utf-8")

    page.click("#new-session")
    page.wait_for_url(lambda url: url != session_url, timeout=READY_TIMEOUT_MS)
    page.wait_for_selector("#editor[data-ready='true']", timeout=READY_TIMEOUT_MS)

    assert copied == session_url
    assert download.suggested_filename == f"{session_id}.go"
    assert downloaded == text
    assert page.url != session_url
    assert re.fullmatch(r".*/s/[A-Za-z0-9_-]{22}", page.url), page.url


def test_theme_remembered(open_tab, session_url):
    page = open_tab(session_url, color_scheme="light")
    page.click("#theme-toggle")
    dark_after_click = page.evaluate("document.documentElement.classList.contains('dark')")
    page.reload()
    page.wait_for_selector("#editor[data-ready='true']", timeout=READY_TIMEOUT_MS)

    assert dark_after_click
    assert page.evaluate("document.documentElement.classList.contains('dark')")
    assert page.get_attribute("#theme-toggle", "aria-pressed") == "true"


def test_undo_only_own_edits(open_tab, session_url):
    mine = open_tab(session_url)
    theirs = open_tab(session_url)
    initial = editor_text(mine)

    mine.click(".cm-content")
    mine.keyboard.press("Control+End")
    mine.keyboard.type("mine")
    mine.wait_for_function("window.codecollab.provider.pending.size === 0")
    theirs.wait_for_function(
        "window.codecollab.editor.view.state.doc.toString().endsWith('mine')",
        timeout=CONVERGE_TIMEOUT_MS,
    )
    theirs.click(".cm-content")
    theirs.keyboard.press("Control+End")
    theirs.keyboard.type(" theirs")
    mine.wait_for_function(
        "window.codecollab.editor.view.state.doc.toString().endsWith(' theirs')",
        timeout=CONVERGE_TIMEOUT_MS,
    )

    mine.keyboard.press("Control+z")
    texts = wait_for_same_text([mine, theirs])

    assert texts[0] == initial + " theirs"
    assert texts[1] == texts[0]


def test_language_shared(open_tab, session_url):
    first = open_tab(session_url)
    second = open_tab(session_url)

    first.select_option("#language", "rust")
    second.wait_for_function(
        "document.getElementById('language').value === 'rust'", timeout=CONVERGE_TIMEOUT_MS
    )

    assert second.evaluate("window.codecollab.doc.getMap('meta').get('language')") == "rust"


def test_phone_layout_fits(open_tab, session_url):
    phone = open_tab(
        session_url,
        viewport={"width": 375, "height": 740},
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    phone.tap(".cm-content")
    phone.keyboard.type("tap")
    save_screenshot(phone, "codecollab-phone.png")

    assert phone.evaluate("document.documentElement.scrollWidth") <= 375
    for selector in (
        "#language",
        "#display-name",
        "#undo",
        "#copy-link",
        "#download",
        "#new-session",
        "#theme-toggle",
        "#user-count",
        "#status",
    ):
        box = phone.locator(selector).bounding_box()
        assert box is not None, f"{selector} is not rendered"
        assert box["x"] >= 0, f"{selector} starts left of the screen: {box}"
        assert box["x"] + box["width"] <= 375, f"{selector} ends right of the screen: {box}"
    assert "tap" in editor_text(phone)


def test_large_paste_saved(open_tab, session_url, editor_server):
    writer = open_tab(session_url)
    peer = open_tab(session_url)
    pasted = "0123456789abcdef\n" * (LARGE_PASTE_CHARS // 17)

    writer.click(".cm-content")
    writer.keyboard.press("Control+End")
    paste_text(writer, pasted)
    writer.wait_for_function(
        "window.codecollab.provider.pending.size === 0", timeout=CONVERGE_TIMEOUT_MS
    )
    texts = wait_for_same_text([writer, peer])

    assert writer.get_attribute("#status", "data-state") == "connected"
    assert writer.locator("#notices [role='alert']").count() == 0
    assert texts[0].endswith(pasted)
    assert texts[1] == texts[0]
    assert fetch_server_text(editor_server, session_url) == texts[0]


def test_oversized_paste_message(open_tab, session_url):
    writer = open_tab(session_url)
    peer = open_tab(session_url)
    before = editor_text(peer)

    writer.click(".cm-content")
    paste_text(writer, "z" * (DOC_MAX_BYTES + 64 * 1024))
    notice = writer.locator("#notices [role='alert']")
    notice.first.wait_for(timeout=READY_TIMEOUT_MS)
    save_screenshot(writer, "codecollab-doc-too-large.png")

    assert "larger than the server allows" in notice.first.text_content()
    assert writer.get_attribute("#status", "data-state") == "rejected"
    assert writer.get_attribute(".cm-content", "contenteditable") == "false"
    assert writer.evaluate("window.codecollab.provider.socket.connected")
    assert editor_text(peer) == before


def test_paste_over_message_limit(open_tab, session_url):
    writer = open_tab(session_url)
    before = editor_text(writer)
    # The server's default message limit is twice the document cap.
    oversized = "m" * (2 * DOC_MAX_BYTES + 1024)

    writer.click(".cm-content")
    paste_text(writer, oversized)
    notice = writer.locator("#notices [role='alert']")
    notice.first.wait_for(timeout=READY_TIMEOUT_MS)

    assert "more than" in notice.first.text_content()
    assert editor_text(writer) == before
    assert writer.evaluate("window.codecollab.provider.socket.connected")
    assert writer.get_attribute("#status", "data-state") == "connected"


def test_restart_keeps_offline_edits(open_tab, tmp_path):
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: build the frontend with `make assets`")
    port = free_port()
    server = start_server(tmp_path, port)
    try:
        url = f"{server.base_url}/s/{secrets.token_urlsafe(16)}"
        writer = open_tab(url)
        writer.click(".cm-content")
        writer.keyboard.press("Control+End")
        writer.keyboard.type(" saved")
        writer.wait_for_function(
            "window.codecollab.provider.pending.size === 0", timeout=CONVERGE_TIMEOUT_MS
        )

        server.process.kill()
        server.process.wait(timeout=10)
        writer.wait_for_function(
            "!window.codecollab.provider.socket.connected", timeout=CONVERGE_TIMEOUT_MS
        )
        writer.keyboard.type(" offline")
        offline_state = writer.get_attribute("#status", "data-state")

        server = start_server(tmp_path, port)
        # Socket.IO retries with a randomized back-off of at most 5 s.
        writer.wait_for_function(
            "document.getElementById('status').dataset.state === 'connected'",
            timeout=CONVERGE_TIMEOUT_MS,
        )
        local = editor_text(writer)
        stored = fetch_server_text(server, url)
    finally:
        stop_server(server)

    assert offline_state == "unsent"
    assert local.endswith(" saved offline")
    assert local.count(" saved") == 1
    assert stored == local


def test_code_load_failure_message(browser, tmp_path):
    # One static file per minute: the stylesheet, the scripts and their chunks cannot all load.
    server = start_server(tmp_path, free_port(), CODECOLLAB_STATIC_RATE_LIMIT="1/minute")
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"{server.base_url}/s/{secrets.token_urlsafe(16)}")
        page.wait_for_selector("#loading-text[data-failed='true']", timeout=READY_TIMEOUT_MS)
        message = page.locator("#loading-text").text_content()
    finally:
        context.close()
        stop_server(server)

    assert message is not None
    assert "could not load its code" in message


def test_invalid_session_404(browser, editor_server):
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"{editor_server.base_url}/s/bad!id")
    heading = page.locator("h1").text_content()
    context.close()

    assert response.status == 404
    assert heading == "Session not found"


def test_offline_edits_resent(open_tab, session_url):
    writer = open_tab(session_url)
    peer = open_tab(session_url)

    # A client-side disconnect stops Socket.IO from reconnecting until connect() is called.
    writer.evaluate("window.codecollab.provider.socket.disconnect()")
    writer.click(".cm-content")
    writer.keyboard.press("Control+End")
    writer.keyboard.type("written offline")
    offline_state = writer.get_attribute("#status", "data-state")
    offline_label = writer.text_content("#status-text")

    writer.evaluate("window.codecollab.provider.socket.connect()")
    writer.wait_for_function(
        "document.getElementById('status').dataset.state === 'connected'",
        timeout=CONVERGE_TIMEOUT_MS,
    )
    texts = wait_for_same_text([writer, peer])

    assert offline_state == "unsent"
    assert offline_label == "Offline, unsent edits"
    assert texts[0].endswith("written offline")
    assert texts[1] == texts[0]


def test_websocket_blocked_falls_back_to_polling(open_tab, session_url, editor_server):
    port = int(editor_server.base_url.rsplit(":", 1)[1])
    with WebSocketBlockingProxy(port) as proxy:
        blocked_url = session_url.replace(editor_server.base_url, proxy.url)
        behind_proxy = open_tab(blocked_url, name="Ada")
        direct = open_tab(session_url, name="Grace")
        transports = [
            page.evaluate("window.codecollab.provider.socket.io.engine.transport.name")
            for page in (behind_proxy, direct)
        ]

        start_typing_in_page(behind_proxy, "p" * 40 + "🙂", 10)
        start_typing_in_page(direct, "w" * 40 + "字", 10)
        for page in (behind_proxy, direct):
            page.wait_for_function("window.typingDone === true", timeout=CONVERGE_TIMEOUT_MS)
        texts = wait_for_same_text([behind_proxy, direct])

    assert transports == ["polling", "websocket"]
    assert texts[0] == texts[1], f"tabs diverged:\n{texts[0]!r}\n{texts[1]!r}"
    assert collections.Counter(texts[0])["p"] >= 40
    assert collections.Counter(texts[0])["w"] >= 40
    assert fetch_server_text(editor_server, session_url) == texts[0]
