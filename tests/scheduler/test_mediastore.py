"""The media store backends: the MEDIA_ROOT folder, and S3 through moto's server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from envconfig import ConfigError
from scheduler.config import load_settings
from scheduler.mediastore import (
    LocalMediaStore,
    MediaNotFound,
    MediaStore,
    S3MediaStore,
    open_media_store,
)
from tests.scheduler.conftest import make_client, upload
from tests.scheduler.s3_server import MotoServer, free_port


def _settings(tmp_path: Path, extra: dict[str, str]):  # noqa: ANN202
    env = {"SCHEDULER_STATE_DIR": str(tmp_path / "state"), "MEDIA_ROOT": str(tmp_path / "media")}
    return load_settings(environ={**env, **extra})


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> MediaStore:
    extra = request.getfixturevalue("s3_media_env") if request.param == "s3" else {}
    return open_media_store(_settings(tmp_path, extra))


def _file(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _outputs(tmp_path: Path, files: dict[str, bytes]) -> Path:
    scratch = tmp_path / "scratch"
    for name, data in files.items():
        _file(scratch / name, data)
    return scratch


def _read_output(store: MediaStore, task_id: str, name: str) -> bytes:
    folder = store.output_folder(task_id)
    if folder is not None:
        return (folder / name).read_bytes()
    return b"".join(store.open_output(task_id, name).chunks)


@pytest.mark.parametrize(
    ("media_url", "kind"),
    [("", LocalMediaStore), ("s3://bucket-a", S3MediaStore), ("s3://bucket-a/p/q", S3MediaStore)],
)
def test_open_media_store_kind(tmp_path: Path, media_url: str, kind: type) -> None:
    assert isinstance(open_media_store(_settings(tmp_path, {"MEDIA_URL": media_url})), kind)


@pytest.mark.parametrize(
    "variables",
    [
        {"MEDIA_URL": "http://bucket/prefix"},
        {"MEDIA_URL": "s3://"},
        {"MEDIA_URL": "s3://Upper_Case"},
        {"MEDIA_URL": "s3://bucket?x=1"},
        {"MEDIA_S3_ADDRESSING_STYLE": "sideways"},
        {"MEDIA_URL": "s3://bucket", "MEDIA_S3_ACCESS_KEY_ID": "only-the-id"},
    ],
)
def test_settings_reject_bad_media(tmp_path: Path, variables: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        _settings(tmp_path, variables)


def test_s3_key_prefix(tmp_path: Path) -> None:
    store = open_media_store(_settings(tmp_path, {"MEDIA_URL": "s3://bucket-a/deep/prefix/"}))
    assert store.key("uploads", "a.mp4") == "deep/prefix/uploads/a.mp4"


def test_secret_not_in_repr(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        {"MEDIA_S3_ACCESS_KEY_ID": "id", "MEDIA_S3_SECRET_ACCESS_KEY": "very-secret"},
    )
    assert "very-secret" not in repr(settings)


def test_upload_roundtrip(store: MediaStore, tmp_path: Path) -> None:
    local = _file(tmp_path / "incoming" / ".part-1", b"video bytes")
    store.save_upload(local, "task-1.mp4")
    assert not local.exists()
    with store.open_upload("task-1.mp4", "task-1") as path:
        assert path.read_bytes() == b"video bytes"


def test_upload_deleted(store: MediaStore, tmp_path: Path) -> None:
    store.save_upload(_file(tmp_path / ".part-2", b"x"), "task-2.mp4")
    store.delete_upload("task-2.mp4")
    store.delete_upload("task-2.mp4")
    with pytest.raises(MediaNotFound), store.open_upload("task-2.mp4", "task-2"):
        pass


def test_missing_upload_not_found(store: MediaStore) -> None:
    with pytest.raises(MediaNotFound), store.open_upload("never.mp4", "task-3"):
        pass


def test_publish_outputs(store: MediaStore, tmp_path: Path) -> None:
    scratch = _outputs(tmp_path, {"video.mp4": b"mp4", "thumb_01.jpg": b"\xff\xd8jpg"})
    store.publish_outputs("task-4", scratch)
    assert not scratch.exists()
    assert _read_output(store, "task-4", "video.mp4") == b"mp4"
    assert _read_output(store, "task-4", "thumb_01.jpg") == b"\xff\xd8jpg"


def test_publish_replaces_old_outputs(store: MediaStore, tmp_path: Path) -> None:
    store.publish_outputs("task-5", _outputs(tmp_path, {"a.txt": b"old", "stale.txt": b"x"}))
    store.publish_outputs("task-5", _outputs(tmp_path, {"a.txt": b"new"}))
    assert _read_output(store, "task-5", "a.txt") == b"new"
    with pytest.raises((MediaNotFound, FileNotFoundError)):
        _read_output(store, "task-5", "stale.txt")


def test_delete_outputs(store: MediaStore, tmp_path: Path) -> None:
    store.publish_outputs("task-6", _outputs(tmp_path, {"a.txt": b"a"}))
    assert store.delete_outputs("task-6") is True
    assert store.delete_outputs("task-6") is False


@pytest.mark.parametrize(("offset", "removed"), [(-3600, 0), (3600, 2)])
def test_delete_uploads_before(
    store: MediaStore, tmp_path: Path, offset: float, removed: int
) -> None:
    for index in range(2):
        store.save_upload(_file(tmp_path / f".part-{index}", b"x"), f"old-{index}.mp4")
    assert store.delete_uploads_before(time.time() + offset) == removed


def test_s3_byte_range(s3_media_env: dict[str, str], tmp_path: Path) -> None:
    store = open_media_store(_settings(tmp_path, s3_media_env))
    store.publish_outputs("task-7", _outputs(tmp_path, {"video.mp4": b"0123456789"}))
    remote = store.open_output("task-7", "video.mp4", "bytes=2-5")
    assert remote.status == 206
    assert b"".join(remote.chunks) == b"2345"
    assert remote.content_range == "bytes 2-5/10"
    assert remote.content_type == "video/mp4"


def test_s3_missing_output(s3_media_env: dict[str, str], tmp_path: Path) -> None:
    store = open_media_store(_settings(tmp_path, s3_media_env))
    with pytest.raises(MediaNotFound):
        store.open_output("task-8", "video.mp4")


def test_s3_check_ok(s3_media_env: dict[str, str], tmp_path: Path) -> None:
    assert open_media_store(_settings(tmp_path, s3_media_env)).check() is None


def test_s3_check_missing_bucket(s3_server: MotoServer, tmp_path: Path) -> None:
    store = open_media_store(_settings(tmp_path, s3_server.environ("no-such-bucket-here")))
    assert "no-such-bucket-here" in (store.check() or "")


def test_s3_check_closed_port(s3_server: MotoServer, tmp_path: Path) -> None:
    env = {
        **s3_server.environ("bucket-a"),
        "MEDIA_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    store = open_media_store(_settings(tmp_path, env))
    started = time.monotonic()
    assert store.check() is not None
    assert time.monotonic() - started < 30


def test_upload_503_when_s3_down(
    embedded_env: dict[str, str], s3_server: MotoServer, clip_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = {**embedded_env, **s3_server.environ("bucket-a"), "MEDIA_S3_ENDPOINT_URL": closed}
    _, _, client = make_client(env)
    response = upload(client, clip_path)
    assert response.status_code == 503
    assert "media store" in response.get_json()["error"]
    assert client.get("/tasks").get_json()["total"] == 0
    assert client.get("/healthz").get_json()["media"] == "s3"
