"""The backup bucket: upload, verify, list, download and delete objects over the S3 API.

Rules:

- the S3 client is ``minio`` (maintained, signs requests itself); the endpoint must be
  ``https://host[:port]``; certificates are verified against the system roots, or
  against ``ca_bundle`` when the server's ``storage.ca_bundle`` setting names one;
- short, bounded network waits (connect 10 s, read 120 s, two retries): a bucket that is
  down makes a backup fail in seconds, not hang;
- every failure becomes a :class:`BackupError` whose message says what failed, where, and
  why in the provider's words (``InvalidAccessKeyId``, ``SignatureDoesNotMatch``,
  ``NoSuchBucket``, connection refused, certificate not trusted, disk full, ...);
- :meth:`Bucket.verify` reads the object back: its size must match and the SHA-256 of
  its bytes must be the one computed while writing it; only then is a backup good.
- methods block: callers run them in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import errno
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import urllib3
from minio import Minio
from minio.error import MinioException, S3Error

from tako_common.errors import TakoError
from tako_common.protocol import S3Target

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 120.0
PART_SIZE = 16 * 1024 * 1024


class BackupError(TakoError):
    """A backup, listing, download or restore failed; the message says why."""

    code = "backup_failed"


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


def describe(exc: BaseException) -> str:
    """One line naming the cause of a storage failure."""
    if isinstance(exc, S3Error):
        return f"{exc.code}: {exc.message}"
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return describe(exc.reason)
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"no space left on the server's disk ({exc.filename or 'data dir'})"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Bucket:
    """One bucket of one S3 target, reached with the target's credentials."""

    def __init__(self, target: S3Target, ca_bundle: Path | None = None) -> None:
        self.target = target
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
            cert_reqs="CERT_REQUIRED",
            ca_certs=str(ca_bundle) if ca_bundle is not None else None,
            retries=urllib3.Retry(total=2, backoff_factor=0.5, status_forcelist=[502, 503, 504]),
        )
        self._client = Minio(
            target.endpoint.removeprefix("https://"),
            access_key=target.access_key_id,
            secret_key=target.secret_access_key,
            secure=True,
            region=target.region,
            http_client=http,
        )
        if target.force_path_style:
            self._client.disable_virtual_style_endpoint()  # type: ignore[no-untyped-call]

    def __repr__(self) -> str:
        return f"Bucket({self.where})"

    @property
    def where(self) -> str:
        return f"bucket {self.target.bucket!r} at {self.target.endpoint}"

    @contextmanager
    def _failing(self, what: str) -> Iterator[None]:
        try:
            yield
        except BackupError:
            raise
        except (MinioException, urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise BackupError(f"{what} in {self.where} failed: {describe(exc)}") from exc

    def upload(self, key: str, path: Path, metadata: dict[str, str]) -> None:
        with self._failing(f"upload of {key}"), path.open("rb") as fh:
            self._client.put_object(
                self.target.bucket,
                key,
                fh,
                path.stat().st_size,
                metadata=metadata,  # type: ignore[arg-type]
                part_size=PART_SIZE,
            )

    def verify(self, key: str, size: int, sha256: str) -> None:
        """Raise unless the stored object has ``size`` bytes whose SHA-256 is ``sha256``."""
        with self._failing(f"verification of {key}"):
            found = self._client.stat_object(self.target.bucket, key)
            if found.size != size:
                raise BackupError(
                    f"{key} in {self.where} has {found.size} bytes, {size} were uploaded"
                )
            digest = hashlib.sha256()
            self._read(key, digest.update)
            if digest.hexdigest() != sha256:
                raise BackupError(f"{key} in {self.where} does not match what was uploaded")

    def stored_sha256(self, key: str) -> str | None:
        """The SHA-256 recorded with the object when it was uploaded (None if absent)."""
        with self._failing(f"reading {key}"):
            found = self._client.stat_object(self.target.bucket, key)
        value = (found.metadata or {}).get("x-amz-meta-sha256")
        return str(value) if value else None

    def _read(self, key: str, sink: object) -> None:
        response = self._client.get_object(self.target.bucket, key)
        try:
            for chunk in response.stream(1024 * 1024):
                sink(chunk)  # type: ignore[operator]
        finally:
            response.close()
            response.release_conn()

    def download(self, key: str, dest: Path) -> str:
        """Copy the object to ``dest`` (0600); return the SHA-256 of its bytes."""
        digest = hashlib.sha256()
        with self._failing(f"download of {key}"), dest.open("xb") as fh:
            dest.chmod(0o600)

            def write(chunk: bytes) -> None:
                fh.write(chunk)
                digest.update(chunk)

            self._read(key, write)
        return digest.hexdigest()

    def list(self, prefix: str) -> list[StoredObject]:
        with self._failing(f"listing of {prefix}"):
            return [
                StoredObject(str(o.object_name), int(o.size or 0))
                for o in self._client.list_objects(self.target.bucket, prefix, recursive=True)
                if o.object_name is not None and not o.is_dir
            ]

    def delete(self, key: str) -> None:
        with self._failing(f"deletion of {key}"):
            self._client.remove_object(self.target.bucket, key)
