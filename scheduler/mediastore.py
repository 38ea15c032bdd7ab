"""Where uploads and task outputs live: the ``MEDIA_ROOT`` folder, or an S3-compatible store.

The producer saves each upload and serves the outputs; a worker fetches the upload, works in
a local scratch folder and publishes the outputs. Which backend runs is chosen by
``MEDIA_URL``:

- empty (the default): :class:`LocalMediaStore` keeps everything in ``MEDIA_ROOT``. Producers
  and workers on several machines then need that folder on a shared disk.
- ``s3://bucket/prefix``: :class:`S3MediaStore` moves files through the object store with
  boto3, so each process's ``MEDIA_ROOT`` contains only its own scratch files.

Both backends use the same names: ``uploads/<name>`` for an upload, which is deleted once its
task succeeds or is cancelled, and ``<task_id>/<name>`` for each output. On S3 these names are
keys under the URL's prefix.
"""

from __future__ import annotations

import contextlib
import logging
import mimetypes
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scheduler.config import Settings

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

UPLOADS = "uploads"
# Bytes per chunk when an S3 object is streamed to an HTTP client.
STREAM_CHUNK = 256 * 1024
# Keys per DeleteObjects request, the maximum S3 accepts.
DELETE_BATCH = 1000


class MediaStoreError(Exception):
    """The media store failed or could not be reached. The message names the object."""


class MediaNotFound(MediaStoreError):
    """The upload or output does not exist in the media store."""


@dataclass(frozen=True)
class RemoteFile:
    """An output opened for streaming from the object store."""

    chunks: Iterator[bytes]
    length: int
    content_type: str
    status: int  # 200, or 206 for a byte range
    content_range: str | None
    etag: str | None
    last_modified: datetime | None


class MediaStore:
    """Interface of both backends, which use the names given in the module docstring."""

    # Shown in logs and in /healthz: "local" or "s3".
    kind = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def describe(self) -> str:
        """Return where media lives, for logs."""
        raise NotImplementedError

    def save_upload(self, local_path: Path, name: str) -> None:
        """Move the finished upload at ``local_path`` into the store as ``uploads/<name>``.

        ``local_path`` is gone afterwards, also when this raises.
        """
        raise NotImplementedError

    def open_upload(self, name: str, task_id: str) -> contextlib.AbstractContextManager[Path]:
        """Return a context manager that yields a local path of ``uploads/<name>``.

        :raises MediaNotFound: when the upload does not exist.
        """
        raise NotImplementedError

    def delete_upload(self, name: str) -> None:
        """Delete ``uploads/<name>``. A missing upload is not an error."""
        raise NotImplementedError

    def scratch_dir(self, task_id: str) -> Path:
        """Return an empty local folder where a task writes its outputs before publishing."""
        path = self.root / f".{task_id}.partial"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def publish_outputs(self, task_id: str, scratch: Path) -> None:
        """Replace the outputs of ``task_id`` with the files in ``scratch``, then drop it."""
        raise NotImplementedError

    def output_folder(self, task_id: str) -> Path | None:
        """Return the local folder of the outputs, or ``None`` when they are remote."""
        return None

    def open_output(self, task_id: str, name: str, byte_range: str | None = None) -> RemoteFile:
        """Open ``<task_id>/<name>`` for streaming; ``byte_range`` is an HTTP Range value.

        :raises MediaNotFound: when the output does not exist.
        """
        raise NotImplementedError

    def delete_outputs(self, task_id: str) -> bool:
        """Delete every output of ``task_id``; return whether there was any."""
        raise NotImplementedError

    def delete_uploads_before(self, cutoff: float) -> int:
        """Delete uploads last modified before the Unix time ``cutoff``; return how many."""
        raise NotImplementedError

    def check(self) -> str | None:
        """Return why the store is unusable, or ``None`` when it answers."""
        return None


