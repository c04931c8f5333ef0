"""One key-value interface over a local folder or an S3 prefix.

Keys are ``/``-separated relative paths. Writes are atomic on both backends: a local
write goes to a temporary file that is renamed into place, and an S3 PUT is atomic by
the service's contract. Retries on S3 are botocore's (``retries={"mode": "standard"}``,
``KZ_S3_MAX_ATTEMPTS`` attempts), plus re-reading a GET body cut short, which botocore
does not retry. Every S3 upload asks the server to check and keep a SHA-256 of its body.

``write_once`` is for final outputs: it creates a key that must not exist yet (a local
hard link of the finished temporary file; an S3 conditional PUT, ``If-None-Match: *``),
so a second run never overwrites what a first one published.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)
# Letters and digits of any script (page ids come from file names such as 源氏物語_001):
# none of them is a path separator. Keys are compared as given, so callers NFC-normalise.
_SAFE_PART = re.compile(r"^[\w.@=+\-]+$")


class UnsafeKeyError(ValueError):
    """A key that could escape the store's root, or is not a plain relative path."""


class StoreError(RuntimeError):
    """A store operation failed after its retries; the message names the key."""


class KeyExistsError(StoreError):
    """``write_once`` found the key already there, holding other bytes."""


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def validate_key(key: str, *, allow_empty: bool = False, listed: bool = False) -> str:
    """Return ``key`` normalised, or raise :class:`UnsafeKeyError`.

    Refuses absolute paths, ``..``, backslashes, empty parts and odd characters, so a
    key read from user input can never leave its prefix. A ``listed`` key is one the
    store's own listing gave (a collection's file, named as people name files): its
    parts may hold any printable character, and still never make a path of their own.
    """
    if not isinstance(key, str):
        raise UnsafeKeyError(f"key must be a string, got {type(key).__name__}")
    stripped = key.strip("/") if allow_empty else key
    if stripped == "":
        if allow_empty:
            return ""
        raise UnsafeKeyError("empty key")
    if stripped.startswith("/") or "\\" in stripped or "\x00" in stripped:
        raise UnsafeKeyError(f"unsafe key {key!r}: absolute or with backslash/NUL")
    parts = stripped.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafeKeyError(f"unsafe key {key!r}: empty, '.' or '..' part")
        if listed and not _CONTROL.search(part):
            continue
        if not _SAFE_PART.match(part):
            raise UnsafeKeyError(f"unsafe key {key!r}: part {part!r} has unsafe characters")
    return "/".join(parts)


def json_bytes(obj: Any) -> bytes:
    """The bytes ``write_json`` stores for ``obj`` (for ``write_once`` of a JSON object)."""
    return json.dumps(obj, indent=2, ensure_ascii=False).encode("utf-8")


