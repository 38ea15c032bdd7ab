"""The product as a newcomer starts it: `make run`'s launcher, the jobs page in Chromium, Ctrl-C.

The tests share one stack and run in file order: the last one stops it with SIGINT and checks
that no process of any group is left.
"""

from __future__ import annotations

import base64
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from envconfig import repo_root
from launcher.supervisor import group_members

from .conftest import Stack

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/1/stat").exists(), reason="needs Linux /proc"),
]

ARTIFACTS = repo_root() / "test-artifacts"
TASK_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-second 640x360 H.264 clip generated with PyAV."""
    from scheduler import media

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    media.generate_clip(path, seconds=3.0, width=640, height=360)
    return path


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_stack_prints_every_url(stack: Stack) -> None:
    text = "\n".join(stack.run.lines)
    for url in (stack.editor_url, stack.producer_url, stack.flower_url):
        assert f"{url}/" in text


@pytest.mark.parametrize(
    ("service", "path"),
    [
        ("editor", "/healthz"),
        ("producer", "/healthz"),
        ("producer", "/"),
        ("flower", "/healthcheck"),
    ],
)
def test_stack_service_answers(stack: Stack, service: str, path: str) -> None:
    status, _ = _get(getattr(stack, f"{service}_url") + path)
    assert status == 200


def _drop_file(page, path: Path) -> None:
    """Drop ``path`` on the drop zone the way a browser does: a DataTransfer with one File."""
    payload = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "video/mp4" }));
            const zone = document.querySelector("#drop-zone");
            for (const type of ["dragenter", "dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, {
                    dataTransfer: transfer, bubbles: true, cancelable: true,
                }));
            }
        }""",
        [path.name, payload],
    )


# Records every value that a task progress bar shows, and every upload progress text.
WATCH_PROGRESS = """() => {
    window.__percents = [];
    window.__uploadTexts = [];
    window.__loadedOnce = true;
    new MutationObserver(() => {
        for (const bar of document.querySelectorAll("#task-list [role=progressbar]")) {
            window.__percents.push(Number(bar.getAttribute("aria-valuenow")));
        }
        const upload = document.querySelector("#upload-progress .upload-text");
        if (upload && upload.textContent) window.__uploadTexts.push(upload.textContent);
    }).observe(document.body, {
        subtree: true, childList: true, attributes: true, characterData: true,
    });
}"""


def test_jobs_page_video_reaches_100(stack: Stack, page, clip: Path) -> None:
    from playwright.sync_api import expect

    page.goto(stack.producer_url + "/")
    expect(page.locator("#live-status")).to_have_text("Live")
    page.evaluate(WATCH_PROGRESS)
    # Throttle the upload to about 200 KB/s, so the upload progress bar has steps to show.
    cdp = page.context.new_cdp_session(page)
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 200_000},
    )

    _drop_file(page, clip)
    expect(page.locator("#video-file-name")).to_contain_text("clip.mp4")
    page.locator("#video-form [name=thumbnails]").fill("3")
    page.locator("#video-form button[type=submit]").click()
    expect(page.locator("#video-form .form-status")).to_contain_text(
        "Queued as task", timeout=TASK_TIMEOUT_MS
    )
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
    )

    card = page.locator("#task-list li", has_text="Video").first
    expect(card).to_have_attribute("data-state", "succeeded", timeout=TASK_TIMEOUT_MS)
    expect(card.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    thumbnails = card.locator("img.task-thumbnail")
    expect(thumbnails).to_have_count(3)
    page.wait_for_function(
        "() => [...document.querySelectorAll('img.task-thumbnail')]"
        ".every((image) => image.complete && image.naturalWidth > 0)"
    )

    percents = page.evaluate("window.__percents")
    assert percents[-1] == 100
    assert percents == sorted(percents)
    upload_texts = page.evaluate("window.__uploadTexts")
    assert any(re.search(r"\((?:[1-9]|[1-9]\d)%\)", text) for text in upload_texts)
    assert page.evaluate("window.__loadedOnce") is True  # the page never reloaded

    download = card.locator("a.task-download", has_text=".mp4")
    href = download.get_attribute("href")
    response = page.request.get(stack.producer_url + href)
    assert response.status == 200
    assert response.body()[4:8] == b"ftyp"
    assert page.console_errors == []

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "jobs-page.png"), full_page=True)