class LocalMediaStore(MediaStore):
    """Media in the ``MEDIA_ROOT`` folder, shared by every process that mounts it."""

    kind = "local"

    def describe(self) -> str:
        return f"folder {self.root}"

    @property
    def uploads_dir(self) -> Path:
        """Folder of the uploads."""
        return self.root / UPLOADS

    def save_upload(self, local_path: Path, name: str) -> None:
        self.uploads_dir.mkdir(parents=True, exist_ok=True)
        os.replace(local_path, self.uploads_dir / name)

    @contextlib.contextmanager
    def open_upload(self, name: str, task_id: str) -> Iterator[Path]:
        path = self.uploads_dir / name
        if not path.is_file():
            raise MediaNotFound(f"upload {name} of task {task_id} is missing from {path.parent}")
        yield path

    def delete_upload(self, name: str) -> None:
        (self.uploads_dir / name).unlink(missing_ok=True)

    def publish_outputs(self, task_id: str, scratch: Path) -> None:
        final = self.root / task_id
        shutil.rmtree(final, ignore_errors=True)
        os.replace(scratch, final)

    def output_folder(self, task_id: str) -> Path | None:
        return self.root / task_id

    def delete_outputs(self, task_id: str) -> bool:
        folder = self.root / task_id
        if not folder.exists():
            return False
        shutil.rmtree(folder, ignore_errors=True)
        return True

    def delete_uploads_before(self, cutoff: float) -> int:
        removed = 0
        if self.uploads_dir.exists():
            for path in self.uploads_dir.iterdir():
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