def join(*parts: str) -> str:
    """Join key parts with ``/`` and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


class Store(ABC):
    """Bytes by key. Subclasses implement five primitives; helpers build on them."""

    uri: str

    @abstractmethod
    def read_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def create_bytes(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist, atomically: True if written, False if
        the key was already there (whatever it holds; nothing is changed then)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a folder-like prefix), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def write_once(self, key: str, data: bytes) -> bool:
        """Write a final output that must never be overwritten: True if written now,
        False if the key already holds exactly these bytes (a re-run finishing a crashed
        one, or a retried PUT whose first answer was lost). Other bytes raise
        :class:`KeyExistsError`, and the stored object stays as it was."""
        if self.create_bytes(key, data):
            return True
        if self.read_bytes(key) == data:
            return False
        raise KeyExistsError(f"{key!r} already exists at {self.uri} with other contents; "
                             "it is written once and never overwritten")

    def read_listed(self, key: str) -> bytes:
        """The bytes of a key as :meth:`list` gave it (see ``validate_key(listed=True)``)."""
        return self.read_bytes(key)

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode("utf-8")

    def write_text(self, key: str, text: str) -> None:
        self.write_bytes(key, text.encode("utf-8"))

    def read_json(self, key: str) -> Any:
        return json.loads(self.read_bytes(key))

    def write_json(self, key: str, obj: Any) -> None:
        self.write_bytes(key, json_bytes(obj))

    def child(self, prefix: str) -> Store:
        """A store rooted at ``prefix`` inside this one."""
        return PrefixStore(self, validate_key(prefix))

    def local_path(self, key: str, *, listed: bool = False) -> Path | None:
        """The file behind ``key`` when the store is a local folder, else None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalStore(Store):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str, listed: bool = False) -> Path:
        return self.root.joinpath(*validate_key(key, listed=listed).split("/"))

    def local_path(self, key: str, *, listed: bool = False) -> Path:
        return self._path(key, listed)

    def _inside(self, key: str, listed: bool = False) -> Path:
        """The file to open for ``key``, refused (never opened) when a symbolic link takes
        it out of the root: a collection's ``p1.jpg -> /etc/passwd`` is no page."""
        path = self._path(key, listed)
        real = Path(os.path.realpath(path))
        if real != path and not real.is_relative_to(self.root):
            raise UnsafeKeyError(f"{key!r} is a symbolic link to outside {self.uri}")
        return real

    def read_bytes(self, key: str) -> bytes:
        return self._read(key, self._inside(key))

    def read_listed(self, key: str) -> bytes:
        return self._read(key, self._inside(key, listed=True))

    def _read(self, key: str, path: Path) -> bytes:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except OSError as exc:
            raise StoreError(f"cannot read {key!r} from {self.uri}: {exc}") from exc

    def _commit(self, key: str, data: bytes, place: Callable[[str, Path], None]) -> None:
        """Write ``data`` to a temporary file beside the key's, then ``place`` it."""
        path = self._path(key)
        for attempt in range(3):
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                           suffix=".tmp")
                break
            except FileNotFoundError:  # another writer's delete emptied and removed it
                if attempt == 2:
                    raise
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            place(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        self._commit(key, data, os.replace)

    def create_bytes(self, key: str, data: bytes) -> bool:
        # A hard link of the finished file is an exclusive create that is also atomic:
        # the key appears whole or not at all (O_EXCL on the key itself would show a
        # half-written file to a reader, and a crash would leave it so).
        def link(tmp: str, path: Path) -> None:
            try:
                os.link(tmp, path)
            finally:  # the key (if linked) keeps the data; the temporary name goes
                os.unlink(tmp)

        try:
            self._commit(key, data, link)
        except FileExistsError:
            return False
        return True

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_key(prefix, allow_empty=True)
        base = self.root.joinpath(*prefix.split("/")) if prefix else self.root
        if not base.is_dir():
            return []
        keys = []
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if name.startswith(".") and name.endswith(".tmp"):
                    continue  # an atomic write in progress
                rel = Path(dirpath, name).relative_to(self.root).as_posix()
                keys.append(rel)
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Remove the key, and the folders it leaves empty: as in S3, a folder is there
        while it holds a key."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:  # a validated key's folders all lie under the root
            if folder == self.root:
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): the folders above are kept too
                break