def test_jobs_page_cancels_scheduled_report(stack: Stack, page) -> None:
    from playwright.sync_api import expect

    page.goto(stack.producer_url + "/")
    expect(page.locator("#live-status")).to_have_text("Live")
    form = page.locator("#report-form")
    form.locator("[name=when]").select_option("delay")
    form.locator("[name=delay_seconds]").fill("300")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-status")).to_contain_text("Report queued as task")

    card = page.locator("#task-list li", has_text="Report").first
    expect(card).to_have_attribute("data-state", "queued")
    card.locator("button.task-cancel").click()
    expect(card).to_have_attribute("data-state", "cancelled", timeout=TASK_TIMEOUT_MS)
    expect(card.locator("button.task-cancel")).to_have_count(0)


def test_jobs_page_shows_rate_limit_retry(stack: Stack, page) -> None:
    from playwright.sync_api import expect

    page.goto(stack.producer_url + "/")
    form = page.locator("#email-form")
    form.locator("[name=recipients]").fill("ada@example.com")
    form.locator("[name=subject]").fill("Hello")
    form.locator("[name=body]").fill("A test message.")
    status = form.locator(".form-status")
    for _ in range(4):  # the stack allows two POSTs a minute
        status.evaluate("(node) => { node.textContent = ''; }")
        form.locator("button[type=submit]").click()
        expect(status).not_to_have_text("")
        if "Too many requests" in status.inner_text():
            break
        page.wait_for_timeout(200)

    expect(status).to_have_text(re.compile(r"Too many requests.*Try again in \d+ s \(at .+\)"))
    expect(form.locator("button[type=submit]")).to_be_disabled()
    expect(form.locator("button[type=submit]")).to_have_text(re.compile(r"Wait \d+ s"))


def _record(task_id: str, state: str, **fields: object) -> dict:
    return {
        "id": task_id,
        "kind": "process-video",
        "state": state,
        "percent": 0,
        "message": "",
        "result": None,
        "error": None,
        "created_at": "2026-01-01T00:00:00+00:00",
        "updated_at": "2026-01-01T00:00:00+00:00",
        **fields,
    }


def test_jobs_page_shows_error_and_cancel(stack: Stack, page) -> None:
    from playwright.sync_api import expect

    # A failing transcode cannot be produced on demand, so the first page of the list is
    # replaced; the error text carries markup that must appear as text.
    error = "could not decode frame 12 <img src=x onerror=alert(1)>"
    tasks = [
        _record("f" * 32, "failed", percent=40, error=error),
        _record("a" * 32, "progress", percent=55, message="frame 330 of 600"),
    ]
    page.route(
        "**/tasks?page=1&per_page=*",
        lambda route: route.fulfill(json={"tasks": tasks, "page": 1, "per_page": 20, "total": 2}),
    )
    page.goto(stack.producer_url + "/")

    failed = page.locator(f"li[data-task-id='{'f' * 32}']")
    expect(failed.locator(".task-error")).to_have_text(f"Error: {error}")
    expect(failed.locator("img")).to_have_count(0)
    expect(failed.locator("button.task-cancel")).to_have_count(0)
    running = page.locator(f"li[data-task-id='{'a' * 32}']")
    expect(running.locator("button.task-cancel")).to_be_visible()
    expect(running.locator(".task-percent")).to_have_text("55%")
    expect(running.locator(".task-message")).to_have_text("frame 330 of 600")


def test_stack_sigint_leaves_no_process(stack: Stack) -> None:
    groups = stack.run.started_groups()
    assert set(groups) >= {"editor", "producer", "flower", "beat"}

    stack.run.popen.send_signal(signal.SIGINT)
    code = stack.run.drain(timeout=60)

    assert code == 0
    assert {name: group_members(pgid) for name, pgid in groups.items()} == {
        name: [] for name in groups
    }