class S3MediaStore(MediaStore):
    """Media in an S3 bucket (AWS, MinIO, Ceph or any server of the S3 API), through boto3.

    The boto3 client is created on first use in each process, because a Celery prefork
    worker forks after import and a client's connection pool must not cross a fork.
    """

    kind = "s3"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.media_root)
        parts = urlsplit(settings.media_url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._settings = settings
        self._client: BaseClient | None = None
        self._client_pid = 0
        self._lock = threading.Lock()

    def describe(self) -> str:
        endpoint = self._settings.media_s3_endpoint_url or "the default AWS endpoint"
        return f"s3://{self.bucket}/{self.prefix} at {endpoint}"

    def key(self, *names: str) -> str:
        """Return the object key of ``names`` under the configured prefix."""
        return "/".join(part for part in (self.prefix, *names) if part)

    def client(self) -> BaseClient:
        """Return this process's boto3 S3 client, creating it on first use."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = self._make_client()
                self._client_pid = os.getpid()
            return self._client

    def _make_client(self) -> BaseClient:
        import boto3
        from botocore.config import Config

        settings = self._settings
        config = Config(
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": settings.media_s3_addressing_style},
        )
        options: dict[str, Any] = {"config": config}
        if settings.media_s3_endpoint_url:
            options["endpoint_url"] = settings.media_s3_endpoint_url
        if settings.media_s3_region:
            options["region_name"] = settings.media_s3_region
        if settings.media_s3_access_key_id:
            options["aws_access_key_id"] = settings.media_s3_access_key_id
            options["aws_secret_access_key"] = settings.media_s3_secret_access_key
        return boto3.session.Session().client("s3", **options)

    def _fail(self, action: str, key: str, exc: Exception) -> MediaStoreError:
        if _is_not_found(exc):
            return MediaNotFound(f"s3://{self.bucket}/{key} does not exist")
        return MediaStoreError(f"could not {action} s3://{self.bucket}/{key}: {exc}")

    def save_upload(self, local_path: Path, name: str) -> None:
        key = self.key(UPLOADS, name)
        try:
            self.client().upload_file(str(local_path), self.bucket, key)
        except _s3_errors() as exc:
            raise self._fail("upload to", key, exc) from exc
        finally:
            local_path.unlink(missing_ok=True)
        logger.info("stored upload %s as s3://%s/%s", name, self.bucket, key)

    @contextlib.contextmanager
    def open_upload(self, name: str, task_id: str) -> Iterator[Path]:
        key = self.key(UPLOADS, name)
        downloads = self.root / ".downloads"
        downloads.mkdir(parents=True, exist_ok=True)
        handle, raw_path = tempfile.mkstemp(dir=downloads, prefix=f"{task_id}-", suffix=name)
        os.close(handle)
        path = Path(raw_path)
        try:
            try:
                self.client().download_file(self.bucket, key, str(path))
            except _s3_errors() as exc:
                raise self._fail("download", key, exc) from exc
            yield path
        finally:
            path.unlink(missing_ok=True)

    def delete_upload(self, name: str) -> None:
        key = self.key(UPLOADS, name)
        try:
            self.client().delete_object(Bucket=self.bucket, Key=key)
        except _s3_errors() as exc:
            raise self._fail("delete", key, exc) from exc

    def publish_outputs(self, task_id: str, scratch: Path) -> None:
        # NOTE: an upload that fails midway leaves the objects already sent. A redelivery
        # replaces them, but a task that then fails for good keeps them until they are
        # deleted by hand, because cleanup only visits tasks that list their outputs.
        # A redelivered task overwrites the same names; removing the old set first also drops
        # files that an earlier, interrupted delivery wrote and this one did not.
        self.delete_outputs(task_id)
        files = sorted(path for path in scratch.iterdir() if path.is_file())
        for path in files:
            key = self.key(task_id, path.name)
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            try:
                self.client().upload_file(
                    str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}
                )
            except _s3_errors() as exc:
                raise self._fail("upload to", key, exc) from exc
        shutil.rmtree(scratch, ignore_errors=True)
        logger.info(
            "task %s: published %d outputs to s3://%s/%s/",
            task_id,
            len(files),
            self.bucket,
            self.key(task_id),
        )

    def open_output(self, task_id: str, name: str, byte_range: str | None = None) -> RemoteFile:
        key = self.key(task_id, name)
        request: dict[str, str] = {"Bucket": self.bucket, "Key": key}
        if byte_range:
            request["Range"] = byte_range
        try:
            response = self.client().get_object(**request)
        except _s3_errors() as exc:
            raise self._fail("read", key, exc) from exc
        body = response["Body"]
        return RemoteFile(
            chunks=_close_after(body.iter_chunks(STREAM_CHUNK), body),
            length=int(response["ContentLength"]),
            content_type=response.get("ContentType") or "application/octet-stream",
            status=int(response["ResponseMetadata"]["HTTPStatusCode"]),
            content_range=response.get("ContentRange"),
            etag=response.get("ETag"),
            last_modified=response.get("LastModified"),
        )

    def delete_outputs(self, task_id: str) -> bool:
        return self._delete_matching(self.key(task_id) + "/", cutoff=None) > 0

    def delete_uploads_before(self, cutoff: float) -> int:
        return self._delete_matching(self.key(UPLOADS) + "/", cutoff=cutoff)

    def _delete_matching(self, prefix: str, cutoff: float | None) -> int:
        """Delete the objects under ``prefix`` (older than ``cutoff`` when given)."""
        client = self.client()
        keys: list[str] = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    if cutoff is None or item["LastModified"].timestamp() < cutoff:
                        keys.append(item["Key"])
            for start in range(0, len(keys), DELETE_BATCH):
                batch = [{"Key": key} for key in keys[start : start + DELETE_BATCH]]
                result = client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
                for error in result.get("Errors", []):
                    logger.error(
                        "could not delete s3://%s/%s: %s",
                        self.bucket,
                        error.get("Key"),
                        error.get("Message"),
                    )
        except _s3_errors() as exc:
            raise self._fail("delete objects under", prefix, exc) from exc
        return len(keys)

    def check(self) -> str | None:
        try:
            self.client().head_bucket(Bucket=self.bucket)
        except _s3_errors() as exc:
            return f"bucket s3://{self.bucket} is not usable: {exc}"
        return None


def _s3_errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, S3UploadFailedError, S3TransferFailedError, OSError)


def _is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return False
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _close_after(chunks: Iterator[bytes], body: Any) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        body.close()


def open_media_store(settings: Settings) -> MediaStore:
    """Return the backend that ``settings.media_url`` selects."""
    settings.media_root.mkdir(parents=True, exist_ok=True)
    if settings.media_url:
        return S3MediaStore(settings)
    return LocalMediaStore(settings.media_root)