class S3Store(Store):
    """``s3://bucket/prefix`` through boto3.

    The endpoint, region and credentials come from the standard AWS settings
    (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, ``AWS_PROFILE``...).
    """

    def __init__(self, uri: str, *, max_attempts: int = 5) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {max_attempts}")
        import boto3
        from botocore.config import Config

        match = re.match(r"^s3://([^/]+)/?(.*)$", uri)
        if not match:
            raise ValueError(f"not an s3:// URI: {uri!r}")
        self.bucket = match.group(1)
        self.prefix = validate_key(match.group(2), allow_empty=True)
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.max_attempts = max_attempts
        config = Config(
            # botocore's "max_attempts" counts retries only; "total_max_attempts" counts
            # every attempt, which is what ``max_attempts`` means here.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=10,
            read_timeout=60,
        )
        self.client = boto3.client("s3", config=config)

    def _key(self, key: str, listed: bool = False) -> str:
        key = validate_key(key, listed=listed)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, op: str, key: str, exc: Exception) -> StoreError:
        if _error_code(exc) in ("AccessDenied", "403"):
            # The job's credentials may not do this here: a role's policy (infra/policies)
            # keeps each job to its own prefixes.
            return StoreError(f"access denied: this job's credentials may not {op} {key!r} "
                              f"at {self.uri} ({exc})")
        return StoreError(f"cannot {op} {key!r} at {self.uri}: {exc}")

    def read_bytes(self, key: str) -> bytes:
        return self._get(key, self._key(key))

    def read_listed(self, key: str) -> bytes:
        return self._get(key, self._key(key, listed=True))

    def _get(self, key: str, full: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        # botocore retries a GET until its headers arrive, but not the reading of the
        # body after that: a connection dropped mid-body (or a body failing its
        # checksum) is retried here, with the same attempt budget and a short backoff.
        for attempt in range(1, self.max_attempts + 1):
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                    raise KeyError(key) from None
                raise self._fail("read", key, exc) from exc
            except BotoCoreError as exc:
                raise self._fail("read", key, exc) from exc
            try:
                return body.read()
            except BotoCoreError as exc:
                body.close()
                if attempt == self.max_attempts:
                    raise self._fail("read", key, exc) from exc
                log.warning("re-reading %r (attempt %d): %s", key, attempt + 1, exc)
                time.sleep(random.random() * min(0.05 * 2**attempt, 5.0))
        raise AssertionError("unreachable")

    def _put(self, key: str, data: bytes, **conditions: str) -> None:
        # The server checks the body against its SHA-256 and keeps it with the object
        # (``head_object(..., ChecksumMode="ENABLED")`` returns it).
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data,
                               ChecksumAlgorithm="SHA256", **conditions)

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._put(key, data)
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("write", key, exc) from exc

    def create_bytes(self, key: str, data: bytes) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._put(key, data, IfNoneMatch="*")
        except ClientError as exc:
            if _error_code(exc) in ("PreconditionFailed", "412"):
                return False
            raise self._fail("create", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("create", key, exc) from exc
        return True

    def exists(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise self._fail("check", key, exc) from exc
        except BotoCoreError as exc:
            raise self._fail("check", key, exc) from exc

    def _iter_keys(self, prefix: str) -> Iterator[str]:
        from botocore.exceptions import BotoCoreError, ClientError

        prefix = validate_key(prefix, allow_empty=True)
        full = "/".join(p for p in (self.prefix, prefix) if p)
        full = f"{full}/" if full else ""
        strip = len(f"{self.prefix}/") if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=full
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    yield obj["Key"][strip:]
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("list", prefix or "/", exc) from exc

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self._iter_keys(prefix))

    def delete(self, key: str) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._fail("delete", key, exc) from exc


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


class PrefixStore(Store):
    """A view of another store below a prefix."""

    def __init__(self, parent: Store, prefix: str) -> None:
        self.parent = parent
        self.prefix = prefix
        self.uri = f"{parent.uri.rstrip('/')}/{prefix}"

    def _k(self, key: str, listed: bool = False) -> str:
        return f"{self.prefix}/{validate_key(key, listed=listed)}"

    def read_bytes(self, key: str) -> bytes:
        return self.parent.read_bytes(self._k(key))

    def read_listed(self, key: str) -> bytes:
        return self.parent.read_listed(self._k(key, listed=True))

    def write_bytes(self, key: str, data: bytes) -> None:
        self.parent.write_bytes(self._k(key), data)

    def create_bytes(self, key: str, data: bytes) -> bool:
        return self.parent.create_bytes(self._k(key), data)

    def exists(self, key: str) -> bool:
        return self.parent.exists(self._k(key))

    def list(self, prefix: str = "") -> list[str]:
        prefix = validate_key(prefix, allow_empty=True)
        full = f"{self.prefix}/{prefix}" if prefix else self.prefix
        cut = len(self.prefix) + 1
        return [k[cut:] for k in self.parent.list(full)]

    def delete(self, key: str) -> None:
        self.parent.delete(self._k(key))

    def local_path(self, key: str, *, listed: bool = False) -> Path | None:
        return self.parent.local_path(self._k(key, listed), listed=listed)


def open_store(uri: str | os.PathLike[str] | None = None) -> Store:
    """A store for ``uri``: ``s3://bucket/prefix``, ``file://path`` or a folder path.

    With no URI, the settings' default (a folder under ``var/``).
    """
    from kzjobs.core.settings import get_settings

    if uri is None:
        uri = get_settings().store_uri
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        return S3Store(uri, max_attempts=get_settings().s3_max_attempts)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return LocalStore(uri)


def key_name(key: str) -> str:
    """The last part of a key (its 'file name')."""
    return PurePosixPath(key).name


def split_uri(uri: str) -> tuple[Store, str]:
    """A store and key for the object at ``uri`` (``s3://bucket/a/b.csv`` or a file path)."""
    uri = os.fspath(uri)
    if uri.startswith("s3://"):
        head, _, name = uri.rpartition("/")
        if head == "s3:/":  # s3://bucket with no key
            raise ValueError(f"no object key in {uri!r}")
        from kzjobs.core.settings import get_settings

        return S3Store(head, max_attempts=get_settings().s3_max_attempts), name
    path = Path(uri[len("file://") :] if uri.startswith("file://") else uri).expanduser()
    return LocalStore(path.parent), path.name


def read_uri(uri: str) -> bytes:
    """The bytes of one object named by a URI or a local path."""
    store, key = split_uri(uri)
    return store.read_bytes(key)
